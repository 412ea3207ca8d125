#!/usr/bin/env bash
# How backup, check and prune scale with the chunks a repository already holds (see
# bench/index_scale.py): repositories filled with about 0, 1 million and 10 million chunks,
# then the same new tree backed up into each, round by round.
#   bench/index-scale.sh [--chunks 0,1000000,10000000] [--tree DIR] [--rounds 3] [--work DIR]
# --work keeps the filled repositories for the next run (filling 10 million chunks takes
# minutes); without it a temporary directory is used and removed. Needs ~6 GB there for
# 10 million. Uses a release build; a benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@") work=""
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --work ]]; then work=${args[i + 1]:-}; fi
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}"
# Timed as users run it: a release build.
cargo build -q --release -p cairn-cli
cairn="$CARGO_TARGET_DIR/release/cairn"
if [[ -z $work ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  args+=(--work "$work")
fi
python3 bench/index_scale.py --cairn "$cairn" "${args[@]}"
