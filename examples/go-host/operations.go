package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// operations starts the library's long calls, which run on the library's
// own threads, logs each one when it ends, and waits for them at shutdown.
// The node's policy (backups running at once, the queue, 409s, cancelling)
// is the library's.
type operations struct {
	engine *wingsbackup.Engine
	log    *slog.Logger
	ctx    context.Context // cancelled at shutdown, for background work
	wg     sync.WaitGroup
}

func newOperations(ctx context.Context, engine *wingsbackup.Engine, log *slog.Logger) *operations {
	return &operations{engine: engine, log: log, ctx: ctx}
}

// started is called once the library has accepted a call of kind on
// backup of server (in a request that began then): it logs the call's end.
func (o *operations) started(kind, server, backup string, began time.Time) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		st, err := o.finished(context.Background(), server, backup)
		o.logFinished(kind, server, backup, st, err, time.Since(began))
	}()
}

// finished waits until the newest operation of backup has ended.
func (o *operations) finished(ctx context.Context, server, backup string) (wingsbackup.BackupState, error) {
	var st wingsbackup.BackupState
	for {
		var err error
		st, err = o.engine.WaitBackup(ctx, server, backup, st.Seq)
		if err != nil || st.Finished() {
			return st, err
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

func (o *operations) logFinished(kind, server, backup string, st wingsbackup.BackupState, err error, d time.Duration) {
	if err == nil {
		err = st.Err()
	}
	attrs := []any{"server", server, "backup", backup, "bytes", st.Size, "duration", d.Round(time.Millisecond)}
	if st.PanelReport != nil {
		attrs = append(attrs, "panel_report", *st.PanelReport)
	}
	if err == nil {
		o.log.Info(kind+" finished", append(attrs, "outcome", "ok")...)
		return
	}
	outcome := "failed"
	var e *wingsbackup.Error
	if errors.As(err, &e) {
		outcome = e.Status.String()
	}
	o.log.Warn(kind+" finished", append(attrs, "outcome", outcome, "error", err.Error())...)
}

// shutdown has the library cancel every call (and refuse new ones), stops
// background work, and waits up to timeout for all of it to end.
func (o *operations) shutdown(cancel context.CancelFunc, timeout time.Duration) bool {
	o.engine.CancelAll()
	cancel()
	began := time.Now()
	if !o.engine.WaitIdle(timeout) {
		return false
	}
	ended := make(chan struct{})
	go func() {
		o.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
		return true
	case <-time.After(max(timeout-time.Since(began), 0)):
		return false
	}
}
