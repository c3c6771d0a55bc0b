package wingsbackup

/*
#include <stdlib.h>
#include "wings_backup.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// BodyError tells HandleHTTP why the host has no body to pass.
type BodyError uint32

const (
	// BodyRead: the body was read whole (HTTPRequest.Body).
	BodyRead BodyError = 0
	// BodyTooLarge: over the host's 1 MiB; a route reading a body answers 413.
	BodyTooLarge BodyError = C.WB_HTTP_BODY_TOO_LARGE
	// BodyUnreadable: reading it failed; 400 on a route reading a body.
	BodyUnreadable BodyError = C.WB_HTTP_BODY_UNREADABLE
	// BodyTimedOut: not received in time; 408 on a route reading a body.
	BodyTimedOut BodyError = C.WB_HTTP_BODY_TIMED_OUT
)

// HTTPRequest is one request of the node's HTTP API, after the host's
// authentication.
type HTTPRequest struct {
	Method string
	Path   string // decoded, without the query
	Query  string // raw, without "?"
	Body   []byte
	// BodyError is set when the host could not read the body within its limits.
	BodyError BodyError
	// AsyncRestore: a restore answers 202 once started, not 204 once done.
	AsyncRestore bool
}

// HTTPResponse is the library's answer: send Status, Headers and Body as
// they are. Started names a create or restore the request started; Stream
// means an event stream goes on after Body (NextHTTPEvent).
type HTTPResponse struct {
	Status  int          `json:"status"`
	Headers [][2]string  `json:"headers"`
	Body    string       `json:"body"`
	Started *HTTPStarted `json:"started"`
	Stream  *HTTPStream  `json:"stream"`
}

// HTTPStarted names a create or restore a request started.
type HTTPStarted struct {
	Kind   string `json:"kind"` // "backup" or "restore"
	Server string `json:"server"`
	Backup string `json:"backup"`
}

// HTTPOperationEnd is how a started operation ended, for the host's log:
// Message ("backup finished") at Level, with Fields in order.
type HTTPOperationEnd struct {
	Ended   bool        `json:"ended"`
	Level   int32       `json:"level"`
	Message string      `json:"message"`
	Fields  [][2]string `json:"fields"`
}

// SlogLevel is the end's level for log/slog.
func (o HTTPOperationEnd) SlogLevel() slog.Level { return slogLevel(C.int32_t(o.Level)) }

// HTTPOperationEnd waits up to timeout for the operation started names to
// end; Ended is false while it still runs.
func (e *Engine) HTTPOperationEnd(started HTTPStarted, timeout time.Duration) (HTTPOperationEnd, error) {
	var end HTTPOperationEnd
	err := e.with(func(ptr *C.wb_engine) error {
		args, free, err := cStrings(arg{"kind", started.Kind}, arg{"server_uuid", started.Server},
			arg{"backup_uuid", started.Backup})
		if err != nil {
			return err
		}
		defer free()
		var out *C.char
		var cerr *C.wb_error
		status := C.wb_http_operation_end(ptr, args[0], args[1], args[2], C.uint32_t(timeout.Milliseconds()), &out, &cerr)
		return decodeHTTP("operation end", status, cerr, takeString(out), &end)
	})
	return end, err
}

// HTTPStream is where an event stream stands: its next event comes after Seq.
type HTTPStream struct {
	Server string `json:"server"`
	Backup string `json:"backup"`
	Seq    uint64 `json:"seq"`
}

// HTTPEvent is one event of a stream; Chunk is nil when nothing changed in
// time, and the stream ends after the event that is Done.
type HTTPEvent struct {
	Chunk *string `json:"chunk"`
	Seq   uint64  `json:"seq"`
	Done  bool    `json:"done"`
}

// HandleHTTP answers one request of the node's HTTP API (docs/api.md
// sections 1-5): routing, 404 and 405, Wings' messages, the engine call and
// the rendered answer are the library's. It blocks as long as the answer
// needs (a create with "wait": true, a synchronous restore).
func (e *Engine) HandleHTTP(req HTTPRequest) (HTTPResponse, error) {
	var resp HTTPResponse
	err := e.with(func(ptr *C.wb_engine) error {
		// A NUL byte (%00) in a path matches no route; as U+FFFD it is answered so.
		path, query := strings.ReplaceAll(req.Path, "\x00", "\uFFFD"), strings.ReplaceAll(req.Query, "\x00", "\uFFFD")
		args, free, err := cStrings(arg{"method", req.Method}, arg{"path", path}, arg{"query", query})
		if err != nil {
			return err
		}
		defer free()
		var body *C.uint8_t
		if len(req.Body) > 0 {
			p := C.CBytes(req.Body)
			defer C.free(p)
			body = (*C.uint8_t)(p)
		}
		flags := C.uint32_t(req.BodyError)
		if req.AsyncRestore {
			flags |= C.WB_HTTP_ASYNC_RESTORE
		}
		var out *C.char
		var cerr *C.wb_error
		status := C.wb_http_handle(ptr, args[0], args[1], args[2], body, C.size_t(len(req.Body)), flags, &out, &cerr)
		return decodeHTTP("HTTP answer", status, cerr, takeString(out), &resp)
	})
	return resp, err
}

// NextHTTPEvent waits up to timeout for the next event of a stream
// HandleHTTP began, after afterSeq; ErrNotFound once the backup is gone.
func (e *Engine) NextHTTPEvent(stream HTTPStream, timeout time.Duration) (HTTPEvent, error) {
	var event HTTPEvent
	err := e.with(func(ptr *C.wb_engine) error {
		args, free, err := cStrings(arg{"server_uuid", stream.Server}, arg{"backup_uuid", stream.Backup})
		if err != nil {
			return err
		}
		defer free()
		var out *C.char
		var cerr *C.wb_error
		status := C.wb_http_next_event(ptr, args[0], args[1], C.uint64_t(stream.Seq),
			C.uint32_t(timeout.Milliseconds()), &out, &cerr)
		return decodeHTTP("event", status, cerr, takeString(out), &event)
	})
	return event, err
}

func decodeHTTP(what string, status C.int32_t, cerr *C.wb_error, raw []byte, v any) error {
	if status != C.WB_OK {
		return takeError(status, cerr)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &Error{Status: StatusInternal, Message: fmt.Sprintf("the library returned an unreadable %s: %v", what, err)}
	}
	return nil
}
