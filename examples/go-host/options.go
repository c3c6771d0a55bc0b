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
	maxBackups       uint64
	owner            string
	allowlist        string
	asyncRestore     bool
	configFile       string
	version          bool
	// sources: where each setting not left at its default came from
	// ("flag", "env" or "config"), by flag name.
	sources map[string]string
	// ignoredKeys: the dotted paths of the --config keys the host does not
	// use; warnings: other things in --config the host does not honour.
	ignoredKeys []string
	warnings    []string
	// Slow clients: how long reading a request's headers, and the whole
	// request with its body, may take before the connection is dropped.
	readHeaderTimeout time.Duration
	readTimeout       time.Duration
}

const usageHeader = `go-host serves the Wings backup API (POST /api/servers/:uuid/backup,
POST /api/servers/:uuid/backup/:id/restore, DELETE /api/servers/:uuid/backup/:id)
over libwings_backup.

Usage: go-host [flags]

Flags (--name VALUE or --name=VALUE; -name is taken too):
`

// parseOptions reads the command line; getenv is os.Getenv outside tests.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("go-host", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(fs, stderr) }
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
	fs.Uint64Var(&o.maxBackups, "max-running-backups", 4, "backups that run at once (`N`, 1 to 1024); more wait, accepted, for a slot")
	fs.StringVar(&o.owner, "owner", "", "`UID:GID` that owns restored files")
	fs.StringVar(&o.allowlist, "restore-host-allowlist", "", "comma-separated hosts, IPs or CIDRs an s3 restore may download from although private (`LIST`)")
	fs.BoolVar(&o.asyncRestore, "async-restore", false, "answer restores with 202 once started and run them in the background (Wings behaviour)")
	fs.StringVar(&o.configFile, "config", "", "Wings config.yml `FILE` to read settings from; flags override it")
	fs.DurationVar(&o.readHeaderTimeout, "read-header-timeout", 15*time.Second, "how long a client may take to send a request's headers (`DURATION`, e.g. 15s)")
	fs.DurationVar(&o.readTimeout, "read-timeout", 30*time.Second, "how long a client may take to send a whole request, headers and body (`DURATION`)")
	fs.BoolVar(&o.version, "version", false, "print the host's name and the library's version, and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.version {
		return o, nil
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	o.sources = map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		set[f.Name] = true
		o.sources[f.Name] = "flag"
	})

	if !set["token"] {
		o.token = getenv("WINGS_TOKEN")
		set["token"] = o.token != ""
		if set["token"] {
			o.sources["token"] = "env"
		}
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
	if o.maxBackups < 1 || o.maxBackups > 1024 {
		return o, errors.New("--max-running-backups must be from 1 to 1024")
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
			MaxRunningBackups    *uint64  `yaml:"max_running_backups"`
			RestoreHostAllowlist []string `yaml:"restore_host_allowlist"`
		} `yaml:"backups"`
	} `yaml:"system"`
}

// wingsConfigKeys are the keys of a Wings config.yml the host uses (the
// fields of wingsConfig), as dotted paths; the Python host has the same list.
// Every other key in the file is logged as ignored.
var wingsConfigKeys = []string{
	"token_id", "token", "remote",
	"api.host", "api.port", "api.ssl.enabled",
	"system.data", "system.backup_directory", "system.user.uid", "system.user.gid",
	"system.backups.compression_level", "system.backups.write_limit", "system.backups.restore_host_allowlist",
	"system.backups.max_running_backups",
}

// ignoredConfigKeys lists, in file order, the dotted path of every key of
// the YAML document that is not in wingsConfigKeys: a leaf (a value that is
// not a mapping, or an empty one) under an unknown key is named in full, so
// a misplaced block names each of its keys (backups.compression_level).
func ignoredConfigKeys(raw []byte) []string {
	var doc yaml.Node
	if yaml.Unmarshal(raw, &doc) != nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	known := map[string]bool{}   // leaves the host reads
	section := map[string]bool{} // mappings that hold them
	for _, k := range wingsConfigKeys {
		known[k] = true
		for i := strings.LastIndexByte(k, '.'); i > 0; i = strings.LastIndexByte(k[:i], '.') {
			section[k[:i]] = true
		}
	}
	var out []string
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, value := n.Content[i].Value, n.Content[i+1]
			if value.Kind == yaml.AliasNode && value.Alias != nil {
				value = value.Alias
			}
			path := prefix + key
			switch {
			case known[path]:
			case section[path] && (value.Kind == yaml.MappingNode || value.Tag == "!!null"):
				walk(value, path+".")
			case value.Kind == yaml.MappingNode && len(value.Content) > 0:
				walk(value, path+".")
			default:
				out = append(out, path)
			}
		}
	}
	if root := doc.Content[0]; root.Kind == yaml.MappingNode {
		walk(root, "")
	}
	return out
}

// applyWingsConfig fills every setting whose flag was not given from the
// Wings configuration file.
func (o *options) applyWingsConfig(path string, set map[string]bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config %s: cannot read: %s", path, reason(err))
	}
	var c wingsConfig
	if err := yaml.Unmarshal(raw, &c); err != nil {
		var typeErr *yaml.TypeError
		if errors.As(err, &typeErr) {
			return fmt.Errorf("--config %s: %s", path, strings.Join(typeErr.Errors, "; "))
		}
		return fmt.Errorf("--config %s: invalid YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	o.ignoredKeys = ignoredConfigKeys(raw)
	str := func(name string, dst *string, v string) {
		if !set[name] && v != "" {
			*dst = v
			o.sources[name] = "config"
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
		o.sources["listen"] = "config"
	}
	if !set["write-limit"] && c.System.Backups.WriteLimit != nil {
		o.writeLimit = *c.System.Backups.WriteLimit
		o.sources["write-limit"] = "config"
	}
	if !set["max-running-backups"] && c.System.Backups.MaxRunningBackups != nil {
		o.maxBackups = *c.System.Backups.MaxRunningBackups
		o.sources["max-running-backups"] = "config"
	}
	if !set["owner"] && c.System.User.UID != nil && c.System.User.GID != nil {
		o.owner = fmt.Sprintf("%d:%d", *c.System.User.UID, *c.System.User.GID)
		o.sources["owner"] = "config"
	}
	if !set["restore-host-allowlist"] && len(c.System.Backups.RestoreHostAllowlist) > 0 {
		o.allowlist = strings.Join(c.System.Backups.RestoreHostAllowlist, ",")
		o.sources["restore-host-allowlist"] = "config"
	}
	if c.API.SSL.Enabled {
		o.warnings = append(o.warnings, "api.ssl in --config is ignored; this host serves plain HTTP (put a TLS proxy in front)")
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
		DataDirectory:     o.dataDir,
		BackupDirectory:   o.backupDir,
		CompressionLevel:  o.compressionLevel,
		WriteLimit:        o.writeLimit,
		DiskLimit:         o.diskLimit,
		MaxRunningBackups: int(o.maxBackups),
		Owner:             owner,
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
