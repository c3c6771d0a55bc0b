// Command daemon is a Go program in a module of its own, outside the
// checkout, that links an installed libwings_backup through the binding's
// `#cgo pkg-config: wings_backup` (PKG_CONFIG_PATH names the install). It
// backs up a server and restores the archive into a second directory.
//
//	daemon DATA_DIR BACKUP_DIR SERVER_UUID BACKUP_UUID RESTORE_DIR
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: daemon DATA_DIR BACKUP_DIR SERVER_UUID BACKUP_UUID RESTORE_DIR")
		os.Exit(2)
	}
	data, backups, server, backup, restore := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	engine, err := wingsbackup.NewEngine(wingsbackup.Config{DataDirectory: data, BackupDirectory: backups})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer engine.Close()
	request := fmt.Sprintf(`{"adapter":"wings","uuid":%q,"ignore":"*.log"}`, backup)
	details, err := engine.CreateBackup(context.Background(), server, []byte(request), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "create:", err)
		os.Exit(1)
	}
	fmt.Printf("version %s\nchecksum %s size %d files %d\n", wingsbackup.Version(), details.Checksum, details.Size, details.Files)
	archive := filepath.Join(backups, backup+".tar.gz")
	summary, err := wingsbackup.ArchiveExtract(context.Background(), archive, restore, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "extract:", err)
		os.Exit(1)
	}
	fmt.Printf("extracted %d files\n", summary.Files)
}
