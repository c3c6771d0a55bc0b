// Package wingsbackup wraps libwings_backup, the backup engine of a
// game-server node (a Pterodactyl/Pelican Wings compatible backup
// subsystem), with cgo.
//
// Long calls block the calling goroutine (run them in a goroutine of their
// own to do other work meanwhile), stop when their context.Context is
// cancelled, and report progress to an optional func on the calling
// goroutine. Errors are *Error values that match the package's sentinel
// errors with errors.Is:
//
//	if errors.Is(err, wingsbackup.ErrNotFound) { ... }
//
// The library is found with pkg-config (package wings_backup): after `make
// install`, put the install's lib/pkgconfig on PKG_CONFIG_PATH. Inside the
// source checkout, `make lib` writes target/pkgconfig/wings_backup.pc for the
// uninstalled library (whose run path it records) and the Makefile puts it on
// PKG_CONFIG_PATH.
package wingsbackup

/*
#cgo pkg-config: wings_backup
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
*/
import "C"

import (
	"bytes"
	"context"
	"fmt"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// ABIVersion is the ABI version this package was written for
// (WB_ABI_VERSION of include/wings_backup.h).
const ABIVersion = C.WB_ABI_VERSION

// Version returns the version of the loaded library, e.g. "0.1.0".
func Version() string {
	return C.GoString(C.wb_version())
}

// DeflateBackend returns the deflate implementation the loaded library was
// built with: "isal" (ISA-L, the default build) or "zlib-rs" (pure Rust,
// built with cargo's --no-default-features). Both read and write the same
// archives; the pure-Rust build compresses best_speed more slowly and less.
func DeflateBackend() string {
	return C.GoString(C.wb_deflate_backend())
}

// LibraryABIVersion returns the ABI version of the loaded library.
func LibraryABIVersion() uint32 {
	return uint32(C.wb_abi_version())
}

// checkABI refuses a library built for another ABI; every entry point that
// creates something calls it.
var checkABI = sync.OnceValue(func() error {
	if got := LibraryABIVersion(); got != ABIVersion {
		return fmt.Errorf("wingsbackup: libwings_backup %s has ABI version %d, but this package needs ABI version %d; rebuild the library and the Go module from the same checkout",
			Version(), got, ABIVersion)
	}
	return nil
})

// cString copies s to C memory, refusing NUL bytes (C would cut the string
// there, and the library would see something else than the caller sent).
// The caller frees the result with C.free.
func cString(what string, s []byte) (*C.char, error) {
	if bytes.IndexByte(s, 0) >= 0 {
		return nil, &Error{Status: StatusInvalidArgument, Message: fmt.Sprintf("`%s` contains a NUL byte", what)}
	}
	return (*C.char)(C.CBytes(append(s[:len(s):len(s)], 0))), nil
}

// arg is a named string argument of a library call.
type arg struct{ name, value string }

// cStrings converts several arguments at once; free releases all of them.
func cStrings(args ...arg) (ptrs []*C.char, free func(), err error) {
	free = func() {
		for _, p := range ptrs {
			C.free(unsafe.Pointer(p))
		}
	}
	for _, a := range args {
		p, err := cString(a.name, []byte(a.value))
		if err != nil {
			free()
			return nil, func() {}, err
		}
		ptrs = append(ptrs, p)
	}
	return ptrs, free, nil
}

// takeString copies and frees a string the library handed out.
func takeString(s *C.char) []byte {
	if s == nil {
		return nil
	}
	defer C.wb_string_free(s)
	return C.GoBytes(unsafe.Pointer(s), C.int(C.strlen(s)))
}

// longCall is one blocking library call, given the progress handle (0 for
// none), the cancel token (may be NULL) and the error out-parameter.
type longCall func(progress C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t

// runLong runs a blocking call with ctx wired to a cancel token and progress
// wired to the exported trampoline.
func runLong(ctx context.Context, progress func(Progress) bool, call longCall) error {
	var handle C.uintptr_t
	var pc *progressCall
	if progress != nil {
		pc = &progressCall{fn: progress}
		h := cgo.NewHandle(pc)
		defer h.Delete()
		handle = C.uintptr_t(h)
	}

	var cancel *C.wb_cancel
	stopWatching := func() {}
	if ctx.Done() != nil {
		cancel = C.wb_cancel_new()
		if cancel == nil {
			return &Error{Status: StatusInternal, Message: "out of memory creating a cancel token"}
		}
		defer C.wb_cancel_free(cancel)
		stopWatching = watchContext(ctx, cancel)
	}

	var cerr *C.wb_error
	status := call(handle, cancel, &cerr)
	// The watcher must be gone before the token is freed (deferred above).
	stopWatching()

	if pc != nil && pc.panicked {
		C.wb_error_free(cerr)
		panic(pc.panicValue)
	}
	if status == C.WB_OK {
		return nil
	}
	err := takeError(status, cerr)
	if err.Status == StatusCancelled && ctx.Err() != nil {
		err.cause = context.Cause(ctx)
	}
	return err
}

// watchContext triggers the token when ctx is done. The returned func stops
// the watcher and waits until it can no longer touch the token.
func watchContext(ctx context.Context, cancel *C.wb_cancel) func() {
	if ctx.Err() != nil {
		C.wb_cancel_trigger(cancel)
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
			C.wb_cancel_trigger(cancel)
		case <-done:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-exited
		})
	}
}
