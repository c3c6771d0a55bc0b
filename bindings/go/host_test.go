package wingsbackup

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostSettingsTable(t *testing.T) {
	table, err := HostSettings()
	if err != nil {
		t.Fatal(err)
	}
	if len(table) == 0 || table[0].Flag != "listen" || table[0].Usage != "address to serve on (default 127.0.0.1:8080)" {
		t.Fatalf("table: %+v", table)
	}
	for _, s := range table {
		if s.Flag == "token" && (s.Env != "WINGS_TOKEN" || !s.Secret) {
			t.Errorf("token: %+v", s)
		}
	}
}

func TestResolveHostSettings(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte("token: file\nsystem:\n  data: /srv\nunknown: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := ResolveHostSettings(map[string]any{"config": config, "write-limit": uint64(3), "read-timeout": 1.5},
		map[string]string{"WINGS_TOKEN": "env"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if err := json.Unmarshal(r.Engine, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.DataDirectory != "/srv" || cfg.WriteLimit != 3 || r.Host.Token != "env" || r.Host.ReadTimeoutS != 1.5 {
		t.Errorf("resolved: %+v %s", r.Host, r.Engine)
	}
	if r.Sources["token"] != "env" || r.Sources["data-dir"] != "config" || len(r.Warnings) != 1 || r.Warnings[0].Key != "unknown" {
		t.Errorf("sources %v warnings %v", r.Sources, r.Warnings)
	}
	_, err = ResolveHostSettings(map[string]any{"config": filepath.Join(dir, "missing.yml")}, nil)
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "missing.yml: cannot read") {
		t.Errorf("missing config: %v", err)
	}
}

func TestPrepareHostDirectories(t *testing.T) {
	dir := t.TempDir()
	created, err := PrepareHostDirectories(filepath.Join(dir, "v"), filepath.Join(dir, "b"))
	if err != nil || len(created) != 2 || created[1].Mode != "0700" {
		t.Fatalf("%v %v", created, err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = PrepareHostDirectories(filepath.Join(dir, "v"), file)
	if !errors.Is(err, ErrIO) || !strings.Contains(err.Error(), "--backup-dir "+file+": not a directory") {
		t.Errorf("a file as backup dir: %v", err)
	}
}
