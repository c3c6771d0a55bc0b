#!/usr/bin/env bash
# Fills a seed directory (argument 1) with real .tar.gz archives: GNU tar in
# every format it writes, Python's tarfile in its three formats, Go's
# archive/tar test data (from the Go toolchain, gzipped), and the engine's
# own format (fuzz/examples/make_seeds.rs, built with cargo given as $CARGO).
# Tools that are missing are skipped with a note.
set -euo pipefail
out=$1
CARGO=${CARGO:-cargo}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A small server tree with what archives disagree about.
tree=$work/tree
mkdir -p "$tree/world/region" "$tree/empty" "$tree/$(printf 'd%.0s' {1..120})"
printf 'motd=hello\n' >"$tree/server.properties"
head -c 3000 /dev/zero >"$tree/world/level.dat"
printf 'r' >"$tree/world/region/r.0.0.mca"
printf 'deep' >"$tree/$(printf 'd%.0s' {1..120})/$(printf 'f%.0s' {1..90}).txt"
ln -s world/level.dat "$tree/rel_link"
ln -s /etc/passwd "$tree/abs_link"
ln "$tree/world/level.dat" "$tree/hard"
printf '#!/bin/sh\n' >"$tree/setuid.sh" && chmod 4755 "$tree/setuid.sh"
printf 'x' >"$tree/$(printf 'bad-\377-utf8')"
printf 'n' >"$tree/$(printf 'new\nline')"
mkfifo "$tree/fifo" 2>/dev/null || true

if command -v tar >/dev/null; then
    for fmt in gnu oldgnu pax ustar v7 posix; do
        # ustar and v7 cannot hold every name: keep what they wrote.
        tar --format=$fmt -C "$tree" -czf "$out/gnutar-$fmt.tar.gz" . 2>/dev/null || true
    done
    tar --format=gnu -C "$tree" -cf - . | gzip -1 >"$work/a.gz"
    printf 'x' | gzip >"$work/b.gz"
    cat "$work/a.gz" "$work/b.gz" >"$out/gnutar-two-members.tar.gz"
else
    echo "make_seeds: no GNU tar, skipped" >&2
fi

if command -v python3 >/dev/null; then
    python3 - "$tree" "$out" <<'PY'
import os, sys, tarfile
tree, out = sys.argv[1], sys.argv[2]
for name, fmt in (("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT),
                  ("ustar", tarfile.USTAR_FORMAT)):
    path = os.path.join(out, f"python-{name}.tar.gz")
    with tarfile.open(path, "w:gz", format=fmt, errors="surrogateescape") as t:
        for root, dirs, files in os.walk(tree):
            for n in sorted(dirs + files):
                full = os.path.join(root, n)
                try:
                    t.add(full, arcname=os.path.relpath(full, tree), recursive=False)
                except (ValueError, OSError):
                    pass  # ustar cannot hold some names
PY
else
    echo "make_seeds: no python3, skipped" >&2
fi

if command -v go >/dev/null; then
    testdata=$(go env GOROOT)/src/archive/tar/testdata
    for f in "$testdata"/*.tar; do
        gzip -c "$f" >"$out/go-$(basename "$f").gz"
    done
    for f in "$testdata"/*.tar.base64; do
        base64 -d "$f" 2>/dev/null | head -c 1048576 | gzip -c >"$out/go-$(basename "$f" .base64).gz" || true
    done
    if command -v bzip2 >/dev/null; then
        for f in "$testdata"/*.tar.bz2; do
            bzip2 -dc "$f" 2>/dev/null | head -c 1048576 | gzip -c >"$out/go-$(basename "$f" .bz2).gz" || true
        done
    fi
else
    echo "make_seeds: no Go toolchain, Go's archive/tar test data skipped" >&2
fi

$CARGO run --quiet --release --manifest-path "$here/Cargo.toml" --example make_seeds -- "$out"
ls "$out" | wc -l | xargs echo "make_seeds: seeds in $out:"
