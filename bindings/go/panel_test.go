package wingsbackup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// panelStub records the Panel callbacks it receives; while failing is set
// it answers 500.
type panelStub struct {
	failing atomic.Bool
	mu      sync.Mutex
	calls   []panelCall
}

type panelCall struct {
	path, auth string
	body       map[string]any
}

func (p *panelStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	json.Unmarshal(raw, &body)
	p.mu.Lock()
	p.calls = append(p.calls, panelCall{r.URL.Path, r.Header.Get("Authorization"), body})
	p.mu.Unlock()
	if p.failing.Load() {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (p *panelStub) last(path string) (panelCall, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var found panelCall
	n := 0
	for _, c := range p.calls {
		if c.path == path {
			found, n = c, n+1
		}
	}
	return found, n
}

func TestPanelReportsAndPending(t *testing.T) {
	stub := &panelStub{}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	noRetry := uint64(0)
	n := newNode(t, wingsbackup.Config{Panel: &wingsbackup.PanelConfig{
		URL: srv.URL, TokenID: "id", Token: "secret", ReportRetrySeconds: &noRetry,
	}})
	server := n.server(t)

	// The Panel is down: the backup still succeeds, its archive stays, and
	// the report is parked.
	stub.failing.Store(true)
	backup := newUUID()
	details, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(details.PanelReport, "pending") {
		t.Errorf("panel_report %q, want pending", details.PanelReport)
	}
	if _, err := os.Stat(n.archive(backup)); err != nil {
		t.Fatalf("archive gone after a failed report: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.backups, ".pending", backup+".json")); err != nil {
		t.Fatalf("no parked report: %v", err)
	}

	stub.failing.Store(false)
	pending, err := n.engine.SendPendingReports(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if pending.Sent != 1 || pending.Pending != 0 {
		t.Errorf("pending reports %+v", pending)
	}
	call, _ := stub.last("/api/remote/backups/" + backup)
	if call.auth != "Bearer id.secret" || call.body["checksum"] != details.Checksum || call.body["successful"] != true {
		t.Errorf("report %+v", call)
	}

	if err := n.engine.RestoreBackup(context.Background(), server, backup, restoreBody(true), nil); err != nil {
		t.Fatal(err)
	}
	// The restore report goes out in the background, once.
	restorePath := "/api/remote/backups/" + backup + "/restore"
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, count := stub.last(restorePath); count > 0 {
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	call, count := stub.last(restorePath)
	if count != 1 || call.body["successful"] != true {
		t.Errorf("restore report %+v (%d)", call, count)
	}

	// Nothing left to send.
	if pending, err := n.engine.SendPendingReports(context.Background()); err != nil || pending.Sent != 0 {
		t.Errorf("second send: %+v %v", pending, err)
	}

	// A report parked again is sent by the engine's own thread, which logs it.
	stub.failing.Store(true)
	second := newUUID()
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(second), nil); err != nil {
		t.Fatal(err)
	}
	stub.failing.Store(false)
	var logged lockedBuffer
	if err := n.engine.SetLogger(slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatal(err)
	}
	if err := n.engine.ResendParkedReports(); err != nil {
		t.Fatal(err)
	}
	if !n.engine.WaitIdle(30 * time.Second) {
		t.Fatal("the parked reports were not sent within 30s")
	}
	// The one the Panel refused, and the one sent again.
	if call, count := stub.last("/api/remote/backups/" + second); count != 2 || call.body["successful"] != true {
		t.Errorf("%d reports of the parked backup, want 2; last %+v", count, call)
	}
	if _, err := os.Stat(filepath.Join(n.backups, ".pending", second+".json")); !os.IsNotExist(err) {
		t.Errorf("the report is still parked: %v", err)
	}
	if text := logged.String(); !strings.Contains(text, `msg="parked Panel reports sent=1 still_pending=0"`) {
		t.Errorf("log: %s", text)
	}
}

// lockedBuffer is an io.Writer for a slog handler written to from the
// engine's threads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRestoreAnswersAtOnceAndRetriesAreLogged: with the Panel down, a
// restore returns as soon as the files are in place; its report is retried
// in the background, each retry logged at WARN through the *slog.Logger
// of SetLogger (URL without credentials, attempt number), and Close parks
// it in .pending.
func TestRestoreAnswersAtOnceAndRetriesAreLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	retry := uint64(600)
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	backup := newUUID()
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), nil); err != nil {
		t.Fatal(err)
	}
	n.engine.Close()
	engine, err := wingsbackup.NewEngine(wingsbackup.Config{
		DataDirectory: n.data, BackupDirectory: n.backups,
		Panel: &wingsbackup.PanelConfig{
			URL: fmt.Sprintf("http://user:hunter2@127.0.0.1:%d", port), TokenID: "id", Token: "secret",
			ReportRetrySeconds: &retry,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	var out lockedBuffer
	if err := engine.SetLogger(slog.New(slog.NewTextHandler(&out, nil))); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	if err := engine.RestoreBackup(context.Background(), server, backup, restoreBody(true), nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("the restore took %v with the Panel down", took)
	}
	want := fmt.Sprintf("POST http://REDACTED@127.0.0.1:%d/api/remote/backups/%s/restore attempt 1 failed", port, backup)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !strings.Contains(out.String(), want); {
		time.Sleep(20 * time.Millisecond)
	}
	logged := out.String()
	if !strings.Contains(logged, want) || !strings.Contains(logged, "level=WARN") {
		t.Fatalf("no WARN record of the first retry:\n%s", logged)
	}
	if strings.Contains(logged, "hunter2") {
		t.Errorf("the log carries the Panel's credentials:\n%s", logged)
	}

	// Close stops the reporter: the report is parked, not lost.
	if err := engine.Close(); err != nil {
		t.Fatal(err)
	}
	parked, err := os.ReadFile(filepath.Join(n.backups, ".pending", backup+".restore.json"))
	if err != nil {
		t.Fatalf("no parked restore report: %v", err)
	}
	var got struct {
		Backup string
		Body   map[string]any
	}
	if err := json.Unmarshal(parked, &got); err != nil || got.Backup != backup || got.Body["successful"] != true {
		t.Errorf("parked report %s (%v)", parked, err)
	}
	// Nothing logs after Close returned.
	after := out.String()
	time.Sleep(700 * time.Millisecond)
	if out.String() != after {
		t.Errorf("the logger was called after Close")
	}
}
