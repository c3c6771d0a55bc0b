# wings-backup: build, test, serve and measure.
#
#   make build   the library (target/release/libwings_backup.so), the header,
#                and the Go host (target/go-host); with CARGO_TARGET_DIR set,
#                under that directory instead of target/
#   make serve   build, then run the Go host on 127.0.0.1 (8080, else a free port;
#                PORT= or LISTEN= choose) with ./var
#   make test    every test: Rust, C harness (sanitizers, valgrind), Go, Python,
#                the HTTP conformance suite against both hosts, and an install
#   make wheel   the Python package with the library inside (target/wheels/)
#   make install the library (with SONAME and pkg-config file), header, host
#                and systemd unit under $(DESTDIR)$(PREFIX)
#   make bench   the benchmark against the anchors (docs/bench/)
#   make fuzz    a bounded fuzzing session of the archive reader
#   make lint    cargo fmt/clippy, gofmt, go vet
#
# build and test first install what a new machine lacks (scripts/install-deps.sh:
# Debian packages with apt-get as root, else it prints the command to run).

SHELL := /bin/bash
ROOT := $(CURDIR)
# Cargo's output directory: $CARGO_TARGET_DIR if set (a relative one is taken
# from this directory), else target/. Exported as an absolute path, so that
# cargo, the scripts and the tests run from here all use the same one.
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
export CARGO_TARGET_DIR := $(TARGET_DIR)
LIB := $(TARGET_DIR)/release/libwings_backup.so
GO_HOST := $(TARGET_DIR)/go-host
PYTHON ?= python3
CC ?= gcc
export WINGS_BACKUP_LIB := $(LIB)
# The Go binding links through pkg-config; inside the checkout it finds the
# uninstalled library through target/pkgconfig (written by `make lib`).
export PKG_CONFIG_PATH := $(TARGET_DIR)/pkgconfig$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))

VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
SOVERSION := $(firstword $(subst ., ,$(VERSION)))
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
UNITDIR ?= $(PREFIX)/lib/systemd/system
DATADIR ?= $(PREFIX)/share/wings-backup
# What a program linking the static library also needs (rustc's native-static-libs).
PRIVATE_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

# ISAL=0 builds without ISA-L (pure-Rust deflate, no nasm or autotools needed).
ISAL ?= 1
CARGO_FEATURES := $(if $(filter 0,$(ISAL)),--no-default-features)
export ISAL
# The pure-Rust build that `make test` also tests, beside the default one.
PURE_DIR := $(TARGET_DIR)/pure
PURE_LIB := $(PURE_DIR)/release

.PHONY: build deps deps-test lib lib-pure header go-host serve test test-rust test-pure test-c \
	test-go test-python test-conformance test-install install uninstall bench fuzz lint clean

build: lib go-host

deps:
	@./scripts/install-deps.sh build

deps-test:
	@./scripts/install-deps.sh test

# The SONAME is libwings_backup.so.$(SOVERSION) (build.rs): programs linked in
# the checkout find it through the symlink beside the library.
lib: deps
	cargo build --release --lib $(CARGO_FEATURES)
	ln -sf libwings_backup.so $(TARGET_DIR)/release/libwings_backup.so.$(SOVERSION)
	@mkdir -p $(TARGET_DIR)/pkgconfig
	@$(call write_pc,$(ROOT),$(TARGET_DIR)/release,$(ROOT)/include,-Wl$(comma)-rpath$(comma)$${libdir}) \
	  >$(TARGET_DIR)/pkgconfig/wings_backup.pc

comma := ,
# write_pc PREFIX LIBDIR INCLUDEDIR RPATH: the pkg-config file on stdout.
write_pc = sed -e 's|@PREFIX@|$(1)|' -e 's|@LIBDIR@|$(2)|' -e 's|@INCLUDEDIR@|$(3)|' \
	-e 's|@RPATH@|$(4)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@PRIVATE_LIBS@|$(PRIVATE_LIBS)|' \
	packaging/wings_backup.pc.in

# Rewrites include/wings_backup.h from src/ffi (commit the result).
header:
	WB_BLESS_HEADER=1 cargo build --release --lib $(CARGO_FEATURES)

# Go caches a cgo package by its sources and CGO_* flags, not by what
# pkg-config answers (golang/go#24544): naming the library's directory in
# CGO_LDFLAGS too makes the Go builds against the checkout's library follow
# TARGET_DIR, rather than reuse a binding linked against another one.
go-host test-go test-pure: export CGO_LDFLAGS := $(or $(CGO_LDFLAGS),-g -O2) -Wl,-rpath,$(TARGET_DIR)/release

go-host: lib
	cd examples/go-host && go build -o $(GO_HOST) .

serve: build
	./scripts/serve.sh

test: deps-test build test-rust test-c test-go test-python test-wheel test-conformance test-install \
	test-pure
	@echo "all tests passed"

test-rust:
	cargo test --release $(CARGO_FEATURES)

# The build without ISA-L: its Rust tests, and the C harness, Go and Python
# binding tests against its library (WB_EXPECT_DEFLATE proves which one loaded).
lib-pure:
	CARGO_TARGET_DIR=$(PURE_DIR) cargo build --release --no-default-features --lib
	ln -sf libwings_backup.so $(PURE_DIR)/release/libwings_backup.so.$(SOVERSION)

test-pure: lib lib-pure
	! cargo tree --no-default-features -e normal | grep -i isal
	CARGO_TARGET_DIR=$(PURE_DIR) cargo test --release --no-default-features
	@mkdir -p $(TARGET_DIR)/c
	$(CC) $(C_FLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer tests/c/harness.c \
	  -o $(TARGET_DIR)/c/harness-pure-asan -L$(PURE_LIB) -Wl,-rpath,$(PURE_LIB) -lwings_backup -lpthread
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  WB_EXPECT_DEFLATE=zlib-rs $(TARGET_DIR)/c/harness-pure-asan
	cd bindings/go && LD_LIBRARY_PATH=$(PURE_LIB) WB_EXPECT_DEFLATE=zlib-rs go test -count=1 ./...
	cd bindings/python && WINGS_BACKUP_LIB=$(PURE_LIB)/libwings_backup.so WB_EXPECT_DEFLATE=zlib-rs \
	  $(PYTHON) -m pytest -q -p no:cacheprovider --ignore=tests/test_packaging.py tests

C_FLAGS := -std=c11 -Wall -Wextra -Werror -g -I$(ROOT)/include
C_LINK := -L$(TARGET_DIR)/release -Wl,-rpath,$(TARGET_DIR)/release -lwings_backup -lpthread

test-c: lib
	@mkdir -p $(TARGET_DIR)/c
	$(CC) $(C_FLAGS) -fsyntax-only -x c include/wings_backup.h
	g++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only -x c++ include/wings_backup.h
	@bad=$$(nm -D --defined-only $(LIB) | awk '{print $$3}' | grep -v '^wb_' || true); \
	  if [ -n "$$bad" ]; then echo "non-wb_ symbols exported: $$bad"; exit 1; fi
	$(CC) $(C_FLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer \
	  tests/c/harness.c -o $(TARGET_DIR)/c/harness-asan $(C_LINK)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(TARGET_DIR)/c/harness-asan
	$(CC) $(C_FLAGS) tests/c/harness.c -o $(TARGET_DIR)/c/harness $(C_LINK)
	valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	  --show-leak-kinds=definite,indirect $(TARGET_DIR)/c/harness

test-go: lib
	cd bindings/go && go vet ./... && go test -race -count=1 ./...
	cd bindings/go && GOGC=1 go test -count=1 -run 'GC|Concurrent' ./...
	cd examples/go-host && go vet ./... && go test -race -count=1 ./...

test-python: lib
	cd bindings/python && $(PYTHON) -m pytest -q -p no:cacheprovider --ignore=tests/test_packaging.py tests
	$(PYTHON) -m pytest -q -p no:cacheprovider examples/python-host/tests

# The Python package as a wheel that carries the library (target/wheels/),
# built by setuptools-rust with the checkout's target/ (pip fetches it).
WHEEL_DIR := $(TARGET_DIR)/wheels
.PHONY: wheel test-wheel
wheel: lib
	rm -f $(WHEEL_DIR)/wings_backup-*.whl
	$(PYTHON) -m pip wheel --no-deps -w $(WHEEL_DIR) ./bindings/python

# That wheel installed into a fresh virtualenv and used with no WINGS_BACKUP_LIB.
test-wheel: wheel
	cd bindings/python && WINGS_BACKUP_WHEEL="$$(ls $(WHEEL_DIR)/wings_backup-*.whl)" \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/test_packaging.py

test-conformance: build
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/conformance

# Installs into a temporary prefix and builds a C and a Go program outside the
# checkout against it.
test-install: lib
	./tests/install/run.sh

# The host installed for the service is built against the installed library
# and finds it through its run path.
install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	  $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DATADIR)
	install -m 0755 $(LIB) $(DESTDIR)$(LIBDIR)/libwings_backup.so.$(VERSION)
	ln -sf libwings_backup.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libwings_backup.so.$(SOVERSION)
	ln -sf libwings_backup.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libwings_backup.so
	install -m 0644 $(TARGET_DIR)/release/libwings_backup.a $(DESTDIR)$(LIBDIR)/libwings_backup.a
	install -m 0644 include/wings_backup.h $(DESTDIR)$(INCLUDEDIR)/wings_backup.h
	$(call write_pc,$(PREFIX),$(LIBDIR),$(INCLUDEDIR),) >$(DESTDIR)$(PKGCONFIGDIR)/wings_backup.pc
	cd examples/go-host && PKG_CONFIG_PATH=$(abspath $(DESTDIR)$(PKGCONFIGDIR)) \
	  PKG_CONFIG_SYSROOT_DIR=$(if $(DESTDIR),$(abspath $(DESTDIR))) CGO_LDFLAGS="-Wl,-rpath,$(LIBDIR)" \
	  go build -o $(abspath $(DESTDIR)$(BINDIR))/wings-backup-host .
	sed 's|@BINDIR@|$(BINDIR)|' packaging/systemd/wings-backup.service.in \
	  >$(DESTDIR)$(UNITDIR)/wings-backup.service
	install -m 0644 packaging/config.example.yml $(DESTDIR)$(DATADIR)/config.example.yml

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libwings_backup.so.$(VERSION) \
	  $(DESTDIR)$(LIBDIR)/libwings_backup.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libwings_backup.so \
	  $(DESTDIR)$(LIBDIR)/libwings_backup.a $(DESTDIR)$(INCLUDEDIR)/wings_backup.h \
	  $(DESTDIR)$(PKGCONFIGDIR)/wings_backup.pc $(DESTDIR)$(BINDIR)/wings-backup-host \
	  $(DESTDIR)$(UNITDIR)/wings-backup.service $(DESTDIR)$(DATADIR)/config.example.yml
	-rmdir $(DESTDIR)$(DATADIR)

bench: lib
	./scripts/bench.sh

fuzz:
	./scripts/fuzz.sh

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	CARGO_TARGET_DIR=$(PURE_DIR) cargo clippy --release --all-targets --no-default-features -- -D warnings
	test -z "$$(gofmt -l bindings/go examples/go-host)"
	cd bindings/go && go vet ./...
	cd examples/go-host && go vet ./...

clean:
	cargo clean
	rm -rf var
