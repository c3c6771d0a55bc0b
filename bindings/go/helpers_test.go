package wingsbackup_test

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// node is an engine over temporary data and backup directories.
type node struct {
	engine  *wingsbackup.Engine
	data    string
	backups string
}

func newNode(t *testing.T, cfg wingsbackup.Config) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{data: filepath.Join(dir, "volumes"), backups: filepath.Join(dir, "backups")}
	cfg.DataDirectory = n.data
	cfg.BackupDirectory = n.backups
	if cfg.Threads == 0 {
		cfg.Threads = 2
	}
	e, err := wingsbackup.NewEngine(cfg)
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	n.engine = e
	return n
}

// server creates a server directory with a small tree and returns its uuid.
func (n *node) server(t *testing.T) string {
	t.Helper()
	id := newUUID()
	root := filepath.Join(n.data, id)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTree(t, root)
	return id
}

func (n *node) root(server string) string { return filepath.Join(n.data, server) }

func (n *node) archive(backup string) string {
	return filepath.Join(n.backups, backup+".tar.gz")
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func createBody(backup string) []byte {
	return []byte(fmt.Sprintf(`{"adapter":"wings","uuid":%q,"ignore":""}`, backup))
}

func restoreBody(truncate bool) []byte {
	return []byte(fmt.Sprintf(`{"adapter":"wings","truncate_directory":%t,"download_url":""}`, truncate))
}

// writeTree writes files with various modes, an empty directory and
// symlinks under root.
func writeTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "world", "region"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "logs", "empty"), 0o750))
	must(os.WriteFile(filepath.Join(root, "server.properties"), []byte("motd=hello\nmax-players=20\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "start.sh"), []byte("#!/bin/sh\nexec java -jar server.jar\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "world", "level.dat"), randomBytes(70_000), 0o600))
	must(os.WriteFile(filepath.Join(root, "world", "region", "r.0.0.mca"), []byte(strings.Repeat("chunk", 5000)), 0o640))
	must(os.Symlink("world/level.dat", filepath.Join(root, "level-link")))
	must(os.Symlink("/etc/hostname", filepath.Join(root, "outside-link")))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// snapshot describes a tree: type, permission bits and content (file
// digest or link target) of every entry, without following symlinks.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out, err := treeOf(root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func treeOf(root string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			out[rel] = "link " + target
		case d.IsDir():
			out[rel] = fmt.Sprintf("dir %o", info.Mode().Perm())
		default:
			sum, err := sha1Of(path)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("file %o %s", info.Mode().Perm(), sum)
		}
		return nil
	})
	return out, err
}

func fileSHA1(t *testing.T, path string) string {
	t.Helper()
	sum, err := sha1Of(path)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func sha1Of(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sameTree(t *testing.T, want, got map[string]string) {
	t.Helper()
	var diffs []string
	for k, v := range want {
		if got[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: want %q, got %q", k, v, got[k]))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: unexpected %q", k, v))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Fatalf("trees differ:\n%s", strings.Join(diffs, "\n"))
	}
}

// backupDirNames lists the backup directory, so a test can check that a
// failed backup left nothing behind.
func backupDirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		// Parked reports, the engine's catalog and the s3 backups' indexes are not leftovers.
		if e.Name() == ".pending" || e.Name() == ".s3-indexes" || strings.HasPrefix(e.Name(), ".wings-backup.db") {
			continue
		}
		names = append(names, e.Name())
	}
	return names
}
