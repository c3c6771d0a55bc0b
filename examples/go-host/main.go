// Command go-host serves the Wings backup API over libwings_backup: the
// engine does the work, this host speaks HTTP (docs/api.md sections 1-5).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// shutdownGrace bounds how long a signal waits for requests and operations.
const shutdownGrace = 30 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	opts, err := parseOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "go-host: %v\n", err)
		return 2
	}
	if opts.version {
		fmt.Fprintln(stdout, versionLine(programName(os.Args[0]), wingsbackup.Version()))
		return 0
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	logStartup(log, opts)
	if err := prepareDirectories(log, opts); err != nil {
		fmt.Fprintf(stderr, "go-host: %v\n", err)
		return 1
	}
	engine, err := wingsbackup.NewEngineFromJSON(opts.Engine)
	if err != nil {
		fmt.Fprintf(stderr, "go-host: starting the engine: %v\n", err)
		return 1
	}
	// The engine's own log (Panel retries at WARN as they happen, reports
	// parked for later) joins the host's.
	if err := engine.SetLogger(log); err != nil {
		engine.Close()
		fmt.Fprintf(stderr, "go-host: setting the engine's logger: %v\n", err)
		return 1
	}

	ln, err := net.Listen("tcp", opts.Host.Listen)
	if err != nil {
		engine.Close()
		fmt.Fprintf(stderr, "go-host: %v\n", err)
		return 1
	}

	signals, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	srv := &http.Server{
		Handler: newServer(engine, log, opts.Host.Token, opts.Host.AsyncRestore),
		// A client that sends its request byte by byte is dropped once
		// these pass. ReadTimeout also ends the wait for a body; handlers
		// never tie their work to the request's context, so a synchronous
		// restore that outlasts it still finishes and answers.
		ReadHeaderTimeout: seconds(opts.Host.ReadHeaderTimeoutS),
		ReadTimeout:       seconds(opts.Host.ReadTimeoutS),
		IdleTimeout:       2 * time.Minute,
		// The Python host's server (waitress) refuses headers over 256 KiB;
		// both hosts draw the line at the same place.
		MaxHeaderBytes: 256 << 10,
		// "OPTIONS *" goes through authentication like any request (it
		// would be a 200 to anyone otherwise).
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Reports a crash or a Panel outage left parked are sent again (the
	// library logs what it sent).
	if err := engine.ResendParkedReports(); err != nil {
		log.Warn("sending parked Panel reports", "error", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "library", wingsbackup.Version(),
		"deflate", wingsbackup.DeflateBackend(), "panel", opts.engine.Panel != nil, "async_restore", opts.Host.AsyncRestore)

	select {
	case err := <-served:
		log.Error("serving stopped", "error", err)
		stopWork(engine, shutdownGrace)
		return 1
	case <-signals.Done():
	}
	log.Info("shutting down")
	stopSignals()

	// Stop accepting at once; cancel the work (the library removes partial
	// archives and keeps servers' files as they were); wait, bounded.
	deadline, cancelDeadline := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancelDeadline()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(deadline) }()
	if stopWork(engine, shutdownGrace) {
		// Close waits for calls still running, so only once they are over.
		engine.Close()
	} else {
		log.Warn("operations still running at exit")
	}
	if err := <-shut; err != nil {
		log.Warn("requests still open at exit", "error", err)
	}
	log.Info("stopped")
	return 0
}

// stopWork has the library cancel every call and its background work (and
// refuse new calls), and waits up to timeout for them to end (and for the
// lines it logs when operations end).
func stopWork(engine *wingsbackup.Engine, timeout time.Duration) bool {
	engine.CancelAll()
	return engine.WaitIdle(timeout)
}
