#!/usr/bin/env python3
"""Changes a tree the way two backups an hour apart see it, for the benchmark's
"second backup after changes" rows: about FRACTION of the regular files are
touched (appended to, deleted, or joined by a new file beside them), and one
directory is renamed. Deterministic for a given tree and seed.

    bench_change.py DIR [--fraction 0.02] [--seed 1]

Prints what it did as one JSON line.
"""

import argparse
import json
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--fraction", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    files, dirs = [], []
    for parent, dnames, fnames in os.walk(args.dir):
        dnames.sort()
        for d in dnames:
            dirs.append(os.path.join(parent, d))
        for f in sorted(fnames):
            p = os.path.join(parent, f)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
    rng = random.Random(args.seed)
    n = max(4, int(len(files) * args.fraction))
    chosen = rng.sample(files, min(n, len(files)))
    done = {"appended": 0, "deleted": 0, "new": 0, "renamed_dir": None, "renamed_files": 0}
    line = b"".join(b"changed line %d of the benchmark\n" % i for i in range(128))
    for i, p in enumerate(chosen):
        kind = i % 10
        if kind < 4:  # 40%: appends
            with open(p, "ab") as f:
                f.write(line)
            done["appended"] += 1
        elif kind < 6:  # 20%: deletions
            os.remove(p)
            done["deleted"] += 1
        else:  # 40%: a new file beside it
            with open(p + ".new", "wb") as f:
                f.write(line * 4)
            done["new"] += 1
    # One directory renamed: a small one without subdirectories (at most 0.5%
    # of the files), so the
    # rename stays within the budget of changed files.
    limit = max(2, len(files) // 200)
    counts = {d: 0 for d in dirs}
    for p in files:
        parent = os.path.dirname(p)
        if parent in counts:
            counts[parent] += 1
    has_subdirs = {os.path.dirname(d) for d in dirs}
    candidates = [d for d in dirs
                  if 2 <= counts[d] <= limit and d not in has_subdirs and os.path.isdir(d)]
    if candidates:
        d = rng.choice(candidates)
        os.rename(d, d + "-renamed")
        done["renamed_dir"] = os.path.relpath(d, args.dir)
        done["renamed_files"] = counts[d]
    done["files_before"] = len(files)
    print(json.dumps(done))


if __name__ == "__main__":
    main()
