package wingsbackup

/*
#include <stdint.h>
#include "wings_backup.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"unsafe"
)

// Phase says what a long call is doing (WB_PHASE_*).
type Phase uint32

// The phases of a long call.
const (
	// PhaseStarted: the request was accepted (validated, and the server is
	// held by this call). Always the first report of a successful start.
	PhaseStarted Phase = C.WB_PHASE_STARTED
	// PhaseArchive: reading the server's files; bytes are source bytes.
	PhaseArchive Phase = C.WB_PHASE_ARCHIVE
	// PhaseUpload: uploading the archive to S3; bytes are archive bytes.
	PhaseUpload Phase = C.WB_PHASE_UPLOAD
	// PhaseExtract: reading and unpacking the archive; bytes are archive bytes.
	PhaseExtract Phase = C.WB_PHASE_EXTRACT
	// PhaseCommit: putting restored files in place.
	PhaseCommit Phase = C.WB_PHASE_COMMIT
	// PhaseReport: telling the Panel the result of a backup (restores report
	// in the background, after the call has returned).
	PhaseReport Phase = C.WB_PHASE_REPORT
	// PhaseDone: finished successfully; the last report.
	PhaseDone Phase = C.WB_PHASE_DONE
)

func (p Phase) String() string {
	switch p {
	case PhaseStarted:
		return "started"
	case PhaseArchive:
		return "archive"
	case PhaseUpload:
		return "upload"
	case PhaseExtract:
		return "extract"
	case PhaseCommit:
		return "commit"
	case PhaseReport:
		return "report"
	case PhaseDone:
		return "done"
	}
	return fmt.Sprintf("phase(%d)", uint32(p))
}

// Progress is one progress report. BytesTotal 0 means unknown. Within one
// phase, BytesDone, EntriesDone and ArchiveBytes never decrease.
//
// The progress func of every long call follows one contract, the same in
// the Python binding: it runs on the goroutine that made the call;
// returning false stops the call, which then fails with ErrCancelled; a
// panic in it stops the call too, and is raised again once the call has
// returned. The answer to the reports that come once the work can no
// longer be undone is ignored: at PhaseDone the call has already succeeded
// and returns nil whatever the func returns (as at PhaseReport once a
// backup's archive is written). The func must not wait for its own call
// (Engine.WaitBackup of its backup, say): that call goes on only once the
// func returns. Engine.DeleteBackup of the backup the func reports on
// cancels it and returns at once; the backup then fails with ErrCancelled,
// leaving no archive.
type Progress struct {
	Phase       Phase
	BytesDone   uint64
	BytesTotal  uint64
	EntriesDone uint64
	// ArchiveBytes counts compressed bytes: written so far by a backup or
	// ArchiveCreate, read so far by a restore or ArchiveExtract (0 from a
	// library that does not report it).
	ArchiveBytes uint64
}

// progressCall is what the cgo.Handle given to the library points to.
type progressCall struct {
	fn func(Progress) bool
	// A panic in fn must not unwind through the library's frames (it would
	// skip its cleanup and leave the server held): it is caught here, stops
	// the call, and is raised again once the call has returned.
	panicked   bool
	panicValue any
}

func (pc *progressCall) invoke(p Progress) (keepGoing bool) {
	defer func() {
		if r := recover(); r != nil {
			pc.panicked, pc.panicValue, keepGoing = true, r, false
		}
	}()
	return pc.fn(p)
}

// wbGoProgress is the progress callback of every long call (called through
// wbgo_progress in bridge.c). It runs on the goroutine that made the call.
//
//export wbGoProgress
func wbGoProgress(handle C.uintptr_t, p *C.wb_progress) C.int32_t {
	pc, ok := cgo.Handle(handle).Value().(*progressCall)
	if !ok || pc.panicked {
		return 1
	}
	report := Progress{
		Phase:       Phase(p.phase),
		BytesDone:   uint64(p.bytes_done),
		BytesTotal:  uint64(p.bytes_total),
		EntriesDone: uint64(p.entries_done),
	}
	// A library older than this binding passes a shorter struct.
	if uintptr(p.struct_size) >= unsafe.Offsetof(p.archive_bytes)+unsafe.Sizeof(p.archive_bytes) {
		report.ArchiveBytes = uint64(p.archive_bytes)
	}
	if pc.invoke(report) {
		return 0
	}
	return 1
}
