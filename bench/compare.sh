#!/usr/bin/env bash
# cairn against restic and borg (zstd,3) on a corpus, side by side: first and next-revision
# backups of a service's tree and of its dump, repository size, restores, a full data check
# and peak memory, as one table of medians with cairn's ratio to each (bench/compare.py).
#
#   bench/compare.sh CORPUS_DIR [--rounds N] [--tools cairn,restic,borg]
#
# CORPUS_DIR holds site/rev-XX/ and db/rev-XX.sql (the layout of make_corpus.py, e.g.
# `make_corpus.py DIR --scale 1 --revisions 5 --seed 1`). Installs restic, borgbackup and
# rsync from Debian when absent. Default 3 rounds. A benchmark, not a test: prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
corpus=$(realpath "$1"); shift
if [ ! -d "$corpus/site" ] || ! compgen -G "$corpus/db/*.sql" > /dev/null; then
  echo "bench/compare.sh: $corpus has no site/ and db/*.sql (the layout make_corpus.py writes)" >&2
  exit 2
fi
need=()
command -v restic > /dev/null || need+=(restic)
command -v borg > /dev/null || need+=(borgbackup)
command -v rsync > /dev/null || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -q "${need[@]}" > /dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}"
cargo build -q --release -p cairn-cli
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(free -g | awk '/Mem:/ {print $2}') GiB; restic $(restic version | cut -d' ' -f2)," \
  "borg $(borg --version | cut -d' ' -f2); cairn $(git rev-parse --short HEAD)"
python3 bench/compare.py --cairn "$CARGO_TARGET_DIR/release/cairn" --corpus "$corpus" \
  --work "$work" "$@"
