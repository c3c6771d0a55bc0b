package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// printUsage is --help: Go's flag listing, with the flags written --name as
// the README documents them (-name is taken too).
func printUsage(fs *flag.FlagSet, w io.Writer) {
	var b strings.Builder
	out := fs.Output()
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(out)
	fmt.Fprint(w, usageHeader)
	fmt.Fprint(w, regexp.MustCompile(`(?m)^  -`).ReplaceAllString(b.String(), "  --"))
}

// versionLine is what --version prints.
func versionLine(library string) string {
	return fmt.Sprintf("go-host, libwings_backup %s", library)
}

// logStartup logs, once at start, what --config holds that the host does
// not use, and the settings in effect with where each came from. The node
// and Panel tokens are never logged, and the Panel URL is logged without
// its credentials or query.
func logStartup(log *slog.Logger, o options) {
	for _, key := range o.ignoredKeys {
		log.Warn("ignored --config key", "key", key, "config", o.configFile)
	}
	for _, w := range o.warnings {
		log.Warn(w, "config", o.configFile)
	}
	attrs := []any{
		"listen", o.listen,
		"data_dir", o.dataDir,
		"backup_dir", o.backupDir,
		"compression_level", o.compressionLevel,
		"write_limit_mib", o.writeLimit,
		"disk_limit_bytes", o.diskLimit,
		"max_running_backups", o.maxBackups,
		"owner", orNone(o.owner),
		"panel_url", redactURL(o.panelURL),
		"restore_host_allowlist", orNone(o.allowlist),
		"async_restore", o.asyncRestore,
		"read_header_timeout", o.readHeaderTimeout.String(),
		"read_timeout", o.readTimeout.String(),
		"config", orNone(o.configFile),
	}
	bySource := map[string][]string{}
	for name, source := range o.sources {
		bySource[source] = append(bySource[source], name)
	}
	for _, source := range []string{"flag", "env", "config"} {
		names := bySource[source]
		sort.Strings(names)
		attrs = append(attrs, "from_"+source, orNone(strings.Join(names, ",")))
	}
	log.Info("settings", attrs...)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// redactURL is a URL fit for a log: user information and query replaced by
// REDACTED, fragment dropped.
func redactURL(raw string) string {
	if raw == "" {
		return "none"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "REDACTED"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = "REDACTED", false
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// prepareDirectories creates the data and backup directories if they are
// missing (as Wings does) and checks that they are directories and that the
// backup directory is writable, so that a start-up error names its path.
func prepareDirectories(log *slog.Logger, o options) error {
	for _, d := range []struct {
		flag, path string
		mode       os.FileMode
	}{{"data-dir", o.dataDir, 0o755}, {"backup-dir", o.backupDir, 0o700}} {
		info, err := os.Stat(d.path)
		switch {
		case err == nil && !info.IsDir():
			return fmt.Errorf("--%s %s: not a directory", d.flag, d.path)
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			if err := os.MkdirAll(d.path, 0o755); err != nil {
				return fmt.Errorf("--%s %s: cannot create it: %s", d.flag, d.path, reason(err))
			}
			if err := os.Chmod(d.path, d.mode); err != nil {
				return fmt.Errorf("--%s %s: %s", d.flag, d.path, reason(err))
			}
			log.Info("created directory", "flag", "--"+d.flag, "path", d.path, "mode", "0"+strconv.FormatUint(uint64(d.mode), 8))
		default:
			return fmt.Errorf("--%s %s: %s", d.flag, d.path, reason(err))
		}
	}
	const writeSearch = 0x2 | 0x1 // W_OK | X_OK
	if err := syscall.Access(o.backupDir, writeSearch); err != nil {
		return fmt.Errorf("--backup-dir %s: not writable: %s", o.backupDir, reason(err))
	}
	return nil
}

// reason is an error without the operation and path Go's os errors carry
// (the messages name the path themselves).
func reason(err error) string {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err.Error()
	}
	return err.Error()
}
