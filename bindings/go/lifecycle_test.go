package wingsbackup_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// A started backup through its whole life: status while it runs, progress
// seen by WaitBackup, cancel, and the ended state.
func TestStartStatusWaitCancel(t *testing.T) {
	n := newNode(t, wingsbackup.Config{WriteLimit: 1, CompressionLevel: "none"})
	server := n.server(t)
	noise := make([]byte, 4<<20)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.root(server), "noise.bin"), noise, 0o644); err != nil {
		t.Fatal(err)
	}
	backup := newUUID()
	if err := n.engine.StartBackup(server, createBody(backup)); err != nil {
		t.Fatalf("StartBackup: %v", err)
	}
	st, err := n.engine.BackupStatus(server, backup)
	if err != nil || st.Kind != "create" || st.Finished() || st.Server != server {
		t.Fatalf("status: %+v %v", st, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var progress []uint64
	for len(progress) < 2 {
		st, err = n.engine.WaitBackup(ctx, server, backup, st.Seq)
		if err != nil || st.Finished() {
			t.Fatalf("wait: %+v %v", st, err)
		}
		if st.Phase == "archive" {
			progress = append(progress, st.BytesDone)
		}
	}
	if progress[1] < progress[0] || st.BytesTotal < uint64(len(noise)) {
		t.Fatalf("progress %v of %d", progress, st.BytesTotal)
	}
	began := time.Now()
	if err := n.engine.CancelBackup(server, backup); err != nil {
		t.Fatalf("CancelBackup: %v", err)
	}
	for !st.Finished() {
		if st, err = n.engine.WaitBackup(ctx, server, backup, st.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("cancel took %v", took)
	}
	if st.State != "cancelled" || !errors.Is(st.Err(), wingsbackup.ErrCancelled) || st.FinishedAt == nil {
		t.Fatalf("ended: %+v", st)
	}
	if !n.engine.WaitIdle(5 * time.Second) {
		t.Fatal("the engine's threads did not end")
	}
	if names := backupDirNames(t, n.backups); len(names) != 0 {
		t.Fatalf("backup directory after a cancelled backup: %v", names)
	}
	if err := n.engine.CancelBackup(server, backup); !errors.Is(err, wingsbackup.ErrConflict) {
		t.Fatalf("cancel of an ended backup: %v", err)
	}
}

// List and delete-all keep to their server.
func TestListAndDeleteAll(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	s1, s2 := n.server(t), n.server(t)
	b1, b2, b3 := newUUID(), newUUID(), newUUID()
	ctx := context.Background()
	for _, c := range []struct{ server, backup string }{{s1, b1}, {s1, b2}, {s2, b3}} {
		if err := n.engine.StartBackup(c.server, createBody(c.backup)); err != nil {
			t.Fatal(err)
		}
		st, err := n.engine.WaitBackup(ctx, c.server, c.backup, 1<<62)
		for err == nil && !st.Finished() {
			st, err = n.engine.WaitBackup(ctx, c.server, c.backup, st.Seq)
		}
		if err != nil || st.State != "succeeded" || len(st.Checksum) != 40 {
			t.Fatalf("%+v %v", st, err)
		}
	}
	list, err := n.engine.ListBackups(s1)
	if err != nil || len(list) != 2 || list[0].UUID != b2 || list[1].UUID != b1 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if deleted, err := n.engine.DeleteAllBackups(s1); err != nil || deleted != 2 {
		t.Fatalf("delete-all: %d %v", deleted, err)
	}
	if _, err := n.engine.BackupStatus(s1, b1); !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Fatalf("status after delete-all: %v", err)
	}
	if _, err := os.Stat(n.archive(b3)); err != nil {
		t.Fatalf("the other server's archive: %v", err)
	}
	if list, _ := n.engine.ListBackups(s2); len(list) != 1 {
		t.Fatalf("the other server's list: %+v", list)
	}
}
