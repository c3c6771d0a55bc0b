package wingsbackup_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"testing"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// goTarChildren is what Go's archive/tar says is directly under dir.
func goTarChildren(t *testing.T, archive, dir string) map[string]*tar.Header {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		parent, name := path.Split(p)
		if p != "" && strings.TrimSuffix(parent, "/") == dir {
			out[name] = h
		}
	}
	return out
}

func typeName(h *tar.Header) string {
	switch h.Typeflag {
	case tar.TypeDir:
		return "dir"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeFifo:
		return "fifo"
	default:
		return "file"
	}
}

func TestListFilesMatchesArchiveTar(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	backup := newUUID()
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), nil); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"", "world", "world/region", "logs", "logs/empty"} {
		listing, err := n.engine.ListFiles(server, backup, dir)
		if err != nil {
			t.Fatalf("%q: %v", dir, err)
		}
		if listing.Path != "/"+dir {
			t.Errorf("path %q for %q", listing.Path, dir)
		}
		want := goTarChildren(t, n.archive(backup), dir)
		var names []string
		for name := range want {
			names = append(names, name)
		}
		sort.Strings(names)
		if len(listing.Entries) != len(names) {
			t.Fatalf("%q: %d entries, archive/tar has %v", dir, len(listing.Entries), names)
		}
		for i, e := range listing.Entries {
			h := want[names[i]]
			if e.Name != names[i] || e.Type != typeName(h) || e.Mode != uint32(h.Mode) || e.Mtime != h.ModTime.Unix() {
				t.Errorf("%q: %+v, archive/tar: %s %s %o %d", dir, e, names[i], typeName(h), h.Mode, h.ModTime.Unix())
			}
			if e.Type == "file" && e.Size != h.Size {
				t.Errorf("%s: size %d, archive/tar %d", e.Name, e.Size, h.Size)
			}
			if (e.Link != nil) != (e.Type == "symlink" || e.Type == "hardlink") || (e.Link != nil && *e.Link != h.Linkname) {
				t.Errorf("%s: link %v, archive/tar %q", e.Name, e.Link, h.Linkname)
			}
		}
	}
	_, err := n.engine.ListFiles(server, backup, "no/such/dir")
	if !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Errorf("missing path: %v", err)
	}
	_, err = n.engine.ListFiles(server, backup, "../x")
	if !errors.Is(err, wingsbackup.ErrInvalidArgument) {
		t.Errorf("..: %v", err)
	}
	// The same through the archive-level call.
	listing, err := wingsbackup.ArchiveList(n.archive(backup), "/world/")
	if err != nil || len(listing.Entries) != 2 || listing.Entries[0].Name != "level.dat" {
		t.Errorf("ArchiveList: %+v %v", listing, err)
	}
}

func TestVerifyBackupPassesThenNamesTheDamagedMember(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	backup := newUUID()
	if _, err := n.engine.CreateBackup(context.Background(), server, createBody(backup), nil); err != nil {
		t.Fatal(err)
	}
	var phases []wingsbackup.Phase
	report, err := n.engine.VerifyBackup(context.Background(), server, backup, func(p wingsbackup.Progress) bool {
		phases = append(phases, p.Phase)
		return true
	})
	if err != nil || !report.OK || !report.Indexed || report.ErrorCount != 0 || report.Files != 4 || report.Members < 1 {
		t.Fatalf("good backup: %+v %v", report, err)
	}
	if report.Bytes != int64(len("motd=hello\nmax-players=20\n")+len("#!/bin/sh\nexec java -jar server.jar\n")+70_000+5*5000) {
		t.Errorf("bytes %d", report.Bytes)
	}
	if len(phases) < 2 || phases[0] != wingsbackup.PhaseStarted || phases[len(phases)-1] != wingsbackup.PhaseDone {
		t.Errorf("phases %v", phases)
	}
	data, err := os.ReadFile(n.archive(backup))
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := os.WriteFile(n.archive(backup), data, 0o600); err != nil {
		t.Fatal(err)
	}
	report, err = n.engine.VerifyBackup(context.Background(), server, backup, nil)
	if err != nil || report.OK || report.ErrorCount < 1 || report.Errors[0].Member == nil || report.Errors[0].Offset == nil {
		t.Fatalf("damaged backup: %+v %v", report, err)
	}
	again, err := wingsbackup.ArchiveVerify(context.Background(), n.archive(backup), nil)
	if err != nil || again.OK || *again.Errors[0].Member != *report.Errors[0].Member {
		t.Errorf("ArchiveVerify: %+v %v", again, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.engine.VerifyBackup(ctx, server, backup, nil); !errors.Is(err, wingsbackup.ErrCancelled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := n.engine.VerifyBackup(context.Background(), server, newUUID(), nil); !errors.Is(err, wingsbackup.ErrNotFound) {
		t.Errorf("unknown backup: %v", err)
	}
}
