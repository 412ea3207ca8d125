#!/usr/bin/env bash
# How stats and check scale with the number of indexed chunks: builds a repository holding
# about N chunks (a stream cut into ~256-byte chunks), then times `cairn stats --json` and
# `cairn check` (structure only) on it, best of 3.
#   bench/index-scale.sh [CHUNKS] [WORKDIR]       default 1000000 and a temporary directory
# Uses a release build; a benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
chunks=${1:-1000000}
work=${2:-$(mktemp -d)}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}"
# Timed as users run it: a release build (the tests' profile keeps overflow checks and
# debug assertions, which cost the delta code a fifth of its speed).
cargo build -q --release -p cairn-cli
cairn="$CARGO_TARGET_DIR/release/cairn"
export CAIRN_REPO="$work/repo" CAIRN_PASSWORD=bench
rm -rf "$CAIRN_REPO"
"$cairn" init -q --kdf-memory 8192 --kdf-iterations 1 --stream-chunks 64,256,1024
bytes=$((chunks * 256))
start=$(date +%s.%N)
head -c "$((bytes * 3 / 4))" /dev/urandom | base64 -w 100 | "$cairn" backup -q --stdin --stdin-name big --json > "$work/backup.json"
end=$(date +%s.%N)
blobs=$("$cairn" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["repository"]["blobs"])')
echo "indexed blobs: $blobs; backup of $((bytes >> 20)) MiB in $(echo "$end - $start" | bc) s"
best() {
  local best=999999
  for _ in 1 2 3; do
    local s e t
    s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc)
    if (( $(echo "$t < $best" | bc) )); then best=$t; fi
  done
  echo "$best"
}
echo "stats --json: $(best "$cairn" stats --json) s (best of 3)"
echo "check (structure): $(best "$cairn" check -q) s (best of 3)"
/usr/bin/time -f "stats peak RSS %M KB" "$cairn" stats --json > /dev/null
