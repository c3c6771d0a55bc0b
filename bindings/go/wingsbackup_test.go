package wingsbackup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

func TestVersion(t *testing.T) {
	if wingsbackup.Version() == "" {
		t.Fatal("empty library version")
	}
	if got := wingsbackup.LibraryABIVersion(); got != wingsbackup.ABIVersion {
		t.Fatalf("library ABI %d, package ABI %d", got, wingsbackup.ABIVersion)
	}
}

// TestDeflateBackend checks the library names one of its two deflate
// builds; with WB_EXPECT_DEFLATE set (e.g. when testing the pure-Rust build),
// it must name that one.
func TestDeflateBackend(t *testing.T) {
	got := wingsbackup.DeflateBackend()
	if got != "isal" && got != "zlib-rs" {
		t.Fatalf("DeflateBackend() = %q, want isal or zlib-rs", got)
	}
	if want := os.Getenv("WB_EXPECT_DEFLATE"); want != "" && got != want {
		t.Fatalf("DeflateBackend() = %q, WB_EXPECT_DEFLATE = %q", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	before := snapshot(t, n.root(server))
	backup := newUUID()

	if err := n.engine.CheckCreate(server, createBody(backup)); err != nil {
		t.Fatalf("CheckCreate: %v", err)
	}
	details, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), nil)
	if err != nil {
		t.Fatalf("CreateBackup: %v", err)
	}
	info, err := os.Stat(n.archive(backup))
	if err != nil {
		t.Fatalf("archive missing: %v", err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("archive mode %o, want 600", info.Mode().Perm())
	}
	if !details.Successful || details.ChecksumType != "sha1" || details.Parts != nil {
		t.Errorf("details %+v", details)
	}
	if details.Size != info.Size() {
		t.Errorf("size %d, archive has %d bytes", details.Size, info.Size())
	}
	if got := fileSHA1(t, n.archive(backup)); details.Checksum != got {
		t.Errorf("checksum %s, archive sha1 %s", details.Checksum, got)
	}
	if details.Files != 4 || len(details.Raw) == 0 {
		t.Errorf("files %d, raw %q", details.Files, details.Raw)
	}

	// Change the server, then restore over it with truncation.
	root := n.root(server)
	if err := os.Remove(filepath.Join(root, "server.properties")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "new.txt"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "logs")); err != nil {
		t.Fatal(err)
	}
	if err := n.engine.CheckRestore(server, backup, restoreBody(true)); err != nil {
		t.Fatalf("CheckRestore: %v", err)
	}
	if err := n.engine.RestoreBackup(context.Background(), server, backup, restoreBody(true), nil); err != nil {
		t.Fatalf("RestoreBackup: %v", err)
	}
	sameTree(t, before, snapshot(t, root))

	if err := n.engine.DeleteBackup(server, backup); err != nil {
		t.Fatalf("DeleteBackup: %v", err)
	}
	if _, err := os.Stat(n.archive(backup)); !os.IsNotExist(err) {
		t.Fatalf("archive still there: %v", err)
	}
	if err := n.engine.DeleteBackup(server, backup); !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

func TestErrorKinds(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	backup := newUUID()
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"create bad JSON", func() error {
			_, err := n.engine.CreateBackup(ctx, server, []byte(`{"adapter":`), nil)
			return err
		}, wingsbackup.ErrInvalidArgument},
		{"create missing field", func() error {
			return n.engine.CheckCreate(server, []byte(`{"adapter":"wings","uuid":"`+newUUID()+`"}`))
		}, wingsbackup.ErrInvalidArgument},
		{"create wrong type", func() error {
			return n.engine.CheckCreate(server, []byte(`{"adapter":"wings","uuid":"`+newUUID()+`","ignore":5}`))
		}, wingsbackup.ErrInvalidArgument},
		{"create bad backup uuid", func() error {
			_, err := n.engine.CreateBackup(ctx, server, createBody("../../etc/passwd"), nil)
			return err
		}, wingsbackup.ErrInvalidArgument},
		{"create unknown adapter", func() error {
			return n.engine.CheckCreate(server, []byte(`{"adapter":"ftp","uuid":"`+newUUID()+`","ignore":""}`))
		}, wingsbackup.ErrInvalidArgument},
		{"create NUL byte", func() error {
			return n.engine.CheckCreate(server, []byte("{\"adapter\":\"wings\x00\"}"))
		}, wingsbackup.ErrInvalidArgument},
		{"create bad server uuid", func() error {
			_, err := n.engine.CreateBackup(ctx, "not-a-uuid", createBody(newUUID()), nil)
			return err
		}, wingsbackup.ErrNotFound},
		{"create unknown server", func() error {
			_, err := n.engine.CreateBackup(ctx, newUUID(), createBody(newUUID()), nil)
			return err
		}, wingsbackup.ErrNotFound},
		{"create existing backup", func() error {
			_, err := n.engine.CreateBackup(ctx, server, createBody(backup), nil)
			return err
		}, wingsbackup.ErrConflict},
		{"restore missing backup", func() error {
			return n.engine.RestoreBackup(ctx, server, newUUID(), restoreBody(false), nil)
		}, wingsbackup.ErrNotFound},
		{"restore bad backup uuid", func() error {
			return n.engine.CheckRestore(server, "nope", restoreBody(false))
		}, wingsbackup.ErrInvalidArgument},
		{"restore s3 without url", func() error {
			return n.engine.CheckRestore(server, backup, []byte(`{"adapter":"s3","truncate_directory":false}`))
		}, wingsbackup.ErrInvalidArgument},
		{"restore wrong type", func() error {
			return n.engine.CheckRestore(server, backup, []byte(`{"adapter":"wings","truncate_directory":"yes"}`))
		}, wingsbackup.ErrInvalidArgument},
		{"delete unknown backup", func() error {
			return n.engine.DeleteBackup(server, newUUID())
		}, wingsbackup.ErrNotFound},
		{"delete bad backup uuid", func() error {
			return n.engine.DeleteBackup(server, "x")
		}, wingsbackup.ErrInvalidArgument},
		{"engine bad config", func() error {
			_, err := wingsbackup.NewEngineFromJSON([]byte(`{"no_such_key":1}`))
			return err
		}, wingsbackup.ErrInvalidArgument},
		{"engine bad compression level", func() error {
			_, err := wingsbackup.NewEngine(wingsbackup.Config{DataDirectory: n.data, BackupDirectory: n.backups, CompressionLevel: "fast"})
			return err
		}, wingsbackup.ErrInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			var e *wingsbackup.Error
			if !errors.As(err, &e) {
				t.Fatalf("%v is not an *Error", err)
			}
			if e.Message == "" {
				t.Error("empty message")
			}
			if errors.Is(err, wingsbackup.ErrInternal) {
				t.Error("matches a second sentinel")
			}
		})
	}
}

func TestStatus(t *testing.T) {
	cases := []struct {
		status wingsbackup.Status
		name   string
		http   int
	}{
		{wingsbackup.StatusOK, "WB_OK", 200},
		{wingsbackup.StatusInvalidArgument, "WB_INVALID_ARGUMENT", 400},
		{wingsbackup.StatusNotFound, "WB_NOT_FOUND", 404},
		{wingsbackup.StatusConflict, "WB_CONFLICT", 409},
		{wingsbackup.StatusCorruptArchive, "WB_CORRUPT_ARCHIVE", 422},
		{wingsbackup.StatusUnsafeEntry, "WB_UNSAFE_ENTRY", 422},
		{wingsbackup.StatusQuota, "WB_QUOTA", 507},
		{wingsbackup.StatusRemote, "WB_REMOTE", 502},
		{wingsbackup.StatusCancelled, "WB_CANCELLED", 503},
		{wingsbackup.StatusIO, "WB_IO", 500},
		{wingsbackup.StatusInternal, "WB_INTERNAL", 500},
		{wingsbackup.Status(99), "WB_UNKNOWN", 500},
	}
	for _, c := range cases {
		if got := c.status.String(); got != c.name {
			t.Errorf("%d: name %q, want %q", int32(c.status), got, c.name)
		}
		if got := c.status.HTTPStatus(); got != c.http {
			t.Errorf("%s: HTTP %d, want %d", c.name, got, c.http)
		}
	}
}

// slowServer adds a 3 MiB incompressible file, so that a backup on a node
// with a 1 MiB/s write limit takes seconds.
func slowServer(t *testing.T, n *node) string {
	t.Helper()
	server := n.server(t)
	if err := os.WriteFile(filepath.Join(n.root(server), "big.bin"), randomBytes(3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return server
}

func TestCancelThroughContext(t *testing.T) {
	n := newNode(t, wingsbackup.Config{WriteLimit: 1})
	server := slowServer(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	_, err := n.engine.CreateBackup(ctx, server, createBody(newUUID()), func(p wingsbackup.Progress) bool {
		if p.Phase == wingsbackup.PhaseArchive {
			cancel()
		}
		return true
	})
	if !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Fatalf("got %v, want ErrCancelled", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%v does not wrap context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancellation took %v", d)
	}
	if names := backupDirNames(t, n.backups); len(names) != 0 {
		t.Errorf("backup directory not clean after cancel: %v", names)
	}

	// A context that is already done stops the call before it does work.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := n.engine.CreateBackup(done, server, createBody(newUUID()), nil); !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Fatalf("done context: %v, want ErrCancelled", err)
	}
	// A deadline works the same way.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	_, err = n.engine.CreateBackup(short, server, createBody(newUUID()), nil)
	if !errors.Is(err, wingsbackup.ErrCancelled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
}

func TestProgressStops(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	backup := newUUID()
	calls := 0
	_, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), func(p wingsbackup.Progress) bool {
		calls++
		return p.Phase == wingsbackup.PhaseStarted
	})
	if !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Fatalf("got %v, want ErrCancelled", err)
	}
	if calls < 1 {
		t.Fatal("progress never called")
	}
	if names := backupDirNames(t, n.backups); len(names) != 0 {
		t.Errorf("backup directory not clean: %v", names)
	}
	// The server is free again, and the uuid unused.
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), nil); err != nil {
		t.Fatalf("backup after a stopped one: %v", err)
	}
	// A restore stopped by its progress func leaves the files as they were.
	if err := os.WriteFile(filepath.Join(n.root(server), "server.properties"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, n.root(server))
	err = n.engine.RestoreBackup(context.Background(), server, backup, restoreBody(true), func(p wingsbackup.Progress) bool {
		return p.Phase == wingsbackup.PhaseStarted
	})
	if !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Fatalf("restore: %v, want ErrCancelled", err)
	}
	sameTree(t, before, snapshot(t, n.root(server)))
}

func TestProgressPanicIsRaisedAfterTheCall(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want boom", r)
			}
		}()
		n.engine.CreateBackup(context.Background(), server, createBody(newUUID()), func(p wingsbackup.Progress) bool {
			panic("boom")
		})
		t.Fatal("no panic")
	}()
	// The library finished its call cleanly: the server is not held.
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(newUUID()), nil); err != nil {
		t.Fatalf("backup after a panic: %v", err)
	}
}

// checkMonotonic fails if a counter went down within a phase.
func checkMonotonic(t *testing.T, reports []wingsbackup.Progress) {
	t.Helper()
	if len(reports) == 0 || reports[0].Phase != wingsbackup.PhaseStarted {
		t.Fatalf("first report is not PhaseStarted: %+v", reports)
	}
	if last := reports[len(reports)-1]; last.Phase != wingsbackup.PhaseDone {
		t.Fatalf("last report is %v, want done", last.Phase)
	}
	for i := 1; i < len(reports); i++ {
		a, b := reports[i-1], reports[i]
		if a.Phase != b.Phase {
			continue
		}
		if b.BytesDone < a.BytesDone || b.EntriesDone < a.EntriesDone {
			t.Fatalf("report %d went down within %v: %+v then %+v", i, a.Phase, a, b)
		}
	}
}

func TestProgressMonotonic(t *testing.T) {
	n := newNode(t, wingsbackup.Config{WriteLimit: 8})
	server := slowServer(t, n)
	backup := newUUID()
	var reports []wingsbackup.Progress
	record := func(p wingsbackup.Progress) bool {
		reports = append(reports, p)
		return true
	}
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), record); err != nil {
		t.Fatal(err)
	}
	checkMonotonic(t, reports)
	reports = nil
	if err := n.engine.RestoreBackup(context.Background(), server, backup, restoreBody(true), record); err != nil {
		t.Fatal(err)
	}
	checkMonotonic(t, reports)
}

// TestProgressCadence checks the header's promise that progress comes "at
// least once a second while work is being done", for a backup and a restore
// paced by write_limit.
func TestProgressCadence(t *testing.T) {
	n := newNode(t, wingsbackup.Config{WriteLimit: 1})
	server := slowServer(t, n)
	backup := newUUID()
	var last time.Time
	var worst time.Duration
	record := func(p wingsbackup.Progress) bool {
		now := time.Now()
		if !last.IsZero() && now.Sub(last) > worst {
			worst = now.Sub(last)
		}
		last = now
		return true
	}
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), record); err != nil {
		t.Fatal(err)
	}
	if worst > 1500*time.Millisecond {
		t.Errorf("backup: %v between two progress reports", worst)
	}
	last, worst = time.Time{}, 0
	if err := n.engine.RestoreBackup(context.Background(), server, backup, restoreBody(true), record); err != nil {
		t.Fatal(err)
	}
	if worst > 1500*time.Millisecond {
		t.Errorf("restore: %v between two progress reports", worst)
	}
}

// TestCancelIsPrompt checks the header's promise that a triggered cancel
// token stops a call "promptly", for calls paced by write_limit.
func TestCancelIsPrompt(t *testing.T) {
	n := newNode(t, wingsbackup.Config{WriteLimit: 1})
	server := slowServer(t, n)
	backup := newUUID()
	if _, err := wingsbackup.ArchiveCreate(context.Background(), n.root(server), n.archive(backup), nil, nil); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func(ctx context.Context) error{
		"backup": func(ctx context.Context) error {
			_, err := n.engine.CreateBackup(ctx, server, createBody(newUUID()), nil)
			return err
		},
		"restore": func(ctx context.Context) error {
			return n.engine.RestoreBackup(ctx, server, backup, restoreBody(true), nil)
		},
	}
	for name, call := range calls {
		deadline := time.Now().Add(1500 * time.Millisecond)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := call(ctx)
		cancel()
		if !errors.Is(err, wingsbackup.ErrCancelled) {
			t.Errorf("%s: %v", name, err)
		}
		if late := time.Since(deadline); late > 500*time.Millisecond {
			t.Errorf("%s: stopped %v after its context was cancelled", name, late.Round(time.Millisecond))
		}
	}
}

// srcAndDst makes a temporary directory holding src (the test tree) and
// an empty dst.
func srcAndDst(t *testing.T) (dir, src, dst string) {
	t.Helper()
	dir = t.TempDir()
	src = filepath.Join(dir, "src")
	dst = filepath.Join(dir, "dst")
	for _, d := range []string{src, dst} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTree(t, src)
	return dir, src, dst
}

func TestArchiveCreateExtract(t *testing.T) {
	dir, src, dst := srcAndDst(t)
	os.WriteFile(filepath.Join(src, "skip.log"), []byte("x"), 0o644)
	archive := filepath.Join(dir, "out.tar.gz")
	sum, err := wingsbackup.ArchiveCreate(context.Background(), src, archive, &wingsbackup.CreateOptions{Ignore: "*.log\n", CompressionLevel: "best_compression"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Checksum != fileSHA1(t, archive) || sum.ChecksumType != "sha1" || sum.Files != 4 || len(sum.Raw) == 0 {
		t.Errorf("summary %+v", sum)
	}
	ext, err := wingsbackup.ArchiveExtract(context.Background(), archive, dst, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ext.Files != 4 || ext.Symlinks != 2 {
		t.Errorf("extract summary %+v", ext)
	}
	want := snapshot(t, src)
	delete(want, "skip.log")
	sameTree(t, want, snapshot(t, dst))

	if _, err := wingsbackup.ArchiveExtract(context.Background(), filepath.Join(dir, "missing.tar.gz"), dst, nil, nil); !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Errorf("missing archive: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.tar.gz"), []byte("not gzip at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := wingsbackup.ArchiveExtract(context.Background(), filepath.Join(dir, "junk.tar.gz"), dst, nil, nil); !errors.Is(err, wingsbackup.ErrCorruptArchive) {
		t.Errorf("junk archive: %v", err)
	}
	if _, err := wingsbackup.ArchiveCreate(context.Background(), src, archive, &wingsbackup.CreateOptions{CompressionLevel: "fast"}, nil); !errors.Is(err, wingsbackup.ErrInvalidArgument) {
		t.Errorf("bad level: %v", err)
	}
}

func TestArchiveExtractPaths(t *testing.T) {
	dir, src, dst := srcAndDst(t)
	archive := filepath.Join(dir, "out.tar.gz")
	if _, err := wingsbackup.ArchiveCreate(context.Background(), src, archive, nil, nil); err != nil {
		t.Fatal(err)
	}
	// A path the archive does not hold: not found, nothing written.
	_, err := wingsbackup.ArchiveExtract(context.Background(), archive, dst, &wingsbackup.ExtractOptions{Paths: []string{"world", "nope"}}, nil)
	if !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Errorf("missing path: %v", err)
	}
	sameTree(t, map[string]string{}, snapshot(t, dst))
	// Only the named directory and what it holds.
	if _, err := wingsbackup.ArchiveExtract(context.Background(), archive, dst, &wingsbackup.ExtractOptions{Paths: []string{"world/"}}, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for k, v := range snapshot(t, src) {
		if k == "world" || strings.HasPrefix(k, "world/") {
			want[k] = v
		}
	}
	if len(want) < 3 {
		t.Fatalf("the tree has no world/ subtree: %v", want)
	}
	sameTree(t, want, snapshot(t, dst))
}

func TestBusyServerConflict(t *testing.T) {
	n := newNode(t, wingsbackup.Config{WriteLimit: 1})
	server := slowServer(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	result := make(chan error, 1)
	backup := newUUID()
	go func() {
		var once sync.Once
		_, err := n.engine.CreateBackup(ctx, server, createBody(backup), func(p wingsbackup.Progress) bool {
			once.Do(func() { close(started) })
			return true
		})
		result <- err
	}()
	select {
	case <-started:
	case err := <-result:
		t.Fatalf("backup ended early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("backup did not start")
	}
	if err := n.engine.CheckCreate(server, createBody(newUUID())); !errors.Is(err, wingsbackup.ErrConflict) {
		t.Errorf("second backup check: %v", err)
	}
	if err := n.engine.CheckCreate(n.server(t), createBody(backup)); !errors.Is(err, wingsbackup.ErrConflict) {
		t.Errorf("same uuid on another server: %v", err)
	}
	if err := n.engine.RestoreBackup(context.Background(), server, backup, restoreBody(false), nil); !errors.Is(err, wingsbackup.ErrConflict) && !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Errorf("restore during backup: %v", err)
	}
	// Deleting a running backup cancels it.
	if err := n.engine.DeleteBackup(server, backup); err != nil {
		t.Errorf("delete of the running backup: %v", err)
	}
	select {
	case err := <-result:
		if !errors.Is(err, wingsbackup.ErrCancelled) {
			t.Errorf("deleted backup ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deleted backup still running")
	}
	if names := backupDirNames(t, n.backups); len(names) != 0 {
		t.Errorf("backup directory not clean: %v", names)
	}
}

func TestClose(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	if err := n.engine.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.engine.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(newUUID()), nil); !errors.Is(err, wingsbackup.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := n.engine.DeleteBackup(server, newUUID()); !errors.Is(err, wingsbackup.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestCloseWaitsForRunningCalls(t *testing.T) {
	n := newNode(t, wingsbackup.Config{WriteLimit: 1})
	server := slowServer(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		var once sync.Once
		_, err := n.engine.CreateBackup(ctx, server, createBody(newUUID()), func(wingsbackup.Progress) bool {
			once.Do(func() { close(started) })
			return true
		})
		result <- err
	}()
	<-started
	closed := make(chan struct{})
	go func() {
		n.engine.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a call was running")
	case <-time.After(300 * time.Millisecond):
	}
	if err := n.engine.CheckCreate(server, createBody(newUUID())); !errors.Is(err, wingsbackup.ErrClosed) {
		t.Errorf("call while closing: %v, want ErrClosed", err)
	}
	cancel()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the call ended")
	}
	if err := <-result; !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Errorf("running call: %v", err)
	}
}

// TestConcurrentServers backs up and restores eight servers at once. Run
// with GOGC=1 (make test-go) it also catches an engine or handle collected
// while a call still uses it.
func TestConcurrentServers(t *testing.T) {
	n := newNode(t, wingsbackup.Config{Threads: 1})
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := 0; i < workers; i++ {
		server := n.server(t)
		want := snapshot(t, n.root(server))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- roundTrip(n, server, want)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// roundTrip backs a server up, damages it, restores it, and compares.
func roundTrip(n *node, server string, want map[string]string) error {
	backup := newUUID()
	var last wingsbackup.Progress
	progress := func(p wingsbackup.Progress) bool {
		runtime.GC()
		last = p
		return true
	}
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), progress); err != nil {
		return err
	}
	if last.Phase != wingsbackup.PhaseDone {
		return errors.New("backup did not report done")
	}
	if err := os.RemoveAll(filepath.Join(n.root(server), "world")); err != nil {
		return err
	}
	if err := n.engine.RestoreBackup(context.Background(), server, backup, restoreBody(true), progress); err != nil {
		return err
	}
	got, err := treeOf(n.root(server))
	if err != nil {
		return err
	}
	for k, v := range want {
		if got[k] != v {
			return errors.New(server + ": " + k + " differs after restore")
		}
	}
	if len(got) != len(want) {
		return errors.New(server + ": entry count differs after restore")
	}
	return nil
}

// TestGCCleanup drops engines without closing them and relies on the
// cleanup; with GOGC=1 it also checks that an engine used only through a
// temporary stays alive during its call.
func TestGCCleanup(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "volumes")
	server := newUUID()
	if err := os.MkdirAll(filepath.Join(data, server), 0o755); err != nil {
		t.Fatal(err)
	}
	writeTree(t, filepath.Join(data, server))
	open := func() *wingsbackup.Engine {
		e, err := wingsbackup.NewEngine(wingsbackup.Config{DataDirectory: data, BackupDirectory: filepath.Join(dir, "backups"), Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	for i := 0; i < 20; i++ {
		backup := newUUID()
		// The engine is unreachable as soon as the call has its pointer.
		_, err := open().CreateBackup(context.Background(), server, createBody(backup), func(wingsbackup.Progress) bool {
			runtime.GC()
			return true
		})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if err := open().DeleteBackup(server, backup); err != nil {
			t.Fatalf("round %d: delete: %v", i, err)
		}
		runtime.GC()
	}
}

// TestCancelAll: a running backup stops at once, its partial archive is
// removed, and the engine refuses new work (what a host does at shutdown).
func TestCancelAll(t *testing.T) {
	n := newNode(t, wingsbackup.Config{WriteLimit: 1, MaxRunningBackups: 1})
	server := slowServer(t, n)
	archiving := make(chan struct{})
	var once sync.Once
	result := make(chan error, 1)
	go func() {
		_, err := n.engine.CreateBackup(context.Background(), server, createBody(newUUID()), func(p wingsbackup.Progress) bool {
			if p.Phase == wingsbackup.PhaseArchive {
				once.Do(func() { close(archiving) })
			}
			return true
		})
		result <- err
	}()
	select {
	case <-archiving:
	case <-time.After(20 * time.Second):
		t.Fatal("the backup never reached the archive phase")
	}
	n.engine.CancelAll()
	select {
	case err := <-result:
		if !errors.Is(err, wingsbackup.ErrCancelled) {
			t.Fatalf("got %v, want ErrCancelled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CancelAll did not stop the backup within 5s")
	}
	if names := backupDirNames(t, n.backups); len(names) != 0 {
		t.Errorf("backup directory not clean after CancelAll: %v", names)
	}
	err := n.engine.CheckCreate(server, createBody(newUUID()))
	if !errors.Is(err, wingsbackup.ErrCancelled) || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("create after CancelAll: %v", err)
	}
}

// TestArchiveCallsProgress: the archive calls report PhaseStarted first,
// the archive bytes written and read, and follow the progress contract
// (false stops the call with ErrCancelled and leaves nothing behind).
func TestArchiveCallsProgress(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 2<<20)
	for i := range big {
		big[i] = byte(i * 7 / 5)
	}
	if err := os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "out.tar.gz")
	var reports []wingsbackup.Progress
	record := func(p wingsbackup.Progress) bool { reports = append(reports, p); return true }
	sum, err := wingsbackup.ArchiveCreate(context.Background(), src, archive, nil, record)
	if err != nil {
		t.Fatal(err)
	}
	checkMonotonic(t, reports)
	var lastArchive wingsbackup.Progress
	for _, p := range reports {
		if p.Phase == wingsbackup.PhaseArchive {
			lastArchive = p
		}
	}
	if lastArchive.ArchiveBytes != uint64(sum.Size) || lastArchive.BytesDone != uint64(len(big)) || lastArchive.BytesTotal != uint64(len(big)) {
		t.Errorf("last archive report %+v, archive %d bytes", lastArchive, sum.Size)
	}

	dst := filepath.Join(dir, "dst")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	reports = nil
	if _, err := wingsbackup.ArchiveExtract(context.Background(), archive, dst, nil, record); err != nil {
		t.Fatal(err)
	}
	checkMonotonic(t, reports)
	var lastExtract wingsbackup.Progress
	for _, p := range reports {
		if p.Phase == wingsbackup.PhaseExtract {
			lastExtract = p
		}
	}
	if lastExtract.ArchiveBytes != uint64(sum.Size) {
		t.Errorf("last extract report %+v, archive %d bytes", lastExtract, sum.Size)
	}

	// Returning false stops either call with ErrCancelled.
	stop := func(p wingsbackup.Progress) bool { return p.Phase == wingsbackup.PhaseStarted }
	stopped := filepath.Join(dir, "stopped.tar.gz")
	if _, err := wingsbackup.ArchiveCreate(context.Background(), src, stopped, nil, stop); !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Fatalf("create: %v, want ErrCancelled", err)
	}
	if _, err := os.Stat(stopped); !os.IsNotExist(err) {
		t.Errorf("a stopped create left %s: %v", stopped, err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := wingsbackup.ArchiveExtract(context.Background(), archive, empty, nil, stop); !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Fatalf("extract: %v, want ErrCancelled", err)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("a stopped extract left %v", entries)
	}
}
