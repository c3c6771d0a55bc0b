package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

const testToken = "secret-node-token"

type testHost struct {
	url     string
	data    string
	backups string
	engine  *wingsbackup.Engine
}

func newTestHost(t *testing.T, cfg wingsbackup.Config, slots int, async bool) *testHost {
	t.Helper()
	dir := t.TempDir()
	h := &testHost{data: filepath.Join(dir, "volumes"), backups: filepath.Join(dir, "backups")}
	cfg.DataDirectory, cfg.BackupDirectory, cfg.Threads = h.data, h.backups, 1
	cfg.MaxRunningBackups = slots
	engine, err := wingsbackup.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h.engine = engine
	srv := httptest.NewServer(newServer(engine, log, testToken, async))
	h.url = srv.URL
	t.Cleanup(func() {
		h.shutdown(30 * time.Second)
		srv.Close()
		engine.Close()
	})
	return h
}

func (h *testHost) shutdown(timeout time.Duration) bool { return stopWork(h.engine, timeout) }

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// server makes a server directory with a file (and, big, a large
// incompressible one so that a rate-limited backup takes seconds).
func (h *testHost) server(t *testing.T, big bool) string {
	t.Helper()
	id := newUUID()
	root := filepath.Join(h.data, id)
	if err := os.MkdirAll(filepath.Join(root, "world"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "world", "level.dat"), []byte("level"), 0o644); err != nil {
		t.Fatal(err)
	}
	if big {
		data := make([]byte, 3<<20)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(root, "big.bin"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) errorMessage(t *testing.T) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q", ct)
	}
	var body map[string]string
	if err := json.Unmarshal(r.body, &body); err != nil || body["error"] == "" {
		t.Fatalf("error body %q is not {\"error\": ...}", r.body)
	}
	return body["error"]
}

func (h *testHost) do(t *testing.T, method, path, auth string, body []byte) reply {
	t.Helper()
	req, err := http.NewRequest(method, h.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return reply{res.StatusCode, res.Header, data}
}

func (h *testHost) call(t *testing.T, method, path string, body []byte) reply {
	return h.do(t, method, path, "Bearer "+testToken, body)
}

func createBody(backup string) []byte {
	return []byte(fmt.Sprintf(`{"adapter":"wings","uuid":%q,"ignore":""}`, backup))
}

var restoreBody = []byte(`{"adapter":"wings","truncate_directory":true,"download_url":""}`)

func (h *testHost) waitArchive(t *testing.T, backup string) {
	t.Helper()
	path := filepath.Join(h.backups, backup+".tar.gz")
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(path); err == nil && h.engine.WaitIdle(0) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("archive %s did not appear", backup)
}

func TestAuth(t *testing.T) {
	h := newTestHost(t, wingsbackup.Config{}, 2, false)
	server := h.server(t, false)
	path := "/api/servers/" + server + "/backup"
	for _, auth := range []string{"", "Basic abc", "Bearer", "bearer " + testToken} {
		r := h.do(t, http.MethodPost, path, auth, createBody(newUUID()))
		if r.status != 401 || r.header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("auth %q: %d %v", auth, r.status, r.header)
		}
		if msg := r.errorMessage(t); msg != msgNoAuth {
			t.Errorf("auth %q: message %q", auth, msg)
		}
	}
	r := h.do(t, http.MethodPost, path, "Bearer wrong", createBody(newUUID()))
	if r.status != 403 || r.errorMessage(t) != msgForbidden {
		t.Errorf("wrong token: %d %s", r.status, r.body)
	}
	// Auth comes before the server lookup and the route.
	for _, p := range []string{"/api/servers/" + newUUID() + "/backup", "/nowhere"} {
		if r := h.do(t, http.MethodPost, p, "Bearer wrong", nil); r.status != 403 {
			t.Errorf("%s with a wrong token: %d", p, r.status)
		}
	}
}

func TestRouting(t *testing.T) {
	h := newTestHost(t, wingsbackup.Config{}, 2, false)
	server := h.server(t, false)
	cases := []struct {
		method, path string
		status       int
	}{
		{"POST", "/api/servers/" + newUUID() + "/backup", 404},
		{"POST", "/api/servers/not-a-uuid/backup", 404},
		{"POST", "/api/servers/../backup", 404},
		{"GET", "/", 404},
		{"POST", "/api/servers/" + server + "/backupz", 404},
		{"POST", "/api/servers/" + server + "/backups", 405},
		{"GET", "/api/servers/" + server + "/backup/" + newUUID(), 404},
		{"POST", "/api/servers/" + server + "/backup/" + newUUID() + "/cancel", 404},
		{"GET", "/api/servers/" + server + "/backup", 405},
		{"POST", "/api/servers/" + server + "/backup/" + newUUID(), 405},
		{"DELETE", "/api/servers/" + server + "/backup/", 404},
		{"DELETE", "/api/servers/" + server + "/backup/not-a-uuid", 400},
		{"DELETE", "/api/servers/" + server + "/backup/" + newUUID(), 404},
		{"POST", "/api/servers/" + server + "/backup/not-a-uuid/restore", 400},
		{"POST", "/api/servers/" + server + "/backup/" + newUUID() + "/restore", 404},
	}
	for _, c := range cases {
		r := h.call(t, c.method, c.path, []byte(`{"adapter":"wings","truncate_directory":false}`))
		if r.status != c.status {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, r.status, r.body, c.status)
			continue
		}
		r.errorMessage(t)
	}
}

func TestBodies(t *testing.T) {
	h := newTestHost(t, wingsbackup.Config{}, 2, false)
	server := h.server(t, false)
	path := "/api/servers/" + server + "/backup"
	for _, body := range []string{
		``, `{`, `[]`, `{"adapter":"wings","uuid":"` + newUUID() + `"}`,
		`{"adapter":"wings","uuid":"x","ignore":""}`,
		`{"adapter":"ftp","uuid":"` + newUUID() + `","ignore":""}`,
		`{"adapter":"wings","uuid":"` + newUUID() + `","ignore":[]}`,
	} {
		if r := h.call(t, "POST", path, []byte(body)); r.status != 400 {
			t.Errorf("body %q: %d %s", body, r.status, r.body)
		} else {
			r.errorMessage(t)
		}
	}
	big := append(createBody(newUUID()), bytes.Repeat([]byte(" "), maxBody)...)
	if r := h.call(t, "POST", path, big); r.status != 413 {
		t.Errorf("big body: %d", r.status)
	} else {
		r.errorMessage(t)
	}
	// Exactly 1 MiB is fine (unknown fields and padding are ignored).
	body := createBody(newUUID())
	body = append(body[:len(body)-1], []byte(`,"pad":"`+strings.Repeat("x", maxBody-len(body)-10)+`"}`)...)
	if len(body) > maxBody {
		t.Fatalf("test body is %d bytes", len(body))
	}
	if r := h.call(t, "POST", path, body); r.status != 202 {
		t.Errorf("1 MiB body: %d %s", r.status, r.body)
	}
}

func TestCreateRestoreDelete(t *testing.T) {
	h := newTestHost(t, wingsbackup.Config{}, 2, false)
	server := h.server(t, false)
	backup := newUUID()
	r := h.call(t, "POST", "/api/servers/"+server+"/backup", createBody(backup))
	if r.status != 202 || len(r.body) != 0 {
		t.Fatalf("create: %d %q", r.status, r.body)
	}
	h.waitArchive(t, backup)
	if r := h.call(t, "POST", "/api/servers/"+server+"/backup", createBody(backup)); r.status != 409 {
		t.Errorf("duplicate: %d %s", r.status, r.body)
	}
	level := filepath.Join(h.data, server, "world", "level.dat")
	if err := os.WriteFile(level, []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = h.call(t, "POST", "/api/servers/"+server+"/backup/"+backup+"/restore", restoreBody)
	if r.status != 204 || len(r.body) != 0 {
		t.Fatalf("restore: %d %q", r.status, r.body)
	}
	if got, _ := os.ReadFile(level); string(got) != "level" {
		t.Errorf("restored file holds %q", got)
	}
	if r := h.call(t, "DELETE", "/api/servers/"+server+"/backup/"+backup, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	r = h.call(t, "DELETE", "/api/servers/"+server+"/backup/"+backup, nil)
	if r.status != 404 || r.errorMessage(t) != "The requested backup was not found on this server." {
		t.Fatalf("second delete: %d %s", r.status, r.body)
	}
}

func TestAsyncRestore(t *testing.T) {
	h := newTestHost(t, wingsbackup.Config{}, 2, true)
	server := h.server(t, false)
	backup := newUUID()
	if r := h.call(t, "POST", "/api/servers/"+server+"/backup", createBody(backup)); r.status != 202 {
		t.Fatalf("create: %d", r.status)
	}
	h.waitArchive(t, backup)
	if r := h.call(t, "POST", "/api/servers/"+server+"/backup/"+backup+"/restore", restoreBody); r.status != 202 || len(r.body) != 0 {
		t.Fatalf("async restore: %d %q", r.status, r.body)
	}
	if r := h.call(t, "POST", "/api/servers/"+server+"/backup/"+newUUID()+"/restore", restoreBody); r.status != 404 {
		t.Fatalf("async restore of a missing backup: %d", r.status)
	}
}

func TestShutdownCancelsWork(t *testing.T) {
	h := newTestHost(t, wingsbackup.Config{WriteLimit: 1}, 2, false)
	server := h.server(t, true)
	backup := newUUID()
	if r := h.call(t, "POST", "/api/servers/"+server+"/backup", createBody(backup)); r.status != 202 {
		t.Fatalf("create: %d", r.status)
	}
	start := time.Now()
	if !h.shutdown(10 * time.Second) {
		t.Fatal("operations did not end")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if _, err := os.Stat(filepath.Join(h.backups, backup+".tar.gz")); !os.IsNotExist(err) {
		t.Errorf("cancelled backup left an archive: %v", err)
	}
	if r := h.call(t, "POST", "/api/servers/"+server+"/backup", createBody(newUUID())); r.status != 503 {
		t.Errorf("create while shutting down: %d %s", r.status, r.body)
	}
}

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	yml := `
debug: false
token_id: abc123
token: file-token
remote: https://panel.example.com
api:
  host: 0.0.0.0
  port: 8443
system:
  data: /srv/volumes
  backup_directory: /srv/backups
  user:
    uid: 988
    gid: 989
  backups:
    write_limit: 7
    compression_level: best_compression
`
	if err := os.WriteFile(config, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	o, err := parseOptions([]string{"--config", config, "--data-dir", "/flag/data"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.engine
	if o.Host.Token != "file-token" || o.Host.Listen != "0.0.0.0:8443" || cfg.DataDirectory != "/flag/data" || cfg.BackupDirectory != "/srv/backups" ||
		cfg.WriteLimit != 7 || cfg.CompressionLevel != "best_compression" {
		t.Errorf("options from config: %+v %+v", o.Host, cfg)
	}
	if cfg.Panel == nil || cfg.Panel.URL != "https://panel.example.com" || cfg.Panel.TokenID != "abc123" || cfg.Panel.Token != "file-token" {
		t.Errorf("panel: %+v", cfg.Panel)
	}
	if cfg.Owner == nil || cfg.Owner.UID != 988 || cfg.Owner.GID != 989 {
		t.Errorf("owner: %+v", cfg.Owner)
	}

	o, err = parseOptions([]string{"--config", config, "--token", "flag-token", "--listen", "127.0.0.1:9"}, env(map[string]string{"WINGS_TOKEN": "env-token"}), io.Discard)
	if err != nil || o.Host.Token != "flag-token" || o.Host.Listen != "127.0.0.1:9" {
		t.Errorf("flags over config: %+v %v", o, err)
	}
	// One token, as in Wings: the Panel is sent the node token in effect.
	if cfg := o.engine; cfg.Panel == nil || cfg.Panel.Token != "flag-token" {
		t.Errorf("panel token with --token over config: %+v", cfg.Panel)
	}
	o, err = parseOptions([]string{"--config", config}, env(map[string]string{"WINGS_TOKEN": "env-token"}), io.Discard)
	if err != nil || o.Host.Token != "env-token" {
		t.Errorf("env over config: %+v %v", o, err)
	}

	o, err = parseOptions([]string{"--restore-host-allowlist", "minio.local, 10.0.0.0/8,,127.0.0.1", "--owner", "1:2", "--disk-limit", "100"}, env(map[string]string{"WINGS_TOKEN": "t"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg = o.engine
	if strings.Join(cfg.RestoreHostAllowlist, "|") != "minio.local|10.0.0.0/8|127.0.0.1" || cfg.DiskLimit != 100 || cfg.Panel != nil {
		t.Errorf("config: %+v", cfg)
	}

	o, err = parseOptions([]string{"--token", "t", "--version=false"}, env(nil), io.Discard)
	if err != nil || seconds(o.Host.ReadHeaderTimeoutS) != 15*time.Second || seconds(o.Host.ReadTimeoutS) != 30*time.Second {
		t.Errorf("default timeouts: %+v %v", o.Host, err)
	}
	o, err = parseOptions([]string{"--token", "t", "--read-header-timeout", "1500ms", "--read-timeout", "2m"}, env(nil), io.Discard)
	if err != nil || seconds(o.Host.ReadHeaderTimeoutS) != 1500*time.Millisecond || seconds(o.Host.ReadTimeoutS) != 2*time.Minute {
		t.Errorf("timeouts: %+v %v", o.Host, err)
	}

	for _, args := range [][]string{
		{},
		{"--token", "t", "--read-timeout", "0s"},
		{"--token", "t", "--read-header-timeout", "-1s"},
		{"--token", "t", "--read-timeout", "30"},
		{"--token", "t", "--owner", "x"},
		{"--token", "t", "--panel-url", "http://p"},
		{"--token", "t", "extra"},
		{"--token", ""},
		{"--token", "t", "--data-dir", ""},
		{"--token", "t", "--backup-dir", ""},
		{"--token", "t", "--compression-level", ""},
		{"--token", "t", "--listen", ""},
		{"--token", "t", "--write-limit", "-1"},
		{"--token", "t", "--config", filepath.Join(dir, "missing.yml")},
	} {
		if _, err := parseOptions(args, env(nil), io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// TestSlowPanelDoesNotHoldTheServer: while the library keeps retrying a
// report the Panel refuses, the server takes new backups; shutdown parks
// the report.
func TestSlowPanelDoesNotHoldTheServer(t *testing.T) {
	panel := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer panel.Close()
	h := newTestHost(t, wingsbackup.Config{Panel: &wingsbackup.PanelConfig{URL: panel.URL, TokenID: "id", Token: "t"}}, 1, false)
	server := h.server(t, false)
	first := newUUID()
	if r := h.call(t, "POST", "/api/servers/"+server+"/backup", createBody(first)); r.status != 202 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	archive := filepath.Join(h.backups, first+".tar.gz")
	for i := 0; ; i++ {
		if _, err := os.Stat(archive); err == nil {
			break
		}
		if i > 200 {
			t.Fatal("archive did not appear")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The first backup is still telling the Panel; its uuid is taken, the
	// server and the single slot are not.
	var r reply
	for i := 0; i < 100; i++ {
		if r = h.call(t, "POST", "/api/servers/"+server+"/backup", createBody(newUUID())); r.status == 202 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.status != 202 {
		t.Fatalf("second backup while the first reports: %d %s", r.status, r.body)
	}
	if r := h.call(t, "POST", "/api/servers/"+h.server(t, false)+"/backup", createBody(first)); r.status != 409 {
		t.Errorf("first uuid again: %d %s", r.status, r.body)
	}
	if h.engine.WaitIdle(0) {
		t.Error("the first backup's call ended while it reports")
	}
	if !h.shutdown(20 * time.Second) {
		t.Fatal("shutdown did not end the reporting backups")
	}
	if _, err := os.Stat(archive); err != nil {
		t.Errorf("archive removed after a failed report: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.backups, ".pending", first+".json")); err != nil {
		t.Errorf("report not parked at shutdown: %v", err)
	}
}
