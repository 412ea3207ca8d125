#!/usr/bin/env python3
"""Measures one set of dumps for bench/delta.sh: stored bytes, backup, restore and read times,
cairn with delta runs against cairn without (`init --no-delta-runs`), interleaved.

    delta_measure.py --cairn BIN --work DIR --name NAME --dumps DIR [--rounds N] [--no-floor]
                     [--init-opt OPT]... [--delta-opt OPT]...

Each round makes a fresh pair of repositories (a fresh chunking key: where runs start, and so
what they cost, differs from key to key) and backs every dump up into both, the two modes
taking turns revision by revision. Then every revision is restored from each round's pair,
again taking turns: `restore --target` (what an operator runs: the file written and synced)
and `dump > /dev/null` (the read side alone). Times are medians over the rounds; a ratio is
the median of each round's paired ratio, so a machine that drifts between rounds moves both
sides of it. Every revision dumped and restored is compared with its dump byte for byte
(first round).
"""
import argparse
import filecmp
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def timed(argv, env, stdin=None, stdout=subprocess.DEVNULL):
    """Runs argv; returns (wall ms, cpu ms, peak RSS MB, stdout text or None)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout)
    out = p.stdout.read() if stdout == subprocess.PIPE else None
    _, status, ru = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - t) * 1000
    if status != 0:
        sys.exit(f"delta_measure: {' '.join(argv)} failed (status {status})")
    return wall, (ru.ru_utime + ru.ru_stime) * 1000, ru.ru_maxrss / 1024, out


FLOORS = os.path.expanduser("~/.cache/cairn-bench/floors.json")


def patch_from(prev, d, work):
    """Bytes of `zstd -19 --long=28 --patch-from=prev d`: minutes for a large dump, so kept
    in ~/.cache/cairn-bench by both files' paths, sizes and times."""
    key = "|".join(f"{os.path.realpath(p)}:{os.path.getsize(p)}:{os.path.getmtime(p)}"
                   for p in (prev, d))
    try:
        with open(FLOORS) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    if key not in known:
        patch = os.path.join(work, "patch.zst")
        subprocess.run(["zstd", "-q", "-f", "-19", "--long=28", f"--patch-from={prev}", d,
                        "-o", patch], check=True, stderr=subprocess.DEVNULL)
        known[key] = os.path.getsize(patch)
        os.remove(patch)
        os.makedirs(os.path.dirname(FLOORS), exist_ok=True)
        with open(FLOORS, "w") as f:
            json.dump(known, f)
    return known[key]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--dumps", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--init-opt", action="append", default=[], help="init option, both modes")
    ap.add_argument("--delta-opt", action="append", default=[], help="init option, delta only")
    a = ap.parse_args()
    dumps = sorted(glob.glob(os.path.join(a.dumps, "*.sql")))
    if len(dumps) < 2:
        sys.exit(f"delta_measure: fewer than two dumps in {a.dumps}")
    modes = ("delta", "plain")
    base_env = dict(os.environ, CAIRN_PASSWORD="bench")
    env = {}
    added = {m: [[] for _ in dumps] for m in modes}
    backup = {m: [[] for _ in dumps] for m in modes}
    for r in range(a.rounds):
        for m in modes:
            repo = os.path.join(a.work, f"{a.name}-{r}-{m}")
            shutil.rmtree(repo, ignore_errors=True)
            env[(r, m)] = dict(base_env, CAIRN_REPO=repo)
            opts = ["--kdf-memory", "8192", "--kdf-iterations", "1"] + a.init_opt
            opts += ["--no-delta-runs"] if m == "plain" else a.delta_opt
            subprocess.run([a.cairn, "init", "-q"] + opts, env=env[(r, m)], check=True)
        for i, d in enumerate(dumps):
            # Turns alternate from revision to revision: neither mode always goes first.
            for m in modes if (r + i) % 2 == 0 else modes[::-1]:
                with open(d, "rb") as f:
                    wall, cpu, rss, out = timed(
                        [a.cairn, "backup", "-q", "--stdin", "--stdin-name", "db.sql",
                         "--service", "db", "--revision", f"r{i}", "--json"],
                        env[(r, m)], stdin=f, stdout=subprocess.PIPE)
                added[m][i].append(json.loads(out)["summary"]["added_bytes"])
                backup[m][i].append((wall, cpu, rss))
    check = os.path.join(a.work, "check.sql")
    for i, d in enumerate(dumps):
        for m in modes:
            with open(check, "wb") as f:
                timed([a.cairn, "dump", f"db@r{i}", "db.sql"], env[(0, m)], stdout=f)
            if not filecmp.cmp(check, d, shallow=False):
                sys.exit(f"delta_measure: {a.name} r{i} ({m}) does not restore to its dump")
    os.remove(check)
    restore = {m: [[] for _ in dumps] for m in modes}
    read = {m: [[] for _ in dumps] for m in modes}
    target = os.path.join(a.work, "restore")
    for r in range(a.rounds):
        for i in range(len(dumps)):
            for m in modes if (r + i) % 2 == 0 else modes[::-1]:
                shutil.rmtree(target, ignore_errors=True)
                restore[m][i].append(timed(
                    [a.cairn, "restore", "-q", f"db@r{i}", "--target", target], env[(r, m)])[:3])
                if r == 0 and not filecmp.cmp(os.path.join(target, "db.sql"), dumps[i],
                                              shallow=False):
                    sys.exit(f"delta_measure: {a.name} r{i} ({m}) restores different bytes")
                read[m][i].append(timed(
                    [a.cairn, "dump", f"db@r{i}", "db.sql"], env[(r, m)])[:3])
    shutil.rmtree(target, ignore_errors=True)

    def ratio(t, i):
        return med([d[0] / p[0] for d, p in zip(t["delta"][i], t["plain"][i])])

    print(f"\n{a.name}: {len(dumps)} dumps, {a.rounds} rounds (a fresh pair of repositories each)")
    print("stored: bytes a revision added (median; range over rounds); floor: zstd -19 "
          "--long=28 --patch-from of the same pair")
    print("times: medians, ms; ratio: delta / plain, the median of the rounds' paired ratios")
    print("restore: `restore --target` (file written, synced); read: `dump > /dev/null`")
    head = (f"{'rev':4} {'dump MB':>8} {'no deltas':>10} {'deltas':>10} {'(range)':>19} "
            f"{'floor':>9} {'/floor':>6} | {'backup':>6} {'plain':>6} {'ratio':>5} | "
            f"{'restore':>7} {'plain':>6} {'ratio':>5} | {'read':>5} {'plain':>6} {'ratio':>5} | "
            f"{'RSS MB':>8}")
    print(head)
    prev = None
    for i, d in enumerate(dumps):
        floor, over = "-", "-"
        if prev is not None and not a.no_floor:
            floor = patch_from(prev, d, a.work)
            over = f"{med(added['delta'][i]) / floor:.2f}"
        prev = d
        rng = f"{min(added['delta'][i])}-{max(added['delta'][i])}"
        rss = f"{med([x[2] for x in restore['delta'][i]]):.0f}/{med([x[2] for x in restore['plain'][i]]):.0f}"
        print(f"r{i:<3} {os.path.getsize(d) / 1e6:8.1f} {med(added['plain'][i]):10.0f} "
              f"{med(added['delta'][i]):10.0f} {rng:>19} {floor:>9} {over:>6} | "
              f"{med([x[0] for x in backup['delta'][i]]):6.0f} "
              f"{med([x[0] for x in backup['plain'][i]]):6.0f} {ratio(backup, i):5.2f} | "
              f"{med([x[0] for x in restore['delta'][i]]):7.0f} "
              f"{med([x[0] for x in restore['plain'][i]]):6.0f} {ratio(restore, i):5.2f} | "
              f"{med([x[0] for x in read['delta'][i]]):5.0f} "
              f"{med([x[0] for x in read['plain'][i]]):6.0f} {ratio(read, i):5.2f} | {rss:>8}")
    for r in range(a.rounds):
        for m in modes:
            shutil.rmtree(env[(r, m)]["CAIRN_REPO"], ignore_errors=True)


if __name__ == "__main__":
    main()
