#!/usr/bin/env bash
# make fuzz: a bounded fuzzing session of the archive reader and restorer
# (the cargo-fuzz project in fuzz/, see fuzz/README.md).
#
#   FUZZ_SECONDS=60      seconds per target
#   FUZZ_TARGETS="..."   targets to run (default: all of fuzz/fuzz_targets)
#   FUZZ_SANITIZER=address   cargo fuzz's -s (address, none, ...)
#   FUZZ_KEEP_GOING=1    keep fuzzing after a crash (libFuzzer fork mode)
#
# Each target starts from its corpus in fuzz/corpus/<target> plus, for
# restore_bytes, seed archives from GNU tar, Python, Go and the engine itself
# (fuzz/seeds, made once by fuzz/scripts/make_seeds.sh). Every crash, timeout
# or out-of-memory input found is copied into fuzz/regressions/<target>/,
# which tests/fuzz_regressions.rs replays under `cargo test`; the script then
# exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
TARGETS=${FUZZ_TARGETS:-$(cd fuzz/fuzz_targets && ls *.rs | sed 's/\.rs$//')}

# Nightly if there is one; else stable with RUSTC_BOOTSTRAP (cargo fuzz
# needs -Z flags).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    CARGO="cargo +nightly"
else
    echo "fuzz.sh: no nightly toolchain, using stable with RUSTC_BOOTSTRAP=1" >&2
    CARGO=cargo
    export RUSTC_BOOTSTRAP=1
fi
if ! $CARGO fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

# isal-sys builds ISA-L with ./configure and LDFLAGS=-static, which cannot
# link the -fsanitize=address the cc crate adds under ASan: build C code
# without the cc crate's default flags (Rust code is still instrumented).
export CRATE_CC_NO_DEFAULTS=1
export CFLAGS="${CFLAGS:--O2 -fPIC}"
export CXXFLAGS="${CXXFLAGS:--O2 -fPIC}"

if [ ! -d fuzz/seeds ] || [ -z "$(ls -A fuzz/seeds 2>/dev/null)" ]; then
    CARGO="$CARGO" fuzz/scripts/make_seeds.sh fuzz/seeds
fi

# Scratch directories the targets leave behind if they die (see
# fuzz/src/check.rs for where they go).
base=${WB_FUZZ_DIR:-/dev/shm}
[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
before=$(ls -d "$base"/wbfz-* 2>/dev/null || true)
cleanup() {
    for d in $(ls -d "$base"/wbfz-* 2>/dev/null || true); do
        grep -qxF "$d" <<<"$before" || rm -rf "$d"
    done
}
trap cleanup EXIT

failed=()
for t in $TARGETS; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts" "fuzz/regressions/$t"
    dirs=()
    flags=()
    case $t in
        restore_bytes)
            dirs=(fuzz/seeds)
            flags=(-dict=fuzz/dict/restore_bytes.dict -max_len=65536)
            ;;
        restore_structured) flags=(-max_len=4096) ;;
    esac
    keep=()
    if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
        keep=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    echo "== fuzzing $t for ${FUZZ_SECONDS}s"
    known=$(ls "$artifacts")
    set +e
    $CARGO fuzz run --debug-assertions -s "$FUZZ_SANITIZER" "$t" "$corpus" \
        ${dirs[@]+"${dirs[@]}"} -- ${flags[@]+"${flags[@]}"} ${keep[@]+"${keep[@]}"} \
        -max_total_time="$FUZZ_SECONDS" -timeout=20 \
        -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
        -artifact_prefix="$artifacts/"
    rc=$?
    set -e
    new=0
    for f in "$artifacts"/*; do
        [ -f "$f" ] || continue
        name=$(basename "$f")
        if ! grep -qxF "$name" <<<"$known"; then
            cp "$f" "fuzz/regressions/$t/$name"
            new=$((new + 1))
        fi
    done
    if [ $rc -ne 0 ] || [ $new -gt 0 ]; then
        echo "fuzz.sh: $t found $new new failing input(s), kept in fuzz/regressions/$t/" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failures in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${FUZZ_SECONDS}s per target ($TARGETS)"
