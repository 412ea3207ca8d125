#!/usr/bin/env bash
# What a dump revision costs with delta runs, on a real MariaDB under a write load with
# scattered updates (sysbench oltp_write_only between mariadb-dump runs), and on the dumps of
# a corpus directory if one is given; against `zstd -19 --long=28 --patch-from` of the same
# pair (the floor), and against cairn without delta runs (`init --no-delta-runs`).
#
#   bench/delta.sh [--corpus DIR] [--tables N] [--rows N] [--events N] [--revisions N]
#                  [--level N] [--stream-chunks MIN,AVG,MAX] [--no-floor] [--keep-dumps DIR]
#
# Defaults: 4 tables of 200,000 rows (a ~160 MB dump), 3,000 write transactions between
# dumps, 3 revisions. Installs sysbench, mariadb-server and zstd from Debian when absent.
# A benchmark, not a test: it prints a table and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="" tables=4 rows=200000 events=3000 revisions=3 level="" chunks="" want_floor=1 keep=""
while [ $# -gt 0 ]; do
  case $1 in
    --corpus) corpus=$2; shift 2 ;;
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
need=()
command -v sysbench > /dev/null || need+=(sysbench)
command -v mariadbd > /dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
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
now() { date +%s.%N; }

# 1. Dumps of a real MariaDB between bursts of scattered writes.
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
  mariadb-dump --socket="$work/sock" -uroot --single-transaction sbtest > "$work/real/rev-$r.sql"
done

if [ -n "$keep" ]; then
  mkdir -p "$keep" && cp "$work"/real/*.sql "$keep"/
fi

# 2. Each set of dumps into two repositories: with delta runs and without.
measure() { # NAME DIR-OF-DUMPS
  local name=$1 dir=$2
  local dumps=("$dir"/*.sql)
  for mode in delta plain; do
    export CAIRN_REPO="$work/repo-$name-$mode" CAIRN_PASSWORD=bench
    local opts=(--kdf-memory 8192 --kdf-iterations 1)
    [ $mode = plain ] && opts+=(--no-delta-runs)
    [ $mode = delta ] && [ -n "$level" ] && opts+=(--delta-level "$level")
    [ -n "$chunks" ] && opts+=(--stream-chunks "$chunks")
    "$cairn" init -q "${opts[@]}"
    local i=0
    for d in "${dumps[@]}"; do
      local s e
      s=$(now)
      "$cairn" backup -q --stdin --stdin-name db.sql --service db --revision "r$i" --json \
        < "$d" > "$work/$name-$mode-$i.json"
      e=$(now)
      echo "$(echo "$e - $s" | bc)" > "$work/$name-$mode-$i.time"
      s=$(now)
      "$cairn" dump "db@r$i" db.sql | cmp -s - "$d" || { echo "$name r$i: restore differs" >&2; exit 1; }
      e=$(now)
      echo "$(echo "$e - $s" | bc)" > "$work/$name-$mode-$i.rtime"
      i=$((i + 1))
    done
  done
  printf '\n%s (%d dumps)\n' "$name" "${#dumps[@]}"
  printf '%-4s %9s %12s %12s %12s %7s %9s %9s %9s %9s\n' rev "dump MB" "no deltas" "deltas" \
    "patch-from" "ratio" "backup s" "(plain)" "restore s" "(plain)"
  local prev="" i=0
  for d in "${dumps[@]}"; do
    local added plain floor="-" ratio="-"
    added=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["added_bytes"])' "$work/$name-delta-$i.json")
    plain=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["added_bytes"])' "$work/$name-plain-$i.json")
    if [ -n "$prev" ] && [ "$want_floor" = 1 ]; then
      zstd -q -19 --long=28 --patch-from="$prev" "$d" -o "$work/patch.zst" -f 2> /dev/null
      floor=$(stat -c %s "$work/patch.zst")
      ratio=$(echo "scale=2; $added / $floor" | bc)
    fi
    printf '%-4s %9.1f %12d %12d %12s %7s %9.2f %9.2f %9.2f %9.2f\n' "r$i" \
      "$(echo "$(stat -c %s "$d") / 1000000" | bc -l)" "$plain" "$added" "$floor" "$ratio" \
      "$(cat "$work/$name-delta-$i.time")" "$(cat "$work/$name-plain-$i.time")" \
      "$(cat "$work/$name-delta-$i.rtime")" "$(cat "$work/$name-plain-$i.rtime")"
    prev=$d
    i=$((i + 1))
  done
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "bytes are what each revision added to the repository (packs, sealed); patch-from is the floor"
measure "mariadb-sysbench-$tables-x-$rows-$events-events" "$work/real"
if [ -n "$corpus" ]; then
  measure "corpus-$(basename "$corpus")" "$corpus/db"
fi
