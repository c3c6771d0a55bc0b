package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The settings themselves (the ignored config.yml keys, the redacted Panel
// URL, the directories) are the library's, tested in src/host_settings;
// these tests check the host's use of them.

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

// --version names the host as it was invoked: the installed binary is
// wings-backup-host (make install), the one in the checkout go-host.
func TestVersionNamesTheHostAsInvoked(t *testing.T) {
	for arg0, want := range map[string]string{
		"/usr/local/bin/wings-backup-host": "wings-backup-host",
		"wings-backup-host":                "wings-backup-host",
		"./target/go-host":                 "go-host",
		"":                                 "go-host",
	} {
		if got := versionLine(programName(arg0), "1.2.3"); got != want+", libwings_backup 1.2.3" {
			t.Errorf("argv[0] %q: --version prints %q", arg0, got)
		}
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
	for _, want := range []string{`msg="ignored --config key" key=debug config=` + config, "panel_url=https://REDACTED@panel/",
		"from_config=panel-token-id,panel-url,token", "from_flag=config,panel-token"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPrepareDirectoriesLogsWhatItCreates(t *testing.T) {
	dir := t.TempDir()
	o, err := parseOptions([]string{"--token", "t", "--data-dir", filepath.Join(dir, "v"), "--backup-dir", filepath.Join(dir, "b")},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := prepareDirectories(slog.New(slog.NewTextHandler(&out, nil)), o); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `msg="created directory" flag=--data-dir path=`+filepath.Join(dir, "v")+" mode=0755") {
		t.Errorf("log:\n%s", out.String())
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o.engine.BackupDirectory = file
	if err := prepareDirectories(slog.New(slog.NewTextHandler(io.Discard, nil)), o); err == nil || err.Error() != "--backup-dir "+file+": not a directory" {
		t.Errorf("got %v", err)
	}
}
