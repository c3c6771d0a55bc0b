package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// operations runs the library's long calls on goroutines of their own and
// waits for them at shutdown. The node's policy (backups running at once,
// the queue, 409s, cancelling on delete) is the library's.
type operations struct {
	engine *wingsbackup.Engine
	log    *slog.Logger
	ctx    context.Context // cancelled at shutdown, for background work
	wg     sync.WaitGroup
	active atomic.Int32 // calls not yet returned
}

type operation struct {
	kind, server, backup string
	// started is closed once the library reports PhaseStarted (accepted).
	started     chan struct{}
	startedOnce sync.Once
	// done is closed when the call has returned; err is its result.
	done        chan struct{}
	err         error
	bytes       uint64
	panelReport string
}

func newOperations(ctx context.Context, engine *wingsbackup.Engine, log *slog.Logger) *operations {
	return &operations{engine: engine, log: log, ctx: ctx}
}

// progress is the progress func of op's library call.
func (op *operation) progress(p wingsbackup.Progress) bool {
	switch p.Phase {
	case wingsbackup.PhaseStarted:
		op.startedOnce.Do(func() { close(op.started) })
	case wingsbackup.PhaseExtract:
		op.bytes = p.BytesDone
	}
	return true
}

// start runs work in the background and returns once the library has
// accepted the call (nil) or the call has failed before that (its error).
func (o *operations) start(kind, server, backup string, work func(op *operation) error) (*operation, error) {
	op := &operation{kind: kind, server: server, backup: backup,
		started: make(chan struct{}), done: make(chan struct{})}
	o.wg.Add(1)
	o.active.Add(1)
	began := time.Now()
	go func() {
		defer o.wg.Done()
		defer close(op.done)
		defer o.active.Add(-1)
		op.err = work(op)
		o.logFinished(op, time.Since(began))
	}()
	select {
	case <-op.started:
		return op, nil
	case <-op.done:
		select { // started and done may both be ready: started wins
		case <-op.started:
			return op, nil
		default:
			return op, op.err
		}
	}
}

// background runs f (re-sending parked Panel reports) with the
// operations' context; shutdown waits for it.
func (o *operations) background(f func(ctx context.Context)) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		f(o.ctx)
	}()
}

func (o *operations) logFinished(op *operation, d time.Duration) {
	attrs := []any{"server", op.server, "backup", op.backup, "bytes", op.bytes, "duration", d.Round(time.Millisecond)}
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

// shutdown has the library cancel every call (and refuse new ones), stops
// background work, and waits up to timeout for all of it to end.
func (o *operations) shutdown(cancel context.CancelFunc, timeout time.Duration) bool {
	o.engine.CancelAll()
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
