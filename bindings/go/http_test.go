package wingsbackup_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// HandleHTTP gives the library's answer, ready to send; an event stream
// goes on with NextHTTPEvent until its "done" event.
func TestHandleHTTPAnswersRoutesAndStreamsEvents(t *testing.T) {
	n := newNode(t, wingsbackup.Config{})
	server, backup := n.server(t), newUUID()
	base := "/api/servers/" + server
	do := func(req wingsbackup.HTTPRequest) wingsbackup.HTTPResponse {
		t.Helper()
		resp, err := n.engine.HandleHTTP(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.Path, err)
		}
		return resp
	}
	r := do(wingsbackup.HTTPRequest{Method: "GET", Path: base + "/nothing"})
	if r.Status != 404 || r.Body != `{"error":"The requested resource does not exist on this instance."}`+"\n" ||
		len(r.Headers) != 1 || r.Headers[0] != [2]string{"Content-Type", "application/json"} {
		t.Errorf("unknown path: %+v", r)
	}
	r = do(wingsbackup.HTTPRequest{Method: "PUT", Path: base + "/backups"})
	if r.Status != 405 || r.Headers[1] != [2]string{"Allow", "DELETE, GET"} {
		t.Errorf("405: %+v", r)
	}
	r = do(wingsbackup.HTTPRequest{Method: "POST", Path: base + "/backup", BodyError: wingsbackup.BodyTooLarge})
	if r.Status != 413 {
		t.Errorf("too large: %+v", r)
	}
	r = do(wingsbackup.HTTPRequest{Method: "POST", Path: base + "/backup", Body: createBody(backup)})
	if r.Status != 202 || r.Body != "" || len(r.Headers) != 0 || r.Started == nil || r.Started.Backup != backup {
		t.Fatalf("create: %+v", r)
	}
	end, err := n.engine.HTTPOperationEnd(*r.Started, 30*time.Second)
	if err != nil || !end.Ended || end.Message != "backup finished" || end.SlogLevel() != slog.LevelInfo ||
		end.Fields[0] != [2]string{"server", server} || end.Fields[len(end.Fields)-1] != [2]string{"outcome", "ok"} {
		t.Errorf("operation end: %+v %v", end, err)
	}
	r = do(wingsbackup.HTTPRequest{Method: "GET", Path: base + "/backup/" + backup + "/events"})
	chunks, stream := []string{r.Body}, r.Stream
	deadline := time.Now().Add(30 * time.Second)
	for stream != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no done event: %q", chunks)
		}
		ev, err := n.engine.NextHTTPEvent(*stream, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Chunk != nil {
			chunks = append(chunks, *ev.Chunk)
			stream.Seq = ev.Seq
			if ev.Done {
				stream = nil
			}
		}
	}
	last := chunks[len(chunks)-1]
	if !strings.HasPrefix(last, "event: done\ndata: {") || !strings.Contains(last, `"state":"succeeded"`) {
		t.Errorf("last event: %q", last)
	}
	r = do(wingsbackup.HTTPRequest{Method: "POST", Path: base + "/backup/" + backup + "/restore",
		Body: []byte(`{"adapter":"wings","truncate_directory":true}`)})
	if r.Status != 204 || r.Started == nil || r.Started.Kind != "restore" {
		t.Errorf("restore: %+v", r)
	}
	r = do(wingsbackup.HTTPRequest{Method: "DELETE", Path: base + "/deleteAllBackups"})
	if r.Status != 200 || r.Body != "{\"deleted\":1}\n" {
		t.Errorf("delete all: %+v", r)
	}
}
