#!/usr/bin/env bash
# install-deps.sh: installs what this project needs and a new machine lacks.
#
#   scripts/install-deps.sh build   to build the library, the header and the Go host
#   scripts/install-deps.sh test    to build and run every test (make test)
#
# Idempotent and quick when nothing is missing: each tool is asked for its
# version (a tool that is on PATH but answers "command not found" counts as
# missing), each Python module is looked up without importing it. As root,
# missing Debian packages are installed with apt-get and missing Python
# packages with pip; otherwise the one command to run is printed and the
# script fails. `ISAL=0` leaves out what only the ISA-L build needs (nasm and
# the autotools), for `cargo build --no-default-features`.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-build}
case "$what" in
build | test) ;;
*)
    echo "usage: $0 build|test" >&2
    exit 2
    ;;
esac

# tool, the command that proves it works, and its Debian package
tools=(
    "cc:cc --version:gcc"
    "make:make --version:make"
    "git:git --version:git"
    "pkg-config:pkg-config --version:pkg-config"
)
if [ "${ISAL:-1}" != 0 ]; then
    # isal-sys runs ./autogen.sh and assembles ISA-L's kernels with nasm.
    tools+=(
        "nasm:nasm -v:nasm"
        "autoreconf:autoreconf --version:autoconf"
        "automake:automake --version:automake"
        "libtoolize:libtoolize --version:libtool"
    )
fi
if [ "$what" = test ]; then
    tools+=(
        "g++:g++ --version:g++"
        "pigz:pigz --version:pigz"
        "bsdtar:bsdtar --version:libarchive-tools"
        "valgrind:valgrind --version:valgrind"
        "time:/usr/bin/time --version:time"
        "tar:tar --version:tar"
        "gzip:gzip --version:gzip"
    )
fi

missing=()
for t in "${tools[@]}"; do
    IFS=: read -r name probe package <<<"$t"
    if ! $probe >/dev/null 2>&1; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: installing Debian packages: ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "install-deps: missing Debian packages: ${missing[*]}; install them with:" >&2
        echo "    sudo apt-get install -y ${missing[*]}" >&2
        if [ "${ISAL:-1}" != 0 ]; then
            echo "(or build without ISA-L, which needs neither nasm nor the autotools: make ISAL=0 ...)" >&2
        fi
        exit 1
    fi
fi

if [ "$what" = test ]; then
    # Module names of requirements-dev.txt (one lookup, no imports).
    python=${PYTHON:-python3}
    if ! "$python" - <<'PY'; then
import importlib.util, sys
modules = ["pytest", "requests", "boto3", "moto", "flask", "waitress", "yaml", "schemathesis"]
sys.exit(1 if [m for m in modules if importlib.util.find_spec(m) is None] else 0)
PY
        echo "install-deps: installing Python packages from requirements-dev.txt" >&2
        if ! "$python" -m pip install -q -r requirements-dev.txt; then
            echo "install-deps: pip could not install requirements-dev.txt; in a virtualenv, run:" >&2
            echo "    $python -m pip install -r requirements-dev.txt" >&2
            exit 1
        fi
    fi
fi
