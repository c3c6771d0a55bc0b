package wingsbackup_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
	call, count := stub.last("/api/remote/backups/" + backup + "/restore")
	if count != 1 || call.body["successful"] != true {
		t.Errorf("restore report %+v (%d)", call, count)
	}

	// Nothing left to send.
	if pending, err := n.engine.SendPendingReports(context.Background()); err != nil || pending.Sent != 0 {
		t.Errorf("second send: %+v %v", pending, err)
	}
}
