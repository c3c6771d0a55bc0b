package main

import (
	"context"
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

// started is called once the library has accepted a call a request
// (begun then) started: it logs the call's end as the library words it.
func (o *operations) started(st wingsbackup.HTTPStarted, began time.Time) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			end, err := o.engine.HTTPOperationEnd(st, time.Second)
			if err != nil {
				o.log.Warn(st.Kind+" finished", "server", st.Server, "backup", st.Backup, "error", err)
				return
			}
			if end.Ended {
				attrs := make([]any, 0, 2*len(end.Fields)+2)
				for _, f := range end.Fields {
					attrs = append(attrs, f[0], f[1])
				}
				attrs = append(attrs, "duration", time.Since(began).Round(time.Millisecond))
				o.log.Log(context.Background(), end.SlogLevel(), end.Message, attrs...)
				return
			}
		}
	}()
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
