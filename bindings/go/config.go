package wingsbackup

// Config is the engine configuration (docs/api.md section 12). It marshals to
// the JSON keys the library reads; zero values are left out, so the
// library's defaults apply (Wings' directories, best_speed, no limits).
type Config struct {
	// DataDirectory holds one directory per server, named by its UUID
	// (Wings system.data).
	DataDirectory string `json:"data_directory,omitempty"`
	// BackupDirectory holds the local archives, <uuid>.tar.gz
	// (Wings system.backup_directory).
	BackupDirectory string `json:"backup_directory,omitempty"`
	// CompressionLevel is "none", "best_speed" or "best_compression".
	CompressionLevel string `json:"compression_level,omitempty"`
	// WriteLimit caps archive bytes written (create) or read (restore), in
	// MiB/s; 0 = unlimited.
	WriteLimit uint64 `json:"write_limit,omitempty"`
	// Threads per operation; 0 = one per core.
	Threads int `json:"threads,omitempty"`
	// Owner, if set, owns everything a restore writes (Wings system.user).
	Owner *Owner `json:"owner,omitempty"`
	// DiskLimit is the bytes a server's files may take after a restore;
	// 0 = no limit.
	DiskLimit uint64 `json:"disk_limit,omitempty"`
	// RestoreHostAllowlist lists hosts, IPs and CIDRs an s3 restore may
	// download from even though they resolve to private addresses.
	RestoreHostAllowlist []string `json:"restore_host_allowlist,omitempty"`
	// UploadConcurrency is how many S3 parts are uploaded at once.
	UploadConcurrency int `json:"upload_concurrency,omitempty"`
	// MaxRunningBackups is how many backups run at once (0: the library's
	// default, 4); more are accepted and wait, inside CreateBackup, for a
	// slot.
	MaxRunningBackups int `json:"max_running_backups,omitempty"`
	// BackupReuse, if set to false, makes every local backup read every
	// file instead of copying what did not change from the server's
	// previous local archive (nil: the library's default, true).
	BackupReuse *bool `json:"backup_reuse,omitempty"`
	// Panel, if set, is told the result of every backup and restore.
	Panel *PanelConfig `json:"panel,omitempty"`
}

// Owner is a uid/gid pair.
type Owner struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// PanelConfig is how the engine reaches the Panel's remote API.
type PanelConfig struct {
	// URL is the Panel's base URL, without /api/remote.
	URL     string `json:"url"`
	TokenID string `json:"token_id"`
	Token   string `json:"token"`
	// ReportRetrySeconds is how long a backup status report is retried
	// before it is parked on disk; nil = the library's default (600).
	ReportRetrySeconds *uint64 `json:"report_retry_s,omitempty"`
}
