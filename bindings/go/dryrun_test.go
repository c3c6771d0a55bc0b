package wingsbackup_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// tarNames lists an archive with GNU tar, without trailing slashes.
func tarNames(t *testing.T, archive string) []string {
	t.Helper()
	out, err := exec.Command("tar", "-tzf", archive).Output()
	if err != nil {
		t.Fatalf("tar -tzf: %v", err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		names = append(names, strings.TrimSuffix(l, "/"))
	}
	sort.Strings(names)
	return names
}

// A dry run answers what the backup with the same rules then holds, and
// writes nothing.
func TestDryRunMatchesTheBackup(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	root := n.root(server)
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(filepath.Join(root, "logs", fmt.Sprintf("%d.log", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	backup := newUUID()
	body := []byte(fmt.Sprintf(`{"adapter":"wings","uuid":%q,"ignore":"*.log\nworld/region/\n","dry_run":true}`, backup))
	report, err := n.engine.DryRun(context.Background(), server, body)
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(n.backups); len(entries) != 0 {
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".tar.gz") {
				t.Fatalf("a dry run wrote %s", e.Name())
			}
		}
	}
	ignored := append([]string(nil), report.Ignored...)
	sort.Strings(ignored)
	if want := []string{"logs/0.log", "logs/1.log", "logs/2.log", "world/region"}; fmt.Sprint(ignored) != fmt.Sprint(want) || report.IgnoredCount != 4 {
		t.Errorf("ignored %v (%d), want %v", ignored, report.IgnoredCount, want)
	}
	real := []byte(fmt.Sprintf(`{"adapter":"wings","uuid":%q,"ignore":"*.log\nworld/region/\n"}`, backup))
	details, err := n.engine.CreateBackup(context.Background(), server, real, nil)
	if err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, n.archive(backup))
	if int64(len(names)) != report.Entries || report.Files != details.Files || report.EstimatedSize < details.Size || len(report.Raw) == 0 {
		t.Errorf("dry run %+v, backup %+v, tar %v", report, details, names)
	}
	for _, name := range names {
		for _, i := range ignored {
			if name == i || strings.HasPrefix(name, i+"/") {
				t.Errorf("%s is in the archive and ignored", name)
			}
		}
	}

	// A create that asks for a dry run makes no backup; a cancelled dry
	// run stops; an unknown server is not found.
	if _, err := n.engine.CreateBackup(context.Background(), server, body, nil); !errors.Is(err, wingsbackup.ErrInvalidArgument) {
		t.Errorf("create with dry_run: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.engine.DryRun(ctx, server, body); !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Errorf("cancelled dry run: %v", err)
	}
	if _, err := n.engine.DryRun(context.Background(), newUUID(), body); !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Errorf("unknown server: %v", err)
	}
}

func TestArchiveDryRun(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTree(t, src)
	os.WriteFile(filepath.Join(src, "skip.log"), []byte("x"), 0o644)
	archive := filepath.Join(dir, "out.tar.gz")
	opts := &wingsbackup.CreateOptions{Ignore: "*.log\n"}
	report, err := wingsbackup.ArchiveDryRun(context.Background(), src, archive, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(archive); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a dry run wrote the archive: %v", err)
	}
	sum, err := wingsbackup.ArchiveCreate(context.Background(), src, archive, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if report.Files != sum.Files || report.Entries != sum.Entries || report.Bytes != sum.SourceBytes ||
		report.IgnoredCount != 1 || report.Ignored[0] != "skip.log" || report.EstimatedSize < sum.Size {
		t.Errorf("dry run %+v, archive %+v", report, sum)
	}
	if _, err := wingsbackup.ArchiveDryRun(context.Background(), filepath.Join(dir, "nowhere"), "", nil); !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Errorf("missing source: %v", err)
	}
}
