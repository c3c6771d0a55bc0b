package wingsbackup

/*
#include "bridge.h"
*/
import "C"

import (
	"context"
	"log/slog"
	"runtime/cgo"
	"sync"
)

// logSlot holds the cgo.Handle of the engine's *slog.Logger (0: none). It
// is separate from Engine so that the engine's cleanup can release it.
type logSlot struct {
	mu     sync.Mutex
	handle cgo.Handle
}

// swap installs h and deletes the previous handle; the library must no
// longer be able to call it (wb_engine_set_logger or wb_engine_free returned).
func (s *logSlot) swap(h cgo.Handle) {
	old := s.handle
	s.handle = h
	if old != 0 {
		old.Delete()
	}
}

// SetLogger sends the engine's log messages to l (nil: nowhere, the
// default): every retry of a Panel call at WARN as it happens (with the
// attempt number, and the URL without credentials or query string),
// reports parked in .pending, and a few events at INFO. Each message is
// logged with its text as the record's message and the attribute
// component=wings_backup. The logger may be called from any of the
// engine's threads, including its reporter thread, until the next SetLogger
// or Close returns.
func (e *Engine) SetLogger(l *slog.Logger) error {
	return e.with(func(ptr *C.wb_engine) error {
		e.log.mu.Lock()
		defer e.log.mu.Unlock()
		var h cgo.Handle
		if l != nil {
			h = cgo.NewHandle(l)
		}
		var cerr *C.wb_error
		if status := C.wbgo_engine_set_logger(ptr, C.uintptr_t(h), &cerr); status != C.WB_OK {
			if h != 0 {
				h.Delete()
			}
			return takeError(status, cerr)
		}
		e.log.swap(h)
		return nil
	})
}

// slogLevel maps a WB_LOG_* level to slog's.
func slogLevel(level C.int32_t) slog.Level {
	switch level {
	case C.WB_LOG_DEBUG:
		return slog.LevelDebug
	case C.WB_LOG_INFO:
		return slog.LevelInfo
	case C.WB_LOG_WARN:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// slogLevelOf is slogLevel for the tests (which cannot use cgo).
func slogLevelOf(level int32) slog.Level { return slogLevel(C.int32_t(level)) }

//export wbGoLog
func wbGoLog(handle C.uintptr_t, level C.int32_t, message *C.char) {
	l, ok := cgo.Handle(handle).Value().(*slog.Logger)
	if !ok {
		return
	}
	l.Log(context.Background(), slogLevel(level), C.GoString(message), "component", "wings_backup")
}
