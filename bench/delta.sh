#!/usr/bin/env bash
# What a dump revision costs with delta runs, on a real MariaDB under a write load with
# scattered updates (sysbench oltp_write_only between mariadb-dump runs), and on the dumps of
# a corpus directory if one is given; against `zstd -19 --long=28 --patch-from` of the same
# pair (the floor), and against cairn without delta runs (`init --no-delta-runs`).
#
#   bench/delta.sh [--corpus DIR] [--real DIR] [--rounds N] [--tables N] [--rows N]
#                  [--events N] [--revisions N] [--level N] [--stream-chunks MIN,AVG,MAX]
#                  [--no-floor] [--keep-dumps DIR]
#
# Defaults: 4 tables of 200,000 rows (a ~160 MB dump), 3,000 write transactions between
# dumps, 3 revisions, 5 rounds. `--keep-dumps DIR` keeps the MariaDB dumps; `--real DIR`
# measures dumps kept so (any directory of *.sql, in name order) instead of making new ones.
# Each round backs every dump up into a fresh pair of repositories, with delta runs and
# without, taking turns; then restores every revision from each pair. It prints, per
# revision: bytes stored against the floor, and backup, restore (`restore --target`: the
# file written and synced) and read (`dump > /dev/null`) times with their delta / plain
# ratios. Installs sysbench, mariadb-server and zstd from Debian when absent.
# A benchmark, not a test: it prints tables and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="" real="" rounds=5 tables=4 rows=200000 events=3000 revisions=3 level="" chunks=""
want_floor=1 keep=""
while [ $# -gt 0 ]; do
  case $1 in
    --corpus) corpus=$2; shift 2 ;;
    --real) real=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --tables) tables=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    --revisions) revisions=$2; shift 2 ;;
    --level) level=$2; shift 2 ;;
    --stream-chunks) chunks=$2; shift 2 ;;
    --no-floor) want_floor=0; shift ;;
    --keep-dumps) keep=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
# Checked before the 20 minutes of MariaDB work, not after.
if [ -n "$corpus" ] && ! compgen -G "$corpus/db/*.sql" > /dev/null; then
  echo "bench/delta.sh: no dumps in $corpus/db/ (--corpus takes the directory" \
    "make_corpus.py wrote, the one holding db/)" >&2
  exit 2
fi
if [ -n "$real" ] && ! compgen -G "$real/*.sql" > /dev/null; then
  echo "bench/delta.sh: no dumps (*.sql) in $real" >&2
  exit 2
fi
need=()
if [ -z "$real" ]; then
  command -v sysbench > /dev/null || need+=(sysbench)
  command -v mariadbd > /dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
fi
command -v zstd > /dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -q "${need[@]}" > /dev/null
fi
export PATH="$PATH:/usr/sbin"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}"
# Timed as users run it: a release build (the tests' profile keeps overflow checks and
# debug assertions, which cost the delta code a fifth of its speed).
cargo build -q --release -p cairn-cli
cairn="$CARGO_TARGET_DIR/release/cairn"
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2> /dev/null && wait "$server" 2> /dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# 1. Dumps of a real MariaDB between bursts of scattered writes (unless --real gave some).
if [ -z "$real" ]; then
  user=$(id -un)
  mariadb-install-db --datadir="$work/data" --user="$user" --auth-root-authentication-method=normal \
    --skip-test-db > "$work/install.log" 2>&1
  mariadbd --no-defaults --datadir="$work/data" --socket="$work/sock" --pid-file="$work/pid" \
    --skip-networking --innodb-buffer-pool-size=256M --user="$user" > /dev/null 2> "$work/server.log" &
  server=$!
  for _ in $(seq 600); do
    mariadb-admin --socket="$work/sock" -uroot ping > /dev/null 2>&1 && break
    sleep 0.1
  done
  mariadb --socket="$work/sock" -uroot -e "CREATE DATABASE sbtest"
  sb=(sysbench oltp_write_only --db-driver=mysql --mysql-socket="$work/sock" --mysql-user=root
    --mysql-db=sbtest --tables="$tables" --table-size="$rows")
  # The same tables every time; the write bursts differ (one seed for all would repeat them).
  "${sb[@]}" --rand-seed=1 prepare > /dev/null
  mkdir -p "$work/real"
  for r in $(seq 0 $((revisions - 1))); do
    if [ "$r" -gt 0 ]; then
      "${sb[@]}" --threads=2 --time=0 --events="$events" --rand-type=uniform run > /dev/null
    fi
    # Numbered to sort by name (rev-10 after rev-09): the chain is taken in name order.
    mariadb-dump --socket="$work/sock" -uroot --single-transaction sbtest \
      > "$work/real/rev-$(printf %02d "$r").sql"
  done

  if [ -n "$keep" ]; then
    mkdir -p "$keep" && cp "$work"/real/*.sql "$keep"/
  fi
fi

# 2. Each set of dumps into pairs of repositories, with delta runs and without, measured
# side by side (bench/delta_measure.py).
measure() { # NAME DIR-OF-DUMPS
  local opts=()
  [ -n "$level" ] && opts+=(--delta-opt=--delta-level --delta-opt="$level")
  [ -n "$chunks" ] && opts+=(--init-opt=--stream-chunks --init-opt="$chunks")
  [ "$want_floor" = 0 ] && opts+=(--no-floor)
  python3 bench/delta_measure.py --cairn "$cairn" --work "$work" --name "$1" --dumps "$2" \
    --rounds "$rounds" "${opts[@]}"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if [ -n "$real" ]; then
  measure "mariadb-$(basename "$real")" "$real"
else
  measure "mariadb-sysbench-$tables-x-$rows-$events-events" "$work/real"
fi
if [ -n "$corpus" ]; then
  measure "corpus-$(basename "$corpus")" "$corpus/db"
fi
