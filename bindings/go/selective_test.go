package wingsbackup_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// TestSelectiveRestore: RestoreRequest.Paths restores only the named
// entries; the rest of the server keeps what it had.
func TestSelectiveRestore(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	root := n.root(server)
	backup := newUUID()
	level, err := os.ReadFile(filepath.Join(root, "world", "level.dat"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), nil); err != nil {
		t.Fatalf("CreateBackup: %v", err)
	}
	write := func(rel, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("world/level.dat", "damaged")
	write("world/later.txt", "made after the backup")
	write("server.properties", "changed")

	req := wingsbackup.RestoreRequest{Adapter: "wings", TruncateDirectory: true, Paths: []string{"/world/"}}
	if got := string(req.JSON()); got != `{"adapter":"wings","truncate_directory":true,"paths":["/world/"]}` {
		t.Errorf("JSON %s", got)
	}
	if err := n.engine.CheckRestore(server, backup, req.JSON()); err != nil {
		t.Fatalf("CheckRestore: %v", err)
	}
	if err := n.engine.RestoreBackup(context.Background(), server, backup, req.JSON(), nil); err != nil {
		t.Fatalf("RestoreBackup: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "world", "level.dat")); !bytes.Equal(got, level) {
		t.Errorf("world/level.dat not restored")
	}
	if _, err := os.Stat(filepath.Join(root, "world", "later.txt")); !os.IsNotExist(err) {
		t.Errorf("world/later.txt kept by a truncating restore of world: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "server.properties")); string(got) != "changed" {
		t.Errorf("server.properties is %q: a file outside the selection changed", got)
	}

	for _, c := range []struct {
		paths []string
		want  error
	}{
		{[]string{"not-in-backup.txt"}, wingsbackup.ErrNotFound},
		{[]string{"../x"}, wingsbackup.ErrInvalidArgument},
	} {
		req := wingsbackup.RestoreRequest{Adapter: "wings", Paths: c.paths}
		err := n.engine.RestoreBackup(context.Background(), server, backup, req.JSON(), nil)
		if !errors.Is(err, c.want) {
			t.Errorf("paths %q: %v, want %v", c.paths, err, c.want)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(root, "server.properties")); string(got) != "changed" {
		t.Errorf("a refused restore changed server.properties")
	}
}
