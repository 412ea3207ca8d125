#!/usr/bin/env python3
"""cairn against restic and borg on one corpus, side by side (run through bench/compare.sh).

    compare.py --cairn BIN --corpus DIR --work DIR [--rounds N] [--tools cairn,restic,borg]

The corpus is the layout `make_corpus.py` writes: `site/rev-XX/` (a service's `sites/` tree)
and `db/rev-XX.sql` (its dump), XX = 00, 01, ... Each round gives every tool a fresh,
encrypted repository and takes the revisions in order, as an operator's pre-upgrade
snapshots would come: the tree is copied into one staging directory with `rsync -a
--delete` (so unchanged files keep their inode and times, and each tool's file cache
works), then every tool backs the tree up, then every tool backs the dump up from stdin.
After the last revision every tool restores the last tree and the last dump, then reads
and verifies all its data. The tools take turns step by step, in an order that rotates
with the round, so a machine that drifts moves all of them.

Printed: MB/s per step (input bytes / wall time; "next" steps are the median over
revisions 1..N-1 and rounds), repository size after all revisions (the repository's files,
without local caches: cairn's `index/`, restic's and borg's caches), peak RSS of any step,
and cairn's ratio to each other tool. Medians over rounds.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

PASSWORD = "bench"


def file_bytes(path):
    """Bytes of the regular files below `path`."""
    n = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                n += os.path.getsize(p)
    return n


def run(argv, env, cwd=None, stdin=None, stdout=None):
    """Runs argv; returns (wall s, peak RSS MB)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin,
                         stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        sys.exit(f"compare: {' '.join(argv)} failed (status {status}):\n"
                 f"{err.decode(errors='replace')[-2000:]}")
    return wall, ru.ru_maxrss / 1024


class Tool:
    """One tool's commands, over a repository under `base`."""

    def __init__(self, name, base, cairn):
        self.name, self.base, self.cairn = name, base, cairn
        self.repo = os.path.join(base, "repo")
        env = dict(os.environ)
        if name == "cairn":
            env.update(CAIRN_REPO=self.repo, CAIRN_PASSWORD=PASSWORD)
        elif name == "restic":
            env.update(RESTIC_REPOSITORY=self.repo, RESTIC_PASSWORD=PASSWORD,
                       RESTIC_CACHE_DIR=os.path.join(base, "cache"))
        elif name == "borg":
            env.update(BORG_REPO=self.repo, BORG_PASSPHRASE=PASSWORD,
                       BORG_BASE_DIR=os.path.join(base, "home"))
        self.env = env

    def init(self):
        shutil.rmtree(self.base, ignore_errors=True)
        os.makedirs(self.base)
        if self.name == "cairn":
            argv = [self.cairn, "init", "-q"]
        elif self.name == "restic":
            argv = ["restic", "init", "-q"]
        else:
            argv = ["borg", "init", "-e", "repokey-blake2"]
        run(argv, self.env)

    def backup_tree(self, stage, rev):
        if self.name == "cairn":
            argv = [self.cairn, "backup", "-q", stage, "--service", "site", "--revision", rev]
        elif self.name == "restic":
            argv = ["restic", "backup", "-q", "--host", "bench", "--tag", "site", stage]
        else:
            argv = ["borg", "create", "--compression", "zstd,3", f"::site-{rev}", stage]
        return run(argv, self.env)

    def backup_dump(self, dump, rev):
        if self.name == "cairn":
            argv = [self.cairn, "backup", "-q", "--stdin", "--stdin-name", "db.sql",
                    "--service", "db", "--revision", rev]
        elif self.name == "restic":
            argv = ["restic", "backup", "-q", "--host", "bench", "--tag", "db", "--stdin",
                    "--stdin-filename", "db.sql"]
        else:
            argv = ["borg", "create", "--compression", "zstd,3", "--stdin-name", "db.sql",
                    f"::db-{rev}", "-"]
        with open(dump, "rb") as f:
            return run(argv, self.env, stdin=f)

    def restore_tree(self, rev, target):
        os.makedirs(target)
        if self.name == "cairn":
            return run([self.cairn, "restore", "-q", f"site@{rev}", "--target", target],
                       self.env)
        if self.name == "restic":
            return run(["restic", "restore", "-q", "latest", "--host", "bench", "--tag",
                        "site", "--target", target], self.env)
        return run(["borg", "extract", f"::site-{rev}"], self.env, cwd=target)

    def restore_dump(self, rev, target):
        os.makedirs(target)
        with open(os.path.join(target, "db.sql"), "wb") as out:
            if self.name == "cairn":
                argv = [self.cairn, "dump", f"db@{rev}", "db.sql"]
            elif self.name == "restic":
                argv = ["restic", "dump", "-q", "--host", "bench", "--tag", "db", "latest",
                        "db.sql"]
            else:
                argv = ["borg", "extract", "--stdout", f"::db-{rev}"]
            return run(argv, self.env, stdout=out)

    def check(self):
        if self.name == "cairn":
            argv = [self.cairn, "check", "--read-data"]
        elif self.name == "restic":
            argv = ["restic", "check", "-q", "--read-data"]
        else:
            argv = ["borg", "check", "--verify-data"]
        return run(argv, self.env)


def same_tree(a, b):
    """Whether two trees hold the same files with the same bytes (names and contents)."""
    r = subprocess.run(["diff", "-r", "-q", "--no-dereference", a, b],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return r.returncode == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tools", default="cairn,restic,borg")
    a = ap.parse_args()
    sites = sorted(os.listdir(os.path.join(a.corpus, "site")))
    revs = [s for s in sites if s.startswith("rev-")]
    dumps = [os.path.join(a.corpus, "db", f"{r}.sql") for r in revs]
    if len(revs) < 2 or not all(os.path.exists(d) for d in dumps):
        sys.exit(f"compare: {a.corpus} needs site/rev-XX/ and db/rev-XX.sql, two or more")
    names = a.tools.split(",")
    stage = os.path.join(a.work, "stage", "sites")
    # samples[tool][step] = list of (MB/s, RSS); size[tool] = list of bytes
    samples = {t: {} for t in names}
    size = {t: [] for t in names}
    tbytes = [file_bytes(os.path.join(a.corpus, "site", r)) for r in revs]
    dbytes = [os.path.getsize(d) for d in dumps]

    def note(tool, step, nbytes, res):
        wall, rss = res
        samples[tool].setdefault(step, []).append((nbytes / 1e6 / wall, rss, wall))

    for rnd in range(a.rounds):
        k = rnd % len(names)
        order = names[k:] + names[:k]
        tools = {t: Tool(t, os.path.join(a.work, t), a.cairn) for t in names}
        for t in order:
            tools[t].init()
        shutil.rmtree(os.path.join(a.work, "stage"), ignore_errors=True)
        os.makedirs(stage)
        for i, rev in enumerate(revs):
            label = f"r{i}"
            subprocess.run(["rsync", "-a", "--delete",
                            os.path.join(a.corpus, "site", rev) + "/", stage + "/"], check=True)
            kind = "first" if i == 0 else "next"
            for t in order:
                note(t, f"{kind} backup, tree", tbytes[i], tools[t].backup_tree(stage, label))
            for t in order:
                note(t, f"{kind} backup, dump", dbytes[i], tools[t].backup_dump(dumps[i], label))
        last = f"r{len(revs) - 1}"
        for t in order:
            # The repository's own files: cairn's index (`index/`, a local cache that
            # `index rebuild` makes again from the packs) is left out, as restic's and borg's
            # caches are (they live outside their repositories).
            cache = os.path.join(tools[t].repo, "index") if t == "cairn" else None
            size[t].append(file_bytes(tools[t].repo) - (file_bytes(cache) if cache else 0))
        for t in order:
            target = os.path.join(a.work, "restore", t)
            shutil.rmtree(os.path.join(a.work, "restore"), ignore_errors=True)
            note(t, "restore tree", tbytes[-1], tools[t].restore_tree(last, target))
            # The restored tree is the last revision (checked in the first round).
            if rnd == 0:
                found = [os.path.join(dp, d) for dp, ds, _ in os.walk(target) for d in ds
                         if d == "sites"]
                if not found or not same_tree(found[0], stage):
                    sys.exit(f"compare: {t} restored a tree that differs from the last revision")
            shutil.rmtree(target)
            note(t, "restore dump", dbytes[-1], tools[t].restore_dump(last, target))
            if rnd == 0 and not filecmp_same(os.path.join(target, "db.sql"), dumps[-1]):
                sys.exit(f"compare: {t} restored a dump that differs from the last revision")
            shutil.rmtree(os.path.join(a.work, "restore"))
        for t in order:
            note(t, "check, all data", size[t][-1], tools[t].check())
        for t in order:
            shutil.rmtree(tools[t].base, ignore_errors=True)

    steps = list(samples[names[0]].keys())
    med = statistics.median
    print(f"\n{a.corpus}: {len(revs)} revisions, tree {tbytes[0] / 1e6:.0f}-{tbytes[-1] / 1e6:.0f} MB, "
          f"dump {dbytes[0] / 1e6:.0f}-{dbytes[-1] / 1e6:.0f} MB; {a.rounds} rounds; medians")
    print("MB/s: input bytes / wall time (check: repository bytes / wall time); "
          "ratio: cairn's MB/s / the other's")
    others = [t for t in names if t != "cairn"]
    head = f"| step | {' | '.join(names)} | " + " | ".join(f"cairn / {o}" for o in others) + " |"
    print(head)
    print("|" + " --- |" * (1 + len(names) + len(others)))
    for s in steps:
        v = {t: med([x[0] for x in samples[t][s]]) for t in names}
        cells = " | ".join(f"{v[t]:.0f}" for t in names)
        ratios = " | ".join(f"{v['cairn'] / v[o]:.2f}" for o in others) if "cairn" in names else ""
        print(f"| {s} (MB/s) | {cells} | {ratios} |")
    total_in = sum(tbytes) + sum(dbytes)
    v = {t: med(size[t]) for t in names}
    cells = " | ".join(f"{v[t] / 1e6:.0f} MB" for t in names)
    ratios = " | ".join(f"{v['cairn'] / v[o]:.2f}" for o in others) if "cairn" in names else ""
    print(f"| repository after {len(revs)} revisions ({total_in / 1e6:,.0f} MB in) | {cells} | {ratios} |")
    v = {t: max(x[1] for s in steps for x in samples[t][s]) for t in names}
    cells = " | ".join(f"{v[t]:.0f} MB" for t in names)
    ratios = " | ".join(f"{v['cairn'] / v[o]:.2f}" for o in others) if "cairn" in names else ""
    print(f"| peak RSS, any step | {cells} | {ratios} |")
    print("\nPeak RSS by step (MB, max over rounds):")
    for s in steps:
        print(f"  {s:22} " + "  ".join(f"{t} {max(x[1] for x in samples[t][s]):.0f}" for t in names))


def filecmp_same(a, b):
    import filecmp
    return filecmp.cmp(a, b, shallow=False)


if __name__ == "__main__":
    main()
