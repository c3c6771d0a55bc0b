package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestIgnoredConfigKeys(t *testing.T) {
	yml := `
debug: false
token: t
api:
  port: 8080
  upload_limit: 100
backups:
  compression_level: best_compression
system:
  data: /srv
  sftp: {bind_port: 2022}
  user: {uid: 1, gid: 1, rootless: {enabled: false}}
  backups:
    compresion_level: none
    write_limit: 3
docker: {}
allowed_mounts: []
empty:
`
	got := ignoredConfigKeys([]byte(yml))
	want := []string{"debug", "api.upload_limit", "backups.compression_level", "system.sftp.bind_port",
		"system.user.rootless.enabled", "system.backups.compresion_level", "docker", "allowed_mounts", "empty"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ignored keys:\n got %q\nwant %q", got, want)
	}
	if got := ignoredConfigKeys([]byte("token: t\nsystem:\n")); len(got) != 0 {
		t.Errorf("an empty known section: %q", got)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                "none",
		"https://panel.example.com/":      "https://panel.example.com/",
		"https://u:p@panel.example.com":   "https://REDACTED@panel.example.com",
		"http://127.0.0.1:9/p?key=s#frag": "http://127.0.0.1:9/p?REDACTED",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUsageShowsDoubleDashes(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseOptions([]string{"--help"}, func(string) string { return "" }, &out); err == nil {
		t.Fatal("--help: no ErrHelp")
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
			t.Errorf("single dash: %q", line)
		}
	}
	if !strings.Contains(out.String(), "  --data-dir DIR\n") {
		t.Errorf("no --data-dir in:\n%s", out.String())
	}
	o, err := parseOptions([]string{"-version"}, func(string) string { return "" }, io.Discard)
	if err != nil || !o.version {
		t.Errorf("-version: %v %v", o.version, err)
	}
}

func TestStartupLogNeverHoldsTheToken(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte("token: file-secret\ntoken_id: id\nremote: https://u:pw@panel/\ndebug: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseOptions([]string{"--config", config, "--panel-token", "panel-secret"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	logStartup(slog.New(slog.NewTextHandler(&out, nil)), o)
	for _, secret := range []string{"file-secret", "panel-secret", "pw"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("log holds %q:\n%s", secret, out.String())
		}
	}
	for _, want := range []string{`key=debug`, "panel_url=https://REDACTED@panel/", "from_config=panel-token-id,panel-url,token", "from_flag=config,panel-token"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPrepareDirectoriesNamesThePath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct{ data, backups, want string }{
		{filepath.Join(file, "v"), filepath.Join(dir, "b"), "--data-dir " + filepath.Join(file, "v") + ": not a directory"},
		{filepath.Join(dir, "v"), file, "--backup-dir " + file + ": not a directory"},
	} {
		err := prepareDirectories(log, options{dataDir: c.data, backupDir: c.backups})
		if err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
	if err := prepareDirectories(log, options{dataDir: filepath.Join(dir, "a", "v"), backupDir: filepath.Join(dir, "a", "b")}); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(dir, "a", "b")); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("backup dir: %v %v", info, err)
	}
}
