#!/usr/bin/env python3
"""How backup, check and prune scale with the number of chunks a repository already holds.

For each size N (`--chunks 0,1000000,10000000`), a repository is filled with about N chunks:
a stream of random base64 cut into ~256-byte chunks (`init --stream-chunks 64,256,1024`; a
tree keeps the default chunk sizes). Then, round by round, one tree with new contents (the
`--tree` directory with every byte XOR'd by the round number, so no chunk of it is stored
anywhere yet) is backed up into every repository in turn (the first in turn rotating).
Then each repository is checked (structure), and the rounds' snapshots are forgotten and
pruned. Printed: the median backup MB/s, its ratio to the smallest repository's, `check` and
`prune` seconds, and peak RSS.

Without `--tree`, a tree of 160 MB (400 files: text and random bytes) is generated.
Called by bench/index-scale.sh, which builds cairn first.
"""

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time


def run(cmd, env, stdin=None, out=subprocess.DEVNULL):
    """Runs a command; returns (seconds, peak RSS MB, stdout bytes)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=stdin, stdout=subprocess.PIPE)
    data = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    took = time.perf_counter() - t
    if status != 0:
        sys.exit(f"index-scale: {' '.join(cmd)} failed ({status})")
    return took, ru.ru_maxrss / 1024, data


def generate_tree(d):
    rnd = random.Random(7)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(2000)]
    os.makedirs(d)
    for i in range(400):
        sub = os.path.join(d, f"d{i % 20:02}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:03}"), "wb") as f:
            if i % 2:
                f.write(rnd.randbytes(400_000))
            else:
                f.write(b" ".join(rnd.choice(words) for _ in range(70_000))[:400_000])


def xor_copy(src, dst, k):
    table = bytes(b ^ k for b in range(256))
    shutil.rmtree(dst, ignore_errors=True)
    total = 0
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                data = f.read().translate(table)
            with open(os.path.join(dst, rel, name), "wb") as f:
                f.write(data)
            total += len(data)
    return total


def fill(cairn, env, chunks):
    """Backs up streams of about `chunks` ~256-byte chunks in all, a million a snapshot (a
    file's list of chunks is stored in one tree blob, which has a size limit)."""
    t = time.perf_counter()
    done = 0
    while done < chunks:
        n = min(chunks - done, 1_000_000)
        p = subprocess.Popen([cairn, "backup", "-q", "--stdin", "--stdin-name", f"fill-{done}"],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        left = n * 256
        while left > 0:
            k = min(left, 1 << 22)
            p.stdin.write(base64.encodebytes(os.urandom(k * 3 // 4)))
            left -= k
        p.stdin.close()
        if p.wait() != 0:
            sys.exit("index-scale: filling failed")
        done += n
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--chunks", default="0,1000000,10000000")
    ap.add_argument("--tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    sizes = [int(s) for s in a.chunks.split(",")]
    os.makedirs(a.work, exist_ok=True)
    tree = a.tree
    if not tree:
        tree = os.path.join(a.work, "generated")
        if not os.path.isdir(tree):
            generate_tree(tree)
    base = dict(os.environ, CAIRN_PASSWORD="bench")
    envs, blobs = {}, {}
    for n in sizes:
        repo = os.path.join(a.work, f"repo-{n}")
        env = dict(base, CAIRN_REPO=repo)
        envs[n] = env
        if not os.path.exists(repo + ".filled"):
            shutil.rmtree(repo, ignore_errors=True)
            run([a.cairn, "init", "-q", "--kdf-memory", "8192", "--kdf-iterations", "1",
                 "--stream-chunks", "64,256,1024"], env)
            took = fill(a.cairn, env, n)
            print(f"filled {repo} with ~{n} chunks in {took:.0f} s", flush=True)
            open(repo + ".filled", "w").close()
        _, _, out = run([a.cairn, "stats", "--json"], env, out=subprocess.PIPE)
        blobs[n] = json.loads(out)["repository"]["blobs"]
    res = {n: [] for n in sizes}
    snaps = {n: [] for n in sizes}
    staged = os.path.join(a.work, "tree")
    for r in range(a.rounds):
        nbytes = xor_copy(tree, staged, r + 1)
        k = r % len(sizes)
        for n in sizes[k:] + sizes[:k]:
            env = envs[n]
            subprocess.run(["sync"])
            # --force: a first backup each time, not delta runs against the last round.
            t, rss, out = run([a.cairn, "backup", "-q", "--force", staged, "--json"], env)
            snaps[n].append(json.loads(out)["id"])
            res[n].append((nbytes / t / 1e6, rss))
            print(f"round {r + 1}: {n} chunks: backup {nbytes / t / 1e6:.0f} MB/s", flush=True)
    # Once per repository: a structure check, and a prune that deletes what the rounds added.
    costs = {}
    for n in sizes:
        env = envs[n]
        tc, _, _ = run([a.cairn, "check", "-q"], env)
        run([a.cairn, "forget", "-q"] + snaps[n], env)
        tp, prss, _ = run([a.cairn, "prune", "-q"], env)
        costs[n] = (tc, tp, prss)
        print(f"{n} chunks: check {tc:.2f} s, prune {tp:.2f} s", flush=True)
    first = statistics.median(x[0] for x in res[sizes[0]])
    print()
    print("| chunks indexed | backup MB/s (median) | vs smallest | backup peak RSS MB "
          "| check s | prune s | prune peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        mb = statistics.median(x[0] for x in res[n])
        rss = max(x[1] for x in res[n])
        tc, tp, prss = costs[n]
        print(f"| {blobs[n]:,} | {mb:.0f} | {mb / first:.2f} | {rss:.0f} | {tc:.2f} | {tp:.2f} "
              f"| {prss:.0f} |")


if __name__ == "__main__":
    main()
