package wingsbackup

/*
#include "wings_backup.h"
*/
import "C"

import (
	"errors"
	"fmt"
)

// Status is a library status code (the WB_* constants of the C header).
type Status int32

// The statuses; their values are part of the C ABI and never change.
const (
	StatusOK              Status = C.WB_OK
	StatusInvalidArgument Status = C.WB_INVALID_ARGUMENT
	StatusNotFound        Status = C.WB_NOT_FOUND
	StatusConflict        Status = C.WB_CONFLICT
	StatusCorruptArchive  Status = C.WB_CORRUPT_ARCHIVE
	StatusUnsafeEntry     Status = C.WB_UNSAFE_ENTRY
	StatusQuota           Status = C.WB_QUOTA
	StatusRemote          Status = C.WB_REMOTE
	StatusCancelled       Status = C.WB_CANCELLED
	StatusIO              Status = C.WB_IO
	StatusInternal        Status = C.WB_INTERNAL
)

// String returns the C name of the status, e.g. "WB_NOT_FOUND"
// ("WB_UNKNOWN" for a value the library does not know).
func (s Status) String() string {
	return C.GoString(C.wb_status_name(C.int32_t(s)))
}

// HTTPStatus returns the HTTP status a host answers for s (docs/api.md
// section 2), as the library maps it.
func (s Status) HTTPStatus() int {
	return int(C.wb_status_http(C.int32_t(s)))
}

// Sentinel errors, one per failure status. Every *Error matches the one of
// its status with errors.Is.
var (
	ErrInvalidArgument = errors.New("wingsbackup: invalid argument")
	ErrNotFound        = errors.New("wingsbackup: not found")
	ErrConflict        = errors.New("wingsbackup: conflict")
	ErrCorruptArchive  = errors.New("wingsbackup: corrupt archive")
	ErrUnsafeEntry     = errors.New("wingsbackup: unsafe entry")
	ErrQuota           = errors.New("wingsbackup: quota exceeded")
	ErrRemote          = errors.New("wingsbackup: remote failure")
	ErrCancelled       = errors.New("wingsbackup: cancelled")
	ErrIO              = errors.New("wingsbackup: I/O error")
	ErrInternal        = errors.New("wingsbackup: internal error")
)

// ErrClosed is returned by the methods of an Engine after Close.
var ErrClosed = errors.New("wingsbackup: engine is closed")

// sentinel returns the sentinel error of s, or nil for StatusOK and unknown
// values.
func (s Status) sentinel() error {
	switch s {
	case StatusInvalidArgument:
		return ErrInvalidArgument
	case StatusNotFound:
		return ErrNotFound
	case StatusConflict:
		return ErrConflict
	case StatusCorruptArchive:
		return ErrCorruptArchive
	case StatusUnsafeEntry:
		return ErrUnsafeEntry
	case StatusQuota:
		return ErrQuota
	case StatusRemote:
		return ErrRemote
	case StatusCancelled:
		return ErrCancelled
	case StatusIO:
		return ErrIO
	case StatusInternal:
		return ErrInternal
	}
	return nil
}

// Error is a failed call: the library's status and message. The message is
// meant for people (an HTTP host may send it to its client as is: it names
// entries relative to the server root, never host paths).
type Error struct {
	Status  Status
	Message string

	// cause is what made a cancelled call stop (the context's cause).
	cause error
}

func (e *Error) Error() string {
	return fmt.Sprintf("wingsbackup: %s: %s", e.Status, e.Message)
}

// Is makes errors.Is(err, ErrNotFound) (and the other sentinels) true for
// an *Error of that status.
func (e *Error) Is(target error) bool {
	s := e.Status.sentinel()
	return s != nil && target == s
}

// Unwrap returns the context's cause for a call its context cancelled, so
// errors.Is(err, context.Canceled) holds too.
func (e *Error) Unwrap() error {
	return e.cause
}

// takeError turns the library's error object into an *Error and frees it.
func takeError(status C.int32_t, cerr *C.wb_error) *Error {
	e := &Error{Status: Status(status)}
	if cerr != nil {
		e.Message = C.GoString(C.wb_error_message(cerr))
		C.wb_error_free(cerr)
	}
	if e.Message == "" {
		e.Message = e.Status.String()
	}
	return e
}
