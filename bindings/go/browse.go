package wingsbackup

/*
#include <stdlib.h>
#include "bridge.h"
*/
import "C"

import (
	"context"
	"encoding/json"
)

// FileEntry is one entry of a directory listing.
type FileEntry struct {
	Name string `json:"name"`
	// Type is "file", "dir", "symlink", "hardlink" or "fifo".
	Type string `json:"type"`
	Size int64  `json:"size"`
	// Mode holds the permission bits (setuid, setgid and sticky included).
	Mode uint32 `json:"mode"`
	// Mtime is in seconds since the epoch.
	Mtime int64 `json:"mtime"`
	// Link is the target of a symlink or hard link, else nil.
	Link *string `json:"link"`
}

// FileListing is the result of ListFiles and ArchiveList: the entries
// directly under Path (normalised: "/", "/world"), sorted by name.
type FileListing struct {
	Path    string      `json:"path"`
	Entries []FileEntry `json:"entries"`

	Raw json.RawMessage `json:"-"`
}

func (l *FileListing) setRaw(raw []byte) { l.Raw = raw }

// VerifyError is one problem a verify found. Member is the gzip member it
// is in (from 0) and Offset where that member starts in the file, both nil
// for a problem outside the members; Path is the entry it is in, when known.
type VerifyError struct {
	Member  *int64  `json:"member"`
	Offset  *int64  `json:"offset"`
	Path    *string `json:"path"`
	Message string  `json:"message"`
}

// VerifyReport is the result of VerifyBackup and ArchiveVerify. OK when
// nothing was found; Errors lists at most 100 problems, ErrorCount counts
// them all; Indexed tells whether the archive was checked against its index.
type VerifyReport struct {
	OK         bool          `json:"ok"`
	Members    int64         `json:"members"`
	Files      int64         `json:"files"`
	Bytes      int64         `json:"bytes"`
	Indexed    bool          `json:"indexed"`
	ErrorCount int64         `json:"error_count"`
	Errors     []VerifyError `json:"errors"`

	Raw json.RawMessage `json:"-"`
}

func (r *VerifyReport) setRaw(raw []byte) { r.Raw = raw }

// ListFiles returns the entries directly under directory dir ("" or "/":
// the top level; "world", "world/" and "/world" alike) of backup
// backupUUID, from its index (an archive without one is read once and
// indexed). ErrNotFound for a path the archive does not hold or that is not
// a directory; ErrInvalidArgument for "..".
func (e *Engine) ListFiles(serverUUID, backupUUID, dir string) (FileListing, error) {
	var listing FileListing
	raw, err := e.callJSON(func(ptr *C.wb_engine, args []*C.char, out **C.char, cerr **C.wb_error) C.int32_t {
		return C.wb_backup_files(ptr, args[0], args[1], args[2], out, cerr)
	}, arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID}, arg{"dir", dir})
	if err == nil {
		err = decodeResult("file listing", raw, &listing)
	}
	return listing, err
}

// VerifyBackup reads the local archive of backup backupUUID once and checks
// every gzip member, the tar structure and, with an index, every entry
// against it. Damage is in the report (OK false), not the error.
func (e *Engine) VerifyBackup(ctx context.Context, serverUUID, backupUUID string, progress func(Progress) bool) (VerifyReport, error) {
	var report VerifyReport
	err := e.with(func(ptr *C.wb_engine) error {
		args, free, err := cStrings(arg{"server_uuid", serverUUID}, arg{"backup_uuid", backupUUID})
		if err != nil {
			return err
		}
		defer free()
		var out *C.char
		err = runLong(ctx, progress, func(h C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t {
			return C.wbgo_backup_verify(ptr, args[0], args[1], h, cancel, &out, cerr)
		})
		raw := takeString(out)
		if err != nil {
			return err
		}
		return decodeResult("verify report", raw, &report)
	})
	return report, err
}

// ArchiveList returns the entries directly under directory dir of any
// .tar.gz file, from the index beside it (archivePath + ".index") when it
// matches, else by reading the archive once (and writing that index when
// the directory allows).
func ArchiveList(archivePath, dir string) (FileListing, error) {
	var listing FileListing
	if err := checkABI(); err != nil {
		return listing, err
	}
	args, free, err := cStrings(arg{"archive_path", archivePath}, arg{"dir", dir})
	if err != nil {
		return listing, err
	}
	defer free()
	var out *C.char
	var cerr *C.wb_error
	status := C.wb_archive_list(args[0], args[1], &out, &cerr)
	raw := takeString(out)
	if status != C.WB_OK {
		return listing, takeError(status, cerr)
	}
	return listing, decodeResult("file listing", raw, &listing)
}

// ArchiveVerify verifies any .tar.gz file as VerifyBackup does a backup,
// against the index beside it when there is one.
func ArchiveVerify(ctx context.Context, archivePath string, progress func(Progress) bool) (VerifyReport, error) {
	var report VerifyReport
	if err := checkABI(); err != nil {
		return report, err
	}
	args, free, err := cStrings(arg{"archive_path", archivePath})
	if err != nil {
		return report, err
	}
	defer free()
	var out *C.char
	err = runLong(ctx, progress, func(h C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t {
		return C.wbgo_archive_verify(args[0], h, cancel, &out, cerr)
	})
	raw := takeString(out)
	if err != nil {
		return report, err
	}
	return report, decodeResult("verify report", raw, &report)
}
