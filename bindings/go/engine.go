package wingsbackup

/*
#include <stdlib.h>
#include "bridge.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Engine is one node's backup engine: its configuration and the state of
// its running operations. Its methods may be called from any number of
// goroutines at once; operations on different servers run in parallel, and
// a second backup or restore of a busy server fails at once with
// ErrConflict.
type Engine struct {
	// mu guards ptr and active; idle is signalled when active drops to 0,
	// so Close never frees the engine under a running call.
	mu      sync.Mutex
	idle    *sync.Cond
	ptr     *C.wb_engine
	active  int
	cleanup runtime.Cleanup
	// log is the logger of SetLogger.
	log *logSlot
}

// NewEngine creates an engine from a typed configuration.
func NewEngine(cfg Config) (*Engine, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("wingsbackup: encoding the configuration: %w", err)
	}
	return NewEngineFromJSON(raw)
}

// NewEngineFromJSON creates an engine from the library's JSON configuration
// (see Config for the keys). Unknown or ill-typed keys are ErrInvalidArgument
// errors naming the key. Creating an engine removes abandoned temporary
// archives and finishes or undoes restores that a crash interrupted.
func NewEngineFromJSON(config []byte) (*Engine, error) {
	if err := checkABI(); err != nil {
		return nil, err
	}
	cfg, err := cString("config", config)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cfg))

	var ptr *C.wb_engine
	var cerr *C.wb_error
	if status := C.wb_engine_new(cfg, &ptr, &cerr); status != C.WB_OK {
		return nil, takeError(status, cerr)
	}
	e := &Engine{ptr: ptr, log: &logSlot{}}
	e.idle = sync.NewCond(&e.mu)
	// The safety net for an Engine that is dropped without Close. It gets
	// the C pointer and the logger slot, not e, or e would never become
	// unreachable.
	e.cleanup = runtime.AddCleanup(e, func(o owned) {
		C.wb_engine_free(o.ptr)
		o.log.mu.Lock()
		o.log.swap(0)
		o.log.mu.Unlock()
	}, owned{ptr, e.log})
	return e, nil
}

// Close frees the engine. Calls made after Close has begun fail with
// ErrClosed; Close waits for the calls still running (cancel their
// contexts first to make that quick), so it must not be called from a
// progress func. Closing twice is a no-op.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ptr := e.ptr
	if ptr == nil {
		return nil
	}
	e.ptr = nil
	for e.active > 0 {
		e.idle.Wait()
	}
	e.cleanup.Stop()
	// Freeing stops the reporter thread (parking undelivered restore
	// reports); the logger is released only once nothing can call it.
	C.wb_engine_free(ptr)
	e.log.mu.Lock()
	e.log.swap(0)
	e.log.mu.Unlock()
	return nil
}

// owned is what an Engine's cleanup frees.
type owned struct {
	ptr *C.wb_engine
	log *logSlot
}

// call runs f, a library call that answers only a status, on the engine
// with args as C strings; a status other than WB_OK becomes the error.
func (e *Engine) call(f func(ptr *C.wb_engine, args []*C.char, cerr **C.wb_error) C.int32_t, args ...arg) error {
	return e.with(func(ptr *C.wb_engine) error {
		cargs, free, err := cStrings(args...)
		if err != nil {
			return err
		}
		defer free()
		var cerr *C.wb_error
		if status := f(ptr, cargs, &cerr); status != C.WB_OK {
			return takeError(status, cerr)
		}
		return nil
	})
}

// callJSON runs f, a library call that answers a status and a JSON text,
// on the engine with args as C strings; it returns the text, or the error
// a status other than WB_OK becomes.
func (e *Engine) callJSON(f func(ptr *C.wb_engine, args []*C.char, out **C.char, cerr **C.wb_error) C.int32_t, args ...arg) ([]byte, error) {
	var raw []byte
	err := e.with(func(ptr *C.wb_engine) error {
		cargs, free, err := cStrings(args...)
		if err != nil {
			return err
		}
		defer free()
		var out *C.char
		var cerr *C.wb_error
		status := f(ptr, cargs, &out, &cerr)
		raw = takeString(out)
		if status != C.WB_OK {
			return takeError(status, cerr)
		}
		return nil
	})
	return raw, err
}

// with runs f with the engine pointer, or fails with ErrClosed.
func (e *Engine) with(f func(ptr *C.wb_engine) error) error {
	e.mu.Lock()
	ptr := e.ptr
	if ptr == nil {
		e.mu.Unlock()
		return ErrClosed
	}
	e.active++
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.active--
		if e.active == 0 {
			e.idle.Broadcast()
		}
		e.mu.Unlock()
	}()

	err := f(ptr)
	// e owns ptr: it must stay reachable (its cleanup would free ptr)
	// until the library is done with it.
	runtime.KeepAlive(e)
	return err
}

// Details is the result of a backup: the Panel's status body (docs/api.md
// section 6.3) plus what the archive saw change or left out.
type Details struct {
	Checksum     string `json:"checksum"`
	ChecksumType string `json:"checksum_type"`
	Size         int64  `json:"size"`
	Successful   bool   `json:"successful"`
	// Parts are the uploaded S3 parts; nil for a local backup.
	Parts []Part `json:"parts"`
	// Files is the number of regular files archived.
	Files int64 `json:"files"`
	// Changed lists files that changed while they were read.
	Changed []string `json:"changed"`
	// Skipped lists entries left out (sockets, devices, vanished files).
	Skipped []Skipped `json:"skipped"`
	// ReusedMembers and ReusedBytes are the gzip members, and their bytes,
	// copied unchanged from the server's previous local archive.
	ReusedMembers int64 `json:"reused_members"`
	ReusedBytes   int64 `json:"reused_bytes"`
	// PanelReport says what became of the report to the Panel, when one is
	// configured: "sent", "rejected: ..." or "pending: ..." (parked on disk
	// and sent again by SendPendingReports).
	PanelReport string `json:"panel_report,omitempty"`

	// Raw is the JSON the library returned, with any field this type does
	// not know.
	Raw json.RawMessage `json:"-"`
}

// Part is one uploaded S3 part.
type Part struct {
	ETag       string `json:"etag"`
	PartNumber int    `json:"part_number"`
}

// Skipped is an entry a backup left out, and why.
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// CheckCreate validates a create request (the body of
// POST /api/servers/:uuid/backup) without starting it: ErrInvalidArgument
// for a bad body, UUID or adapter, ErrNotFound for an unknown server,
// ErrConflict for a backup uuid that exists or runs or a busy server. It
// reserves nothing: CreateBackup checks again.
func (e *Engine) CheckCreate(serverUUID string, requestJSON []byte) error {
	return e.call(func(ptr *C.wb_engine, args []*C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backup_create_check(ptr, args[0], args[1], cerr)
	}, arg{"server_uuid", serverUUID}, arg{"request_json", string(requestJSON)})
}

// CreateBackup backs up server serverUUID as the request
// {"adapter","uuid","ignore"} says. It blocks until the archive is written
// (for s3, uploaded) and, with a Panel configured, reported. The first
// progress report (PhaseStarted) is the moment the request is accepted for
// good. progress may be nil; returning false from it stops the call with
// ErrCancelled, as does cancelling ctx. Before any file is read, the
// archive's size is estimated; when the backup directory has less room
// free, it fails with ErrQuota (and the Panel is told). A request with
// "dry_run": true is ErrInvalidArgument: see DryRun.
func (e *Engine) CreateBackup(ctx context.Context, serverUUID string, requestJSON []byte, progress func(Progress) bool) (Details, error) {
	var details Details
	err := e.with(func(ptr *C.wb_engine) error {
		args, free, err := cStrings(arg{"server_uuid", serverUUID}, arg{"request_json", string(requestJSON)})
		if err != nil {
			return err
		}
		defer free()
		var out *C.char
		err = runLong(ctx, progress, func(h C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t {
			return C.wbgo_backup_create(ptr, args[0], args[1], h, cancel, &out, cerr)
		})
		raw := takeString(out)
		if err != nil {
			return err
		}
		return decodeResult("backup details", raw, &details)
	})
	return details, err
}

// DryRunReport is the result of DryRun: what a backup would hold, from a
// walk that reads no file data. Ignored lists the first 1,000 paths the
// ignore rules leave out (an ignored directory is one path: its contents
// are not walked), Skipped the first 100 entries a backup would leave out
// for another reason; the counts are complete.
type DryRunReport struct {
	// Entries the archive would hold (files, directories, links, FIFOs).
	Entries int64 `json:"entries"`
	// Files is the number of regular files whose data it would hold.
	Files int64 `json:"files"`
	// Bytes of file data.
	Bytes int64 `json:"bytes"`
	// EstimatedSize is the estimate of the archive's size, the one the
	// space check of CreateBackup compares with the free space.
	EstimatedSize int64     `json:"estimated_size"`
	Ignored       []string  `json:"ignored"`
	IgnoredCount  int64     `json:"ignored_count"`
	Skipped       []Skipped `json:"skipped"`
	SkippedCount  int64     `json:"skipped_count"`

	Raw json.RawMessage `json:"-"`
}

func (r *DryRunReport) setRaw(raw []byte) { r.Raw = raw }

// DryRun answers what CreateBackup with the same request would hold,
// without making it: the walk of a backup with the same ignore rules,
// reading no file data. Nothing is written, the Panel is not called, and
// the call neither holds the server nor waits for a backup slot.
// Cancelling ctx stops the walk (ErrCancelled).
func (e *Engine) DryRun(ctx context.Context, serverUUID string, requestJSON []byte) (DryRunReport, error) {
	var report DryRunReport
	err := e.with(func(ptr *C.wb_engine) error {
		args, free, err := cStrings(arg{"server_uuid", serverUUID}, arg{"request_json", string(requestJSON)})
		if err != nil {
			return err
		}
		defer free()
		var out *C.char
		err = runLong(ctx, nil, func(_ C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t {
			return C.wb_backup_dry_run(ptr, args[0], args[1], cancel, &out, cerr)
		})
		raw := takeString(out)
		if err != nil {
			return err
		}
		return decodeResult("dry run report", raw, &report)
	})
	return report, err
}

// CheckRestore validates a restore request (the body of
// POST /api/servers/:uuid/backup/:id/restore) without starting it:
// ErrInvalidArgument for a bad body, adapter, backup UUID or download URL,
// ErrNotFound for an unknown server or a missing local archive, ErrConflict
// for a busy server.
func (e *Engine) CheckRestore(serverUUID, backupUUID string, requestJSON []byte) error {
	return e.call(func(ptr *C.wb_engine, args []*C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backup_restore_check(ptr, args[0], args[1], args[2], cerr)
	}, arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID}, arg{"request_json", string(requestJSON)})
}

// RestoreBackup restores backup backupUUID into server serverUUID as the
// request {"adapter","truncate_directory","download_url","paths"} says
// (RestoreRequest builds one; with Paths, only those entries are restored).
// It blocks until done; if it fails or is cancelled, the server's files are
// as they were before the call.
func (e *Engine) RestoreBackup(ctx context.Context, serverUUID, backupUUID string, requestJSON []byte, progress func(Progress) bool) error {
	return e.with(func(ptr *C.wb_engine) error {
		args, free, err := cStrings(arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID}, arg{"request_json", string(requestJSON)})
		if err != nil {
			return err
		}
		defer free()
		return runLong(ctx, progress, func(h C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t {
			return C.wbgo_backup_restore(ptr, args[0], args[1], args[2], h, cancel, cerr)
		})
	})
}

// DeleteBackup deletes the local archive of backup backupUUID (ErrNotFound
// if there is none). A backup of that uuid still being created, or waiting
// for a slot, is cancelled, its partial file removed, and the call succeeds.
// It never waits for the Panel: a backup whose archive is written and whose
// result the Panel is still being told is deleted at once.
func (e *Engine) DeleteBackup(serverUUID, backupUUID string) error {
	return e.call(func(ptr *C.wb_engine, args []*C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backup_delete(ptr, args[0], args[1], cerr)
	}, arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID})
}

// CancelAll cancels every backup and restore of the engine in progress
// (queued, running, or still telling the Panel, whose report is then parked)
// and makes new ones fail with ErrCancelled ("The node is shutting down.");
// DeleteBackup still works. For a host shutting down: each cancelled call
// returns ErrCancelled promptly. After Close it does nothing.
func (e *Engine) CancelAll() {
	_ = e.with(func(ptr *C.wb_engine) error {
		C.wb_engine_cancel_all(ptr)
		return nil
	})
}

// ResendParkedReports starts sending again, on a thread of the engine's,
// the reports SendPendingReports would send, and logs through the engine's
// logger (SetLogger) how many went and how many are still parked. CancelAll
// stops it; WaitIdle and Close wait for it. Without a Panel it does
// nothing. A host calls it once when it starts, after SetLogger.
func (e *Engine) ResendParkedReports() error {
	return e.with(func(ptr *C.wb_engine) error {
		var cerr *C.wb_error
		if status := C.wb_engine_resend_parked_reports(ptr, &cerr); status != C.WB_OK {
			return takeError(status, cerr)
		}
		return nil
	})
}

// PendingReports is the result of SendPendingReports.
type PendingReports struct {
	// Sent counts reports delivered (or settled by a final Panel answer).
	Sent int `json:"sent"`
	// Pending counts reports still parked.
	Pending int `json:"pending"`

	Raw json.RawMessage `json:"-"`
}

func (p *PendingReports) setRaw(raw []byte) { p.Raw = raw }

// SendPendingReports sends the backup status reports the Panel could not
// be given earlier (parked in <backup_directory>/.pending/), one attempt
// each with the usual retries. A host calls it when it starts, from a
// goroutine of its own since a slow Panel makes it block; cancelling ctx
// stops it. Without a Panel it does nothing.
func (e *Engine) SendPendingReports(ctx context.Context) (PendingReports, error) {
	var result PendingReports
	err := e.with(func(ptr *C.wb_engine) error {
		var out *C.char
		err := runLong(ctx, nil, func(_ C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t {
			return C.wb_engine_send_pending_reports(ptr, cancel, &out, cerr)
		})
		raw := takeString(out)
		if err != nil {
			return err
		}
		return decodeResult("pending report summary", raw, &result)
	})
	return result, err
}

// decodeResult parses a JSON result the library returned into v, which has
// a Raw field set to the text.
func decodeResult[T interface{ setRaw([]byte) }](what string, raw []byte, v T) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return &Error{Status: StatusInternal, Message: fmt.Sprintf("the library returned unreadable %s: %v", what, err)}
	}
	v.setRaw(raw)
	return nil
}

func (d *Details) setRaw(raw []byte) { d.Raw = raw }
