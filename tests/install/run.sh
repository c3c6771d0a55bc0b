#!/usr/bin/env bash
# make test-install: installs the library into temporary prefixes as a
# packager would (`make install PREFIX=...` and `DESTDIR=...`), checks the
# installed layout, then builds a C program (shared and static) and a Go
# program in their own directories outside the checkout against the install,
# through pkg-config only, and runs them on a small server.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/wb-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
major=${version%%.*}
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }
passed=0
pass() { passed=$((passed + 1)); echo "test-install: ok: $*"; }

prefix=$work/prefix
make -C "$root" --no-print-directory -s install PREFIX="$prefix" >/dev/null

# Layout: the real file, the SONAME link, the development link.
lib=$prefix/lib
[ -f "$lib/libwings_backup.so.$version" ] && [ ! -L "$lib/libwings_backup.so.$version" ] || fail "no $lib/libwings_backup.so.$version"
[ "$(readlink "$lib/libwings_backup.so.$major")" = "libwings_backup.so.$version" ] || fail "libwings_backup.so.$major link"
[ "$(readlink "$lib/libwings_backup.so")" = "libwings_backup.so.$major" ] || fail "libwings_backup.so link"
soname=$(readelf -d "$lib/libwings_backup.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libwings_backup.so.$major" ] || fail "SONAME is '$soname'"
readelf -S "$lib/libwings_backup.so.$version" | grep -q '\.debug_info' && fail "the installed library carries debug info"
[ -f "$lib/libwings_backup.a" ] && [ -f "$prefix/include/wings_backup.h" ] || fail "static library or header missing"
pass "layout (SONAME $soname, $(du -k "$lib/libwings_backup.so.$version" | cut -f1) KiB, no debug info)"

# A staged install for packagers: nothing outside DESTDIR, paths in the
# pkg-config file and the unit name the final prefix.
make -C "$root" --no-print-directory -s install DESTDIR="$work/stage" PREFIX=/usr >/dev/null
[ -f "$work/stage/usr/lib/libwings_backup.so.$version" ] || fail "DESTDIR install"
grep -qx 'prefix=/usr' "$work/stage/usr/lib/pkgconfig/wings_backup.pc" || fail "DESTDIR pkg-config prefix"
grep -q '^ExecStart=/usr/bin/wings-backup-host ' "$work/stage/usr/lib/systemd/system/wings-backup.service" || fail "unit ExecStart"
pass "DESTDIR install"

# Only the install is visible to pkg-config from here on.
export PKG_CONFIG_PATH=$lib/pkgconfig
unset PKG_CONFIG_LIBDIR WINGS_BACKUP_LIB
[ "$(pkg-config --modversion wings_backup)" = "$version" ] || fail "pkg-config --modversion"
case "$(pkg-config --cflags --libs wings_backup)" in *"$root"*) fail "pkg-config points into the checkout";; esac
pass "pkg-config wings_backup $version"

# A node with one server; *.log is left out by the request's ignore rules.
server=8f0c3a52-6d1e-4b7a-9c2f-1e5d7a3b9c40
data=$work/node/volumes
mkdir -p "$data/$server/world/region" "$work/node/backups"
printf 'motd=install test\n' >"$data/$server/server.properties"
head -c 300000 /dev/urandom >"$data/$server/world/region/r.0.0.mca"
printf 'noise\n' >"$data/$server/latest.log"
check_restored() { # DIR
    cmp "$data/$server/server.properties" "$1/server.properties" || fail "$1: server.properties differs"
    cmp "$data/$server/world/region/r.0.0.mca" "$1/world/region/r.0.0.mca" || fail "$1: region file differs"
    [ ! -e "$1/latest.log" ] || fail "$1: the ignored file was archived"
}
run_daemon() { # NAME BINARY
    mkdir -p "$work/restore-$1"
    "$2" "$data" "$work/node/backups" "$server" "$3" "$work/restore-$1" >"$work/$1.out" ||
        { cat "$work/$1.out" >&2; fail "$1 program"; }
    grep -qx "version $version" "$work/$1.out" || fail "$1: version line"
    tar -tzf "$work/node/backups/$3.tar.gz" | grep -x 'server.properties' >/dev/null || fail "$1: tar cannot list the archive"
    check_restored "$work/restore-$1"
}

# C, shared: the run path is not recorded, so the loader must be told.
mkdir -p "$work/c"
cp "$root/tests/install/daemon.c" "$work/c/"
(cd "$work/c" && cc -std=c11 -Wall -Werror -o daemon daemon.c $(pkg-config --cflags --libs wings_backup))
LD_LIBRARY_PATH=$lib ldd "$work/c/daemon" | grep -q "libwings_backup.so.$major => $lib/" || fail "C program does not load the installed library"
LD_LIBRARY_PATH=$lib run_daemon c-shared "$work/c/daemon" 11111111-2222-4333-8444-555555555555
pass "C program against the shared library"

# C, static: Libs.private lists what the archive needs.
private=$(pkg-config --static --libs-only-l wings_backup | sed 's/-lwings_backup//')
(cd "$work/c" && cc -std=c11 -Wall -Werror -o daemon-static daemon.c $(pkg-config --cflags wings_backup) \
    "$(pkg-config --variable=libdir wings_backup)/libwings_backup.a" $private)
ldd "$work/c/daemon-static" | grep -q libwings_backup && fail "static program still needs the shared library"
run_daemon c-static "$work/c/daemon-static" 22222222-2222-4333-8444-555555555555
pass "C program against the static library"

# Go: a module of its own that requires the binding by its module path (a
# copy of the binding's source stands in for the module cache); no network.
mkdir -p "$work/go/daemon" "$work/go/binding"
(cd "$root/bindings/go" && cp go.mod *.go *.c *.h "$work/go/binding/" && rm -f "$work/go/binding/"*_test.go)
cp "$root/tests/install/daemon.go" "$work/go/daemon/main.go"
cat >"$work/go/daemon/go.mod" <<MOD
module example.com/daemon

go 1.24

require github.com/wings-backup/wings-backup/bindings/go v0.0.0

replace github.com/wings-backup/wings-backup/bindings/go => ../binding
MOD
(cd "$work/go/daemon" && GOFLAGS=-mod=mod GOPROXY=off GOWORK=off go build -o daemon .)
readelf -d "$work/go/daemon/daemon" | grep -q "$root" && fail "Go program records a path into the checkout"
LD_LIBRARY_PATH=$lib run_daemon go "$work/go/daemon/daemon" 33333333-2222-4333-8444-555555555555
pass "Go program through #cgo pkg-config"

# The installed host runs without LD_LIBRARY_PATH (its run path names LIBDIR),
# and the unit that starts it is valid.
"$prefix/bin/wings-backup-host" --help >/dev/null 2>&1 || fail "installed host --help"
host_version=$("$prefix/bin/wings-backup-host" --version) || fail "installed host --version"
[ "$host_version" = "wings-backup-host, libwings_backup $version" ] || fail "installed host --version: $host_version"
if command -v systemd-analyze >/dev/null 2>&1; then
    systemd-analyze verify --man=no "$prefix/lib/systemd/system/wings-backup.service" || fail "systemd unit"
fi
pass "installed host and systemd unit"
echo "test-install: $passed passed, 0 failed"
