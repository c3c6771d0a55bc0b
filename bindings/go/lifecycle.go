package wingsbackup

/*
#include <stdlib.h>
#include "wings_backup.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"time"
)

// BackupState is what the engine knows of a backup: its newest operation
// (a create, or a restore of it), or else its local archive.
type BackupState struct {
	UUID   string `json:"uuid"`
	Server string `json:"server"`
	// Kind is "create" or "restore".
	Kind    string `json:"kind"`
	Adapter string `json:"adapter"`
	// State is "queued", "running", "succeeded", "failed" or "cancelled".
	State string `json:"state"`
	// Phase is the last progress phase: "started", "archive", ..., "done".
	Phase      string `json:"phase"`
	BytesDone  uint64 `json:"bytes_done"`
	BytesTotal uint64 `json:"bytes_total"`
	Files      uint64 `json:"files"`
	Size       uint64 `json:"size"`
	Checksum   string `json:"checksum"`
	// Error is the message of a failed or cancelled operation, and
	// ErrorStatus its status.
	Error       *string    `json:"error"`
	ErrorStatus *Status    `json:"error_status"`
	StartedAt   time.Time  `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	PanelReport *string    `json:"panel_report"`
	// Seq grows at each change (see WaitBackup).
	Seq uint64 `json:"seq"`

	Raw json.RawMessage `json:"-"`
}

func (s *BackupState) setRaw(raw []byte) { s.Raw = raw }

// Finished reports whether the operation has ended.
func (s BackupState) Finished() bool {
	return s.State == "succeeded" || s.State == "failed" || s.State == "cancelled"
}

// Err is the error a failed or cancelled operation ended with, else nil.
func (s BackupState) Err() error {
	if s.ErrorStatus == nil {
		return nil
	}
	msg := ""
	if s.Error != nil {
		msg = *s.Error
	}
	return &Error{Status: *s.ErrorStatus, Message: msg}
}

// StartBackup starts a backup like CreateBackup, on a thread of the
// library's, and returns once it is accepted (nil: BackupStatus knows it
// from now on) or has failed before that (the error CreateBackup would
// give). Its progress and end are read with BackupStatus and WaitBackup;
// CancelBackup, DeleteBackup and CancelAll stop it.
func (e *Engine) StartBackup(serverUUID string, requestJSON []byte) error {
	return e.call(func(ptr *C.wb_engine, args []*C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backup_start(ptr, args[0], args[1], cerr)
	}, arg{"server_uuid", serverUUID}, arg{"request_json", string(requestJSON)})
}

// StartRestore starts a restore like RestoreBackup, on a thread of the
// library's, as StartBackup does; its outcome is the ended state WaitBackup
// returns (State.Err()).
func (e *Engine) StartRestore(serverUUID, backupUUID string, requestJSON []byte) error {
	return e.call(func(ptr *C.wb_engine, args []*C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_restore_start(ptr, args[0], args[1], args[2], cerr)
	}, arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID}, arg{"request_json", string(requestJSON)})
}

// BackupStatus returns the state of backup backupUUID of server
// serverUUID; ErrNotFound when the engine knows neither an operation nor a
// local archive of it.
func (e *Engine) BackupStatus(serverUUID, backupUUID string) (BackupState, error) {
	var state BackupState
	raw, err := e.callJSON(func(ptr *C.wb_engine, args []*C.char, out **C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backup_status(ptr, args[0], args[1], out, cerr)
	}, arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID})
	if err == nil {
		err = decodeResult("backup state", raw, &state)
	}
	return state, err
}

// waitSlice bounds one library wait, so that a cancelled ctx and Close are
// noticed promptly.
const waitSlice = 500 * time.Millisecond

// WaitBackup waits until the state of the backup changes past afterSeq
// (its Seq), its operation ends, or ctx is done (then ctx's error), and
// returns the state. Progress wakes it at most 4 times a second. A backup
// with no operation in flight answers at once.
func (e *Engine) WaitBackup(ctx context.Context, serverUUID, backupUUID string, afterSeq uint64) (BackupState, error) {
	for {
		slice := waitSlice
		if d, ok := ctx.Deadline(); ok && time.Until(d) < slice {
			slice = max(time.Until(d), 0)
		}
		var state BackupState
		raw, err := e.callJSON(func(ptr *C.wb_engine, args []*C.char, out **C.char, cerr **C.wb_error) C.int32_t {
			return C.wb_backup_wait(ptr, args[0], args[1], C.uint64_t(afterSeq), C.uint32_t(slice.Milliseconds()), out, cerr)
		}, arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID})
		if err == nil {
			err = decodeResult("backup state", raw, &state)
		}
		if err != nil {
			return state, err
		}
		if state.Seq > afterSeq || state.Finished() {
			return state, nil
		}
		if err := ctx.Err(); err != nil {
			return state, err
		}
	}
}

// ListBackups returns the backups of server serverUUID the engine knows
// (operations in flight, and finished ones whose archives are there),
// newest first.
func (e *Engine) ListBackups(serverUUID string) ([]BackupState, error) {
	raw, err := e.callJSON(func(ptr *C.wb_engine, args []*C.char, out **C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backup_list(ptr, args[0], out, cerr)
	}, arg{"server_uuid", serverUUID})
	if err != nil {
		return nil, err
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, &Error{Status: StatusInternal, Message: "the library returned an unreadable list: " + err.Error()}
	}
	list := make([]BackupState, len(items))
	for i, item := range items {
		if err := decodeResult("backup state", item, &list[i]); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// CancelBackup cancels the queued or running create or restore of backup
// backupUUID without waiting for it; it stops within a second. ErrConflict
// when it has already ended or is a restore putting its files in place
// (phase "commit"), ErrNotFound when the engine does not know it.
func (e *Engine) CancelBackup(serverUUID, backupUUID string) error {
	return e.call(func(ptr *C.wb_engine, args []*C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backup_cancel(ptr, args[0], args[1], cerr)
	}, arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID})
}

// DeleteAllBackups removes every local archive of server serverUUID and
// cancels its queued or running creates; it returns how many backups went.
func (e *Engine) DeleteAllBackups(serverUUID string) (int, error) {
	var result struct {
		Deleted int `json:"deleted"`
	}
	raw, err := e.callJSON(func(ptr *C.wb_engine, args []*C.char, out **C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backups_delete_all(ptr, args[0], out, cerr)
	}, arg{"server_uuid", serverUUID})
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(raw, &result); err != nil {
		return 0, &Error{Status: StatusInternal, Message: "the library returned an unreadable count: " + err.Error()}
	}
	return result.Deleted, nil
}

// WaitIdle waits up to timeout for every call begun with StartBackup or
// StartRestore to end (a host shutting down, after CancelAll); true if
// they all have.
func (e *Engine) WaitIdle(timeout time.Duration) bool {
	idle := true
	_ = e.with(func(ptr *C.wb_engine) error {
		idle = C.wb_engine_wait_idle(ptr, C.uint32_t(min(timeout.Milliseconds(), 1<<31))) == 1
		return nil
	})
	return idle
}
