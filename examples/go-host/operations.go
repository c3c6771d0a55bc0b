package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// operations tracks the backups and restores the host has accepted and not
// yet finished. The library guards what it runs, but a backup waiting for a
// slot is invisible to it, so the host answers 409 for those itself.
type operations struct {
	engine *wingsbackup.Engine
	log    *slog.Logger
	// ctx is cancelled at shutdown; every operation's context derives from it.
	ctx context.Context

	mu      sync.Mutex
	servers map[string]*operation // server uuid -> the operation holding it
	backups map[string]*operation // backup uuid -> its backup operation

	// slots bounds the backups running at once; more wait, accepted.
	slots chan struct{}
	wg    sync.WaitGroup
}

type operation struct {
	ops    *operations
	kind   string // "backup" or "restore"
	server string
	backup string // lower case
	ctx    context.Context
	cancel context.CancelFunc
	// started is closed once the library reports PhaseStarted.
	started     chan struct{}
	startedOnce sync.Once
	// done is closed when the operation has ended; err is its result.
	done chan struct{}
	err  error

	// Owned by the operation's goroutine (progress runs on it too).
	slot        bool // holds one of ops.slots
	freed       bool // server and slot given back
	bytes       uint64
	panelReport string
}

func newOperations(ctx context.Context, engine *wingsbackup.Engine, log *slog.Logger, maxBackups int) *operations {
	return &operations{
		engine:  engine,
		log:     log,
		ctx:     ctx,
		servers: map[string]*operation{},
		backups: map[string]*operation{},
		slots:   make(chan struct{}, maxBackups),
	}
}

func conflict(msg string) error {
	return &wingsbackup.Error{Status: wingsbackup.StatusConflict, Message: msg}
}

// reserve registers an operation on server (and backup uuid, for a
// backup), or fails with a conflict.
func (o *operations) reserve(kind, server, backup string) (*operation, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ctx.Err() != nil {
		return nil, &wingsbackup.Error{Status: wingsbackup.StatusCancelled, Message: "The node is shutting down."}
	}
	if kind == "backup" {
		if _, ok := o.backups[backup]; ok {
			return nil, conflict("A backup with this uuid is already running.")
		}
	}
	if cur, ok := o.servers[server]; ok {
		return nil, conflict("Another " + cur.kind + " is already running for this server.")
	}
	ctx, cancel := context.WithCancel(o.ctx)
	op := &operation{
		ops: o, kind: kind, server: server, backup: backup,
		ctx: ctx, cancel: cancel,
		started: make(chan struct{}), done: make(chan struct{}),
	}
	o.servers[server] = op
	if kind == "backup" {
		o.backups[backup] = op
	}
	o.wg.Add(1)
	return op, nil
}

// free gives back the server and the backup slot. The library lets go of
// the server before it tells the Panel (PhaseReport), and so does the host:
// a slow Panel must not keep a server busy.
func (op *operation) free() {
	if op.freed {
		return
	}
	op.freed = true
	o := op.ops
	o.mu.Lock()
	if o.servers[op.server] == op {
		delete(o.servers, op.server)
	}
	o.mu.Unlock()
	if op.slot {
		<-o.slots
	}
}

// finish ends the operation: everything it held is given back.
func (op *operation) finish() {
	op.free()
	o := op.ops
	o.mu.Lock()
	if o.backups[op.backup] == op {
		delete(o.backups, op.backup)
	}
	o.mu.Unlock()
	op.cancel()
	o.wg.Done()
}

// runningBackup returns the accepted, unfinished backup with this uuid.
func (o *operations) runningBackup(backup string) *operation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.backups[backup]
}

// progress is the progress func of op's library call; it runs on the
// operation's goroutine.
func (op *operation) progress(p wingsbackup.Progress) bool {
	switch p.Phase {
	case wingsbackup.PhaseStarted:
		op.startedOnce.Do(func() { close(op.started) })
	case wingsbackup.PhaseExtract:
		op.bytes = p.BytesDone
	case wingsbackup.PhaseReport:
		op.free()
	}
	return true
}

// start runs work for op in the background. A backup needs one of the
// slots: if none is free it waits for one, and start returns at once (the
// request is accepted, queued). Otherwise start returns once the library
// has accepted the call (nil) or the call has failed before that (its
// error).
func (o *operations) start(op *operation, work func(op *operation) error) error {
	needSlot := op.kind == "backup"
	haveSlot := false
	if needSlot {
		select {
		case o.slots <- struct{}{}:
			haveSlot = true
		default:
		}
	}
	began := time.Now()
	go func() {
		defer close(op.done)
		defer op.finish()
		op.slot = haveSlot
		if needSlot && !haveSlot {
			select {
			case o.slots <- struct{}{}:
				op.slot = true
			case <-op.ctx.Done():
				// Cancelled while waiting: the call below sees the done
				// context and fails at once, so the library still learns
				// of (and reports) the end of this backup.
			}
		}
		op.err = work(op)
		o.logFinished(op, time.Since(began))
	}()
	if needSlot && !haveSlot {
		return nil
	}
	select {
	case <-op.started:
		return nil
	case <-op.done:
		// started and done may both be ready: started wins.
		select {
		case <-op.started:
			return nil
		default:
			return op.err
		}
	}
}

// background runs f (housekeeping such as re-sending parked Panel reports)
// with the operations' context; shutdown waits for it.
func (o *operations) background(f func(ctx context.Context)) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		f(o.ctx)
	}()
}

func (o *operations) logFinished(op *operation, d time.Duration) {
	attrs := []any{"server", op.server, "bytes", op.bytes, "duration", d.Round(time.Millisecond)}
	if op.backup != "" {
		attrs = append(attrs, "backup", op.backup)
	}
	if op.panelReport != "" {
		attrs = append(attrs, "panel_report", op.panelReport)
	}
	if op.err == nil {
		o.log.Info(op.kind+" finished", append(attrs, "outcome", "ok")...)
		return
	}
	outcome := "failed"
	var e *wingsbackup.Error
	if errors.As(op.err, &e) {
		outcome = e.Status.String()
	}
	o.log.Warn(op.kind+" finished", append(attrs, "outcome", outcome, "error", op.err.Error())...)
}

// shutdown cancels every operation and waits up to timeout for them to end.
func (o *operations) shutdown(cancel context.CancelFunc, timeout time.Duration) bool {
	cancel()
	ended := make(chan struct{})
	go func() {
		o.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
		return true
	case <-time.After(timeout):
		return false
	}
}
