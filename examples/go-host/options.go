package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
	"gopkg.in/yaml.v3"
)

// options are the host's settings: flags, over WINGS_TOKEN, over a Wings
// config.yml given with --config.
type options struct {
	listen           string
	token            string
	dataDir          string
	backupDir        string
	panelURL         string
	panelTokenID     string
	panelToken       string
	compressionLevel string
	writeLimit       uint64
	diskLimit        uint64
	owner            string
	allowlist        string
	asyncRestore     bool
	configFile       string
	// Slow clients: how long reading a request's headers, and the whole
	// request with its body, may take before the connection is dropped.
	readHeaderTimeout time.Duration
	readTimeout       time.Duration
}

const usageHeader = `go-host serves the Wings backup API (POST /api/servers/:uuid/backup,
POST /api/servers/:uuid/backup/:id/restore, DELETE /api/servers/:uuid/backup/:id)
over libwings_backup.

Usage: go-host [flags]
`

// parseOptions reads the command line; getenv is os.Getenv outside tests.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("go-host", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHeader)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to serve on, `host:port`")
	fs.StringVar(&o.token, "token", "", "node `TOKEN` clients must send as \"Authorization: Bearer TOKEN\" (default $WINGS_TOKEN)")
	fs.StringVar(&o.dataDir, "data-dir", "/var/lib/pterodactyl/volumes", "directory of server roots, `DIR`/<server uuid>")
	fs.StringVar(&o.backupDir, "backup-dir", "/var/lib/pterodactyl/backups", "directory of local archives, `DIR`/<backup uuid>.tar.gz")
	fs.StringVar(&o.panelURL, "panel-url", "", "Panel base `URL` to report finished backups and restores to (optional)")
	fs.StringVar(&o.panelTokenID, "panel-token-id", "", "node token `ID` for the Panel")
	fs.StringVar(&o.panelToken, "panel-token", "", "node `TOKEN` for the Panel (default: the --token value)")
	fs.StringVar(&o.compressionLevel, "compression-level", "best_speed", "none, best_speed or best_compression")
	fs.Uint64Var(&o.writeLimit, "write-limit", 0, "archive write (and restore read) limit in `MiB`/s, 0 = unlimited")
	fs.Uint64Var(&o.diskLimit, "disk-limit", 0, "`BYTES` a server's files may take after a restore, 0 = no limit")
	fs.StringVar(&o.owner, "owner", "", "`UID:GID` that owns restored files")
	fs.StringVar(&o.allowlist, "restore-host-allowlist", "", "comma-separated hosts, IPs or CIDRs an s3 restore may download from although private (`LIST`)")
	fs.BoolVar(&o.asyncRestore, "async-restore", false, "answer restores with 202 once started and run them in the background (Wings behaviour)")
	fs.StringVar(&o.configFile, "config", "", "Wings config.yml `FILE` to read settings from; flags override it")
	fs.DurationVar(&o.readHeaderTimeout, "read-header-timeout", 15*time.Second, "how long a client may take to send a request's headers (`DURATION`, e.g. 15s)")
	fs.DurationVar(&o.readTimeout, "read-timeout", 30*time.Second, "how long a client may take to send a whole request, headers and body (`DURATION`)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if !set["token"] {
		o.token = getenv("WINGS_TOKEN")
		set["token"] = o.token != ""
	}
	if o.configFile != "" {
		if err := o.applyWingsConfig(o.configFile, set); err != nil {
			return o, err
		}
	}
	if o.token == "" {
		return o, errors.New("a node token is required: --token, $WINGS_TOKEN or token: in --config")
	}
	for name, v := range map[string]string{"listen": o.listen, "data-dir": o.dataDir, "backup-dir": o.backupDir, "compression-level": o.compressionLevel} {
		if v == "" {
			return o, fmt.Errorf("--%s must not be empty", name)
		}
	}
	if o.panelURL != "" && o.panelTokenID == "" {
		return o, errors.New("--panel-url needs --panel-token-id")
	}
	if _, err := o.ownerValue(); err != nil {
		return o, err
	}
	if o.readHeaderTimeout <= 0 || o.readTimeout <= 0 {
		return o, errors.New("--read-header-timeout and --read-timeout must be positive")
	}
	return o, nil
}

// wingsConfig is the part of a Wings config.yml the host uses.
type wingsConfig struct {
	TokenID string `yaml:"token_id"`
	Token   string `yaml:"token"`
	Remote  string `yaml:"remote"`
	API     struct {
		Host string `yaml:"host"`
		Port int    `yaml:"port"`
		SSL  struct {
			Enabled bool `yaml:"enabled"`
		} `yaml:"ssl"`
	} `yaml:"api"`
	System struct {
		Data            string `yaml:"data"`
		BackupDirectory string `yaml:"backup_directory"`
		User            struct {
			UID *uint32 `yaml:"uid"`
			GID *uint32 `yaml:"gid"`
		} `yaml:"user"`
		Backups struct {
			CompressionLevel     string   `yaml:"compression_level"`
			WriteLimit           *uint64  `yaml:"write_limit"`
			RestoreHostAllowlist []string `yaml:"restore_host_allowlist"`
		} `yaml:"backups"`
	} `yaml:"system"`
}

// applyWingsConfig fills every setting whose flag was not given from the
// Wings configuration file.
func (o *options) applyWingsConfig(path string, set map[string]bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading --config: %w", err)
	}
	var c wingsConfig
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("parsing --config %s: %w", path, err)
	}
	str := func(name string, dst *string, v string) {
		if !set[name] && v != "" {
			*dst = v
		}
	}
	str("token", &o.token, c.Token)
	str("panel-url", &o.panelURL, c.Remote)
	str("panel-token-id", &o.panelTokenID, c.TokenID)
	str("data-dir", &o.dataDir, c.System.Data)
	str("backup-dir", &o.backupDir, c.System.BackupDirectory)
	str("compression-level", &o.compressionLevel, c.System.Backups.CompressionLevel)
	if !set["listen"] && (c.API.Host != "" || c.API.Port != 0) {
		host, port, _ := net.SplitHostPort(o.listen)
		if c.API.Host != "" {
			host = c.API.Host
		}
		if c.API.Port != 0 {
			port = strconv.Itoa(c.API.Port)
		}
		o.listen = net.JoinHostPort(host, port)
	}
	if !set["write-limit"] && c.System.Backups.WriteLimit != nil {
		o.writeLimit = *c.System.Backups.WriteLimit
	}
	if !set["owner"] && c.System.User.UID != nil && c.System.User.GID != nil {
		o.owner = fmt.Sprintf("%d:%d", *c.System.User.UID, *c.System.User.GID)
	}
	if !set["restore-host-allowlist"] && len(c.System.Backups.RestoreHostAllowlist) > 0 {
		o.allowlist = strings.Join(c.System.Backups.RestoreHostAllowlist, ",")
	}
	if c.API.SSL.Enabled {
		fmt.Fprintln(os.Stderr, "go-host: warning: api.ssl in --config is ignored; this host serves plain HTTP (put a TLS proxy in front)")
	}
	return nil
}

func (o *options) ownerValue() (*wingsbackup.Owner, error) {
	if o.owner == "" {
		return nil, nil
	}
	u, g, ok := strings.Cut(o.owner, ":")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("--owner %q: want UID:GID, two numbers", o.owner)
	}
	return &wingsbackup.Owner{UID: uint32(uid), GID: uint32(gid)}, nil
}

// engineConfig is the library configuration the options describe; the
// library validates the values (compression level, allowlist entries).
func (o *options) engineConfig() (wingsbackup.Config, error) {
	owner, err := o.ownerValue()
	if err != nil {
		return wingsbackup.Config{}, err
	}
	cfg := wingsbackup.Config{
		DataDirectory:    o.dataDir,
		BackupDirectory:  o.backupDir,
		CompressionLevel: o.compressionLevel,
		WriteLimit:       o.writeLimit,
		DiskLimit:        o.diskLimit,
		Owner:            owner,
	}
	for _, h := range strings.Split(o.allowlist, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.RestoreHostAllowlist = append(cfg.RestoreHostAllowlist, h)
		}
	}
	if o.panelURL != "" {
		token := o.panelToken
		if token == "" {
			token = o.token
		}
		cfg.Panel = &wingsbackup.PanelConfig{URL: o.panelURL, TokenID: o.panelTokenID, Token: token}
	}
	return cfg, nil
}
