package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// options are the host's settings: flags, over WINGS_TOKEN, over a Wings
// config.yml given with --config. The library holds the table of settings
// and resolves them (wingsbackup.ResolveHostSettings); the host parses its
// command line with Go's flag package, built from that table.
type options struct {
	*wingsbackup.ResolvedHostSettings
	engine  wingsbackup.Config // the engine configuration, decoded
	version bool
}

const usageHeader = `go-host serves the Wings backup API (POST /api/servers/:uuid/backup,
POST /api/servers/:uuid/backup/:id/restore, DELETE /api/servers/:uuid/backup/:id)
over libwings_backup.

Usage: go-host [flags]

Flags (--name VALUE or --name=VALUE; -name is taken too):
`

var versionFlag = wingsbackup.HostSetting{Flag: "version", Type: "bool",
	Usage: "print the host's name and the library's version, and exit"}

// parseOptions reads the command line; getenv is os.Getenv outside tests.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	table, err := wingsbackup.HostSettings()
	if err != nil {
		return o, err
	}
	fs := flag.NewFlagSet("go-host", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(append(table, versionFlag), stderr) }
	// Zero defaults: only the flags the user sets are passed on, and the
	// library fills in the rest.
	for _, s := range table {
		switch s.Type {
		case "uint":
			fs.Uint64(s.Flag, 0, s.Usage)
		case "bool":
			fs.Bool(s.Flag, false, s.Usage)
		case "duration":
			fs.Duration(s.Flag, 0, s.Usage)
		default:
			fs.String(s.Flag, "", s.Usage)
		}
	}
	fs.BoolVar(&o.version, versionFlag.Flag, false, versionFlag.Usage)
	if err := fs.Parse(args); err != nil || o.version {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	flags, env := map[string]any{}, map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == versionFlag.Flag {
			return
		}
		v := f.Value.(flag.Getter).Get()
		if d, ok := v.(time.Duration); ok {
			v = d.Seconds()
		}
		flags[f.Name] = v
	})
	for _, s := range table {
		if v := getenv(s.Env); s.Env != "" && v != "" {
			env[s.Env] = v
		}
	}
	if o.ResolvedHostSettings, err = wingsbackup.ResolveHostSettings(flags, env); err != nil {
		return o, errorMessage(err)
	}
	return o, json.Unmarshal(o.Engine, &o.engine)
}

// printUsage is --help: the flags written --name, as the README documents
// them (-name is taken too), in the library's order.
func printUsage(table []wingsbackup.HostSetting, w io.Writer) {
	fmt.Fprint(w, usageHeader)
	for _, s := range table {
		name := "--" + s.Flag
		if s.Metavar != "" {
			name += " " + s.Metavar
		}
		fmt.Fprintf(w, "  %s\n    \t%s\n", name, s.Usage)
	}
}

// programName is the name the host was invoked by (the base of argv[0]):
// wings-backup-host once installed (make install), go-host in the checkout.
func programName(arg0 string) string {
	if name := filepath.Base(arg0); arg0 != "" && name != "/" && name != "." {
		return name
	}
	return "go-host"
}

// versionLine is what --version prints: the name the host was invoked by
// and the library's version.
func versionLine(program, library string) string {
	return fmt.Sprintf("%s, libwings_backup %s", program, library)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// logStartup logs, once at start, what --config holds that the host does
// not use, and the settings in effect with where each came from (the
// library leaves the tokens out and redacts the Panel URL).
func logStartup(log *slog.Logger, o options) {
	for _, w := range o.Warnings {
		var attrs []any
		if w.Key != "" {
			attrs = append(attrs, "key", w.Key)
		}
		log.Warn(w.Message, append(attrs, "config", o.Host.Config)...)
	}
	attrs := make([]any, 0, 2*len(o.Settings))
	for _, f := range o.Settings {
		attrs = append(attrs, f[0], f[1])
	}
	log.Info("settings", attrs...)
}

// prepareDirectories creates the data and backup directories if they are
// missing and checks them (the library's errors name the flag and path).
func prepareDirectories(log *slog.Logger, o options) error {
	created, err := wingsbackup.PrepareHostDirectories(o.engine.DataDirectory, o.engine.BackupDirectory)
	for _, d := range created {
		log.Info("created directory", "flag", d.Flag, "path", d.Path, "mode", d.Mode)
	}
	return errorMessage(err)
}

// errorMessage is a library error as its message alone (it names the flag
// and path itself).
func errorMessage(err error) error {
	var e *wingsbackup.Error
	if errors.As(err, &e) {
		return errors.New(e.Message)
	}
	return err
}
