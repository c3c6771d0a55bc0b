package wingsbackup

/*
#include <stdlib.h>
#include "bridge.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"unsafe"
)

// CreateOptions tune ArchiveCreate; the zero value means no ignore rules,
// best_speed, one thread per core and no write limit.
type CreateOptions struct {
	// Ignore is gitignore text.
	Ignore           string `json:"ignore,omitempty"`
	CompressionLevel string `json:"compression_level,omitempty"`
	Threads          int    `json:"threads,omitempty"`
	// WriteLimit is in MiB/s; 0 = unlimited.
	WriteLimit uint64 `json:"write_limit,omitempty"`
}

// ExtractOptions tune ArchiveExtract; the zero value merges into the
// destination with no limits.
type ExtractOptions struct {
	// Truncate replaces the destination's files with the archive's.
	Truncate bool `json:"truncate,omitempty"`
	Threads  int  `json:"threads,omitempty"`
	// DiskLimit is the bytes the destination may take; 0 = no limit.
	DiskLimit uint64 `json:"disk_limit,omitempty"`
	// Owner, if set, owns everything extracted.
	Owner *Owner `json:"owner,omitempty"`
	// WriteLimit is in MiB/s of archive bytes read; 0 = unlimited.
	WriteLimit uint64 `json:"write_limit,omitempty"`
	// Paths, if not empty, limits the extract to these entries (a file, or
	// a directory with everything under it), as a restore's paths do; with
	// the index this library writes beside its archives only the members
	// holding them are read. A path the archive does not hold is
	// ErrNotFound, before anything is written.
	Paths []string `json:"paths,omitempty"`
}

// ArchiveSummary is the result of ArchiveCreate.
type ArchiveSummary struct {
	Checksum     string    `json:"checksum"`
	ChecksumType string    `json:"checksum_type"`
	Size         int64     `json:"size"`
	Entries      int64     `json:"entries"`
	Files        int64     `json:"files"`
	SourceBytes  int64     `json:"source_bytes"`
	Changed      []string  `json:"changed"`
	ChangedCount int64     `json:"changed_count"`
	Skipped      []Skipped `json:"skipped"`
	SkippedCount int64     `json:"skipped_count"`
	// ReusedMembers and ReusedBytes: members copied from an earlier archive.
	ReusedMembers int64 `json:"reused_members"`
	ReusedBytes   int64 `json:"reused_bytes"`

	Raw json.RawMessage `json:"-"`
}

func (s *ArchiveSummary) setRaw(raw []byte) { s.Raw = raw }

// ExtractSummary is the result of ArchiveExtract.
type ExtractSummary struct {
	Entries     int64 `json:"entries"`
	Files       int64 `json:"files"`
	Directories int64 `json:"directories"`
	Symlinks    int64 `json:"symlinks"`
	HardLinks   int64 `json:"hard_links"`
	Bytes       int64 `json:"bytes"`
	// Skipped counts FIFOs, devices and unknown entry types left out.
	Skipped int64 `json:"skipped"`

	Raw json.RawMessage `json:"-"`
}

func (s *ExtractSummary) setRaw(raw []byte) { s.Raw = raw }

// optionsJSON encodes opts for the library.
func optionsJSON(opts any) (*C.char, error) {
	raw, err := json.Marshal(opts)
	if err != nil {
		return nil, fmt.Errorf("wingsbackup: encoding the options: %w", err)
	}
	return cString("options_json", raw)
}

// ArchiveCreate archives the directory sourceDir into the file archivePath
// (written under a temporary name and renamed; an existing file is
// replaced). opts may be nil.
func ArchiveCreate(ctx context.Context, sourceDir, archivePath string, opts *CreateOptions, progress func(Progress) bool) (ArchiveSummary, error) {
	var summary ArchiveSummary
	if err := checkABI(); err != nil {
		return summary, err
	}
	if opts == nil {
		opts = &CreateOptions{}
	}
	err := archiveCall(ctx, arg{"source_dir", sourceDir}, arg{"archive_path", archivePath}, opts, progress, &summary,
		func(a, b, o *C.char, h C.uintptr_t, cancel *C.wb_cancel, out **C.char, cerr **C.wb_error) C.int32_t {
			return C.wbgo_archive_create(a, b, o, h, cancel, out, cerr)
		})
	return summary, err
}

// ArchiveExtract extracts the .tar.gz file archivePath into the existing
// directory destDir with the same safety rules as a restore: nothing
// escapes destDir, and on failure destDir is unchanged. opts may be nil.
func ArchiveExtract(ctx context.Context, archivePath, destDir string, opts *ExtractOptions, progress func(Progress) bool) (ExtractSummary, error) {
	var summary ExtractSummary
	if err := checkABI(); err != nil {
		return summary, err
	}
	if opts == nil {
		opts = &ExtractOptions{}
	}
	err := archiveCall(ctx, arg{"archive_path", archivePath}, arg{"dest_dir", destDir}, opts, progress, &summary,
		func(a, b, o *C.char, h C.uintptr_t, cancel *C.wb_cancel, out **C.char, cerr **C.wb_error) C.int32_t {
			return C.wbgo_archive_extract(a, b, o, h, cancel, out, cerr)
		})
	return summary, err
}

// ArchiveDryRun answers what ArchiveCreate of sourceDir would hold, from the
// same walk and ignore rules, reading no file data and writing nothing.
// The file at archivePath ("" for none) is left out, as a create into it
// would leave it out. Only opts.Ignore matters; opts may be nil. The
// report's EstimatedSize is the worst case (the tar stream stored).
func ArchiveDryRun(ctx context.Context, sourceDir, archivePath string, opts *CreateOptions) (DryRunReport, error) {
	var report DryRunReport
	if err := checkABI(); err != nil {
		return report, err
	}
	if opts == nil {
		opts = &CreateOptions{}
	}
	args, free, err := cStrings(arg{"source_dir", sourceDir}, arg{"archive_path", archivePath})
	if err != nil {
		return report, err
	}
	defer free()
	archive := args[1]
	if archivePath == "" {
		archive = nil
	}
	options, err := optionsJSON(opts)
	if err != nil {
		return report, err
	}
	defer C.free(unsafe.Pointer(options))
	var out *C.char
	err = runLong(ctx, nil, func(_ C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t {
		return C.wb_archive_dry_run(args[0], archive, options, cancel, &out, cerr)
	})
	raw := takeString(out)
	if err != nil {
		return report, err
	}
	return report, decodeResult("dry run report", raw, &report)
}

type archiveFn func(a, b, options *C.char, h C.uintptr_t, cancel *C.wb_cancel, out **C.char, cerr **C.wb_error) C.int32_t

// archiveCall is the shared body of ArchiveCreate and ArchiveExtract: two
// path arguments, options, and a JSON summary.
func archiveCall[T interface{ setRaw([]byte) }](ctx context.Context, a, b arg, opts any, progress func(Progress) bool, summary T, call archiveFn) error {
	args, free, err := cStrings(a, b)
	if err != nil {
		return err
	}
	defer free()
	options, err := optionsJSON(opts)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(options))
	var out *C.char
	err = runLong(ctx, progress, func(h C.uintptr_t, cancel *C.wb_cancel, cerr **C.wb_error) C.int32_t {
		return call(args[0], args[1], options, h, cancel, &out, cerr)
	})
	raw := takeString(out)
	if err != nil {
		return err
	}
	return decodeResult("summary", raw, summary)
}
