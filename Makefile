# wings-backup: build, test, serve and measure.
#
#   make build   the library (target/release/libwings_backup.so), the header,
#                and the Go host (target/go-host)
#   make serve   build, then run the Go host on 127.0.0.1:8080 with ./var
#   make test    every test: Rust, C harness (sanitizers, valgrind), Go, Python,
#                and the HTTP conformance suite against both hosts
#   make bench   the benchmark against the anchors (docs/bench/)
#   make fuzz    a bounded fuzzing session of the archive reader
#   make lint    cargo fmt/clippy, gofmt, go vet

SHELL := /bin/bash
ROOT := $(CURDIR)
LIB := target/release/libwings_backup.so
GO_HOST := target/go-host
PYTHON ?= python3
CC ?= gcc
export WINGS_BACKUP_LIB := $(ROOT)/$(LIB)

.PHONY: build lib header go-host serve test test-rust test-header test-c test-go \
	test-python test-conformance bench fuzz lint clean

build: lib go-host

lib:
	cargo build --release --lib

# Rewrites include/wings_backup.h from src/ffi (commit the result).
header:
	WB_BLESS_HEADER=1 cargo build --release --lib

go-host: lib
	cd examples/go-host && go build -o $(ROOT)/$(GO_HOST) .

serve: build
	./scripts/serve.sh

test: build test-rust test-c test-go test-python test-conformance
	@echo "all tests passed"

test-rust:
	cargo test --release

C_FLAGS := -std=c11 -Wall -Wextra -Werror -g -I$(ROOT)/include
C_LINK := -L$(ROOT)/target/release -Wl,-rpath,$(ROOT)/target/release -lwings_backup -lpthread

test-c: lib
	@mkdir -p target/c
	$(CC) $(C_FLAGS) -fsyntax-only -x c include/wings_backup.h
	g++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only -x c++ include/wings_backup.h
	@bad=$$(nm -D --defined-only $(LIB) | awk '{print $$3}' | grep -v '^wb_' || true); \
	  if [ -n "$$bad" ]; then echo "non-wb_ symbols exported: $$bad"; exit 1; fi
	$(CC) $(C_FLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer \
	  tests/c/harness.c -o target/c/harness-asan $(C_LINK)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ./target/c/harness-asan
	$(CC) $(C_FLAGS) tests/c/harness.c -o target/c/harness $(C_LINK)
	valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	  --show-leak-kinds=definite,indirect ./target/c/harness

test-go: lib
	cd bindings/go && go vet ./... && go test -race -count=1 ./...
	cd bindings/go && GOGC=1 go test -count=1 -run 'GC|Concurrent' ./...
	cd examples/go-host && go vet ./... && go test -race -count=1 ./...

test-python: lib
	cd bindings/python && $(PYTHON) -m pytest -q -p no:cacheprovider tests
	$(PYTHON) -m pytest -q -p no:cacheprovider examples/python-host/tests

# The Python package as a wheel that carries the library (target/wheels/),
# built by setuptools-rust with the checkout's target/ (pip fetches it).
WHEEL_DIR := target/wheels
.PHONY: wheel test-wheel
wheel:
	rm -f $(WHEEL_DIR)/wings_backup-*.whl
	$(PYTHON) -m pip wheel --no-deps -w $(WHEEL_DIR) ./bindings/python

# That wheel installed into a fresh virtualenv and used with no WINGS_BACKUP_LIB.
test-wheel: wheel
	cd bindings/python && WINGS_BACKUP_WHEEL="$$(ls $(ROOT)/$(WHEEL_DIR)/wings_backup-*.whl)" \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/test_packaging.py

test-conformance: build
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/conformance

bench: lib
	./scripts/bench.sh

fuzz:
	./scripts/fuzz.sh

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	test -z "$$(gofmt -l bindings/go examples/go-host)"
	cd bindings/go && go vet ./...
	cd examples/go-host && go vet ./...

clean:
	cargo clean
	rm -rf var
