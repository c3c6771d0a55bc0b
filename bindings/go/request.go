package wingsbackup

import "encoding/json"

// RestoreRequest is the body of POST /api/servers/:uuid/backup/:id/restore,
// for callers that build it rather than pass one through (RestoreBackup and
// CheckRestore take its JSON).
type RestoreRequest struct {
	// Adapter is "wings" (a local archive) or "s3".
	Adapter string `json:"adapter"`
	// TruncateDirectory replaces the server's files (with Paths: each
	// named path, whole) instead of merging into them.
	TruncateDirectory bool `json:"truncate_directory"`
	// DownloadURL is the archive's URL, required for "s3".
	DownloadURL string `json:"download_url,omitempty"`
	// Paths limits the restore to these entries of the backup (a directory
	// with everything under it), relative to the server directory; empty
	// restores the whole backup. A path the backup does not hold fails
	// with ErrNotFound before anything changes; "..", NUL bytes and empty
	// paths fail with ErrInvalidArgument.
	Paths []string `json:"paths,omitempty"`
}

// JSON encodes the request for RestoreBackup, CheckRestore and StartRestore.
func (r RestoreRequest) JSON() []byte {
	// A struct of strings, a bool and a string slice always encodes.
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return b
}
