package wingsbackup

import (
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// headerDefines reads the `#define WB_* <number>` lines of
// include/wings_backup.h (the header cgo compiles against in the checkout).
func headerDefines(t *testing.T) map[string]int64 {
	t.Helper()
	path := filepath.Join("..", "..", "include", "wings_backup.h")
	text, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no C header at %s (not a source checkout): %v", path, err)
	}
	found := map[string]int64{}
	re := regexp.MustCompile(`(?m)^#define (WB_\w+) (\d+)$`)
	for _, m := range re.FindAllStringSubmatch(string(text), -1) {
		v, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", m[0], err)
		}
		found[m[1]] = v
	}
	return found
}

// The binding's status table is the header's: every status has its Go
// constant (and a sentinel error unless it is WB_OK), with the same value
// and name, and there is no other.
func TestStatusTableMatchesTheHeader(t *testing.T) {
	ours := map[string]Status{
		"WB_OK":               StatusOK,
		"WB_INVALID_ARGUMENT": StatusInvalidArgument,
		"WB_NOT_FOUND":        StatusNotFound,
		"WB_CONFLICT":         StatusConflict,
		"WB_CORRUPT_ARCHIVE":  StatusCorruptArchive,
		"WB_UNSAFE_ENTRY":     StatusUnsafeEntry,
		"WB_QUOTA":            StatusQuota,
		"WB_REMOTE":           StatusRemote,
		"WB_CANCELLED":        StatusCancelled,
		"WB_IO":               StatusIO,
		"WB_INTERNAL":         StatusInternal,
	}
	theirs := map[string]int64{}
	for name, v := range headerDefines(t) {
		if !strings.HasPrefix(name, "WB_VERSION_") && !strings.HasPrefix(name, "WB_ABI_") &&
			!strings.HasPrefix(name, "WB_PHASE_") && !strings.HasPrefix(name, "WB_LOG_") &&
			!strings.HasPrefix(name, "WB_HTTP_") {
			theirs[name] = v
		}
	}
	if len(theirs) != len(ours) {
		t.Errorf("the header has %d statuses, the binding %d: %v", len(theirs), len(ours), theirs)
	}
	for name, v := range theirs {
		s, ok := ours[name]
		switch {
		case !ok:
			t.Errorf("%s (%d) has no Go constant", name, v)
		case int64(s) != v:
			t.Errorf("%s is %d in Go, %d in the header", name, s, v)
		case s.String() != name:
			t.Errorf("Status(%d).String() = %q, want %q", v, s.String(), name)
		case s != StatusOK && s.sentinel() == nil:
			t.Errorf("%s has no sentinel error", name)
		}
	}
}

func TestPhasesAndABIVersionMatchTheHeader(t *testing.T) {
	found := headerDefines(t)
	if v, ok := found["WB_ABI_VERSION"]; !ok || v != int64(ABIVersion) {
		t.Errorf("ABIVersion = %d, the header's WB_ABI_VERSION = %d (found: %v)", ABIVersion, v, ok)
	}
	ours := map[string]Phase{
		"WB_PHASE_STARTED": PhaseStarted,
		"WB_PHASE_ARCHIVE": PhaseArchive,
		"WB_PHASE_UPLOAD":  PhaseUpload,
		"WB_PHASE_EXTRACT": PhaseExtract,
		"WB_PHASE_COMMIT":  PhaseCommit,
		"WB_PHASE_REPORT":  PhaseReport,
		"WB_PHASE_DONE":    PhaseDone,
	}
	n := 0
	for name, v := range found {
		if !strings.HasPrefix(name, "WB_PHASE_") {
			continue
		}
		n++
		p, ok := ours[name]
		switch {
		case !ok:
			t.Errorf("%s (%d) has no Go constant", name, v)
		case int64(p) != v:
			t.Errorf("%s is %d in Go, %d in the header", name, p, v)
		case p.String() != strings.ToLower(strings.TrimPrefix(name, "WB_PHASE_")):
			t.Errorf("Phase(%d).String() = %q for %s", v, p.String(), name)
		}
	}
	if n != len(ours) {
		t.Errorf("the header has %d phases, the binding %d", n, len(ours))
	}
}

func TestLogLevelsMatchTheHeader(t *testing.T) {
	want := map[string]slog.Level{
		"WB_LOG_DEBUG": slog.LevelDebug,
		"WB_LOG_INFO":  slog.LevelInfo,
		"WB_LOG_WARN":  slog.LevelWarn,
		"WB_LOG_ERROR": slog.LevelError,
	}
	n := 0
	for name, v := range headerDefines(t) {
		if !strings.HasPrefix(name, "WB_LOG_") {
			continue
		}
		n++
		level, ok := want[name]
		if !ok {
			t.Errorf("%s (%d) has no slog level", name, v)
		} else if got := slogLevelOf(int32(v)); got != level {
			t.Errorf("%s maps to %v, want %v", name, got, level)
		}
	}
	if n != len(want) {
		t.Errorf("the header has %d log levels, the binding %d", n, len(want))
	}
}
