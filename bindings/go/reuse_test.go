package wingsbackup_test

import (
	"context"
	"fmt"
	"testing"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// A second backup of an unchanged server copies the first one's members and
// says so in Details; "reuse": false and the BackupReuse setting read
// everything again.
func TestSecondBackupReusesTheFirst(t *testing.T) {
	create := func(n *node, server, body string) wingsbackup.Details {
		t.Helper()
		d, err := n.engine.CreateBackup(context.Background(), server, []byte(body), nil)
		if err != nil {
			t.Fatalf("CreateBackup: %v", err)
		}
		return d
	}
	n := newNode(t, wingsbackup.Config{})
	server := n.server(t)
	if d := create(n, server, string(createBody(newUUID()))); d.ReusedMembers != 0 || d.ReusedBytes != 0 {
		t.Errorf("first backup reused %d members", d.ReusedMembers)
	}
	d := create(n, server, string(createBody(newUUID())))
	if d.ReusedMembers < 1 || d.ReusedBytes <= 0 || d.ReusedBytes > d.Size {
		t.Errorf("second backup reused %d members, %d bytes of %d", d.ReusedMembers, d.ReusedBytes, d.Size)
	}
	full := fmt.Sprintf(`{"adapter":"wings","uuid":%q,"ignore":"","reuse":false}`, newUUID())
	if d := create(n, server, full); d.ReusedMembers != 0 {
		t.Errorf(`"reuse": false reused %d members`, d.ReusedMembers)
	}

	off := false
	n = newNode(t, wingsbackup.Config{BackupReuse: &off})
	server = n.server(t)
	create(n, server, string(createBody(newUUID())))
	if d := create(n, server, string(createBody(newUUID()))); d.ReusedMembers != 0 {
		t.Errorf("BackupReuse false: reused %d members", d.ReusedMembers)
	}
}
