package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// maxBody is the largest request body accepted (docs/api.md section 1).
const maxBody = 1 << 20

// drainLimit is how much of an oversized body is read and dropped before
// answering 413, so the client is not reset while it is still sending.
const drainLimit = 16 << 20

// Messages of the Wings API (worded as Wings words them; docs/api.md section 1).
const (
	msgNoAuth     = "The required authorization heads were not present in the request."
	msgForbidden  = "You are not authorized to access this endpoint."
	msgNoResource = "The requested resource does not exist on this instance."
	msgNotAllowed = "The requested method is not allowed on this endpoint."
	msgTooLarge   = "The request body is larger than the 1 MiB allowed."
	msgUnreadable = "The request body could not be read."
	msgSlowBody   = "The request body was not received in time."
	msgUnexpected = "An unexpected error was encountered while processing this request."
)

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// server answers the backup endpoints of docs/api.md sections 1-5: Wings'
// three, and the status, list, cancel, events and delete-all routes.
type server struct {
	engine       *wingsbackup.Engine
	ops          *operations
	log          *slog.Logger
	tokenSum     [32]byte
	dataDir      string
	asyncRestore bool
}

func newServer(engine *wingsbackup.Engine, ops *operations, log *slog.Logger, token, dataDir string, asyncRestore bool) *server {
	return &server{
		engine:       engine,
		ops:          ops,
		log:          log,
		tokenSum:     sha256.Sum256([]byte(token)),
		dataDir:      dataDir,
		asyncRestore: asyncRestore,
	}
}

// recorder remembers the status a handler wrote, for the request log.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection (to flush an
// event stream).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	rec := &recorder{ResponseWriter: w}
	defer func() {
		s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"duration", time.Since(began).Round(time.Microsecond), "remote", r.RemoteAddr)
	}()
	if !s.authorize(rec, r) {
		return
	}
	s.route(rec, r)
}

// authorize checks `Authorization: Bearer <token>`, before anything else.
func (s *server) authorize(w http.ResponseWriter, r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || scheme != "Bearer" {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, http.StatusUnauthorized, msgNoAuth)
		return false
	}
	// Comparing digests keeps the comparison constant-time in the length too.
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
		writeError(w, http.StatusForbidden, msgForbidden)
		return false
	}
	return true
}

func (s *server) route(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/servers/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) < 2 || slices.Contains(parts, "") {
		writeError(w, http.StatusNotFound, msgNoResource)
		return
	}
	type handler func(w http.ResponseWriter, r *http.Request, server string, parts []string)
	var methods map[string]handler
	switch {
	case len(parts) == 2 && parts[1] == "backup":
		methods = map[string]handler{http.MethodPost: s.create}
	case len(parts) == 2 && parts[1] == "backups":
		methods = map[string]handler{http.MethodGet: s.list, http.MethodDelete: s.deleteAll}
	case len(parts) == 2 && parts[1] == "deleteAllBackups":
		methods = map[string]handler{http.MethodDelete: s.deleteAll}
	case len(parts) == 3 && parts[1] == "backup":
		methods = map[string]handler{http.MethodGet: s.status, http.MethodDelete: s.delete}
	case len(parts) == 4 && parts[1] == "backup" && parts[3] == "restore":
		methods = map[string]handler{http.MethodPost: s.restore}
	case len(parts) == 4 && parts[1] == "backup" && parts[3] == "cancel":
		methods = map[string]handler{http.MethodPost: s.cancel}
	case len(parts) == 4 && parts[1] == "backup" && parts[3] == "events":
		methods = map[string]handler{http.MethodGet: s.events}
	default:
		writeError(w, http.StatusNotFound, msgNoResource)
		return
	}
	handle, ok := methods[r.Method]
	if !ok {
		allowed := make([]string, 0, len(methods))
		for m := range methods {
			allowed = append(allowed, m)
		}
		slices.Sort(allowed)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, msgNotAllowed)
		return
	}
	if !s.serverExists(parts[0]) {
		writeError(w, http.StatusNotFound, msgNoResource)
		return
	}
	handle(w, r, parts[0], parts)
}

// serverExists is Wings' ServerExists middleware: a canonical UUID naming a
// directory under the data directory.
func (s *server) serverExists(id string) bool {
	if !uuidPattern.MatchString(id) {
		return false
	}
	info, err := os.Stat(filepath.Join(s.dataDir, id))
	return err == nil && info.IsDir()
}

// readBody reads a body of at most maxBody bytes, or answers 413/400.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > drainLimit {
		writeError(w, http.StatusRequestEntityTooLarge, msgTooLarge)
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		// The connection cannot carry another request after a failed read.
		w.Header().Set("Connection", "close")
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			writeError(w, http.StatusRequestTimeout, msgSlowBody)
		} else {
			writeError(w, http.StatusBadRequest, msgUnreadable)
		}
		return nil, false
	}
	if len(body) > maxBody {
		_, _ = io.CopyN(io.Discard, r.Body, drainLimit)
		writeError(w, http.StatusRequestEntityTooLarge, msgTooLarge)
		return nil, false
	}
	return body, true
}

// create is POST /api/servers/:uuid/backup: 202 once the library has
// accepted the backup (it may then wait for a slot) on a thread of its
// own; with "wait": true in the body, 200 with its state once it has ended.
func (s *server) create(w http.ResponseWriter, r *http.Request, server string, _ []string) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req struct {
		UUID string
		Wait bool
	} // the library reads the rest of the body
	_ = json.Unmarshal(body, &req)
	backup := strings.ToLower(req.UUID)
	if err := s.engine.StartBackup(server, body); err != nil {
		writeEngineError(w, err)
		return
	}
	s.ops.started("backup", server, backup)
	if !req.Wait {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	st, err := s.ops.finished(r.Context(), server, backup)
	if err == nil {
		err = st.Err()
	}
	if err != nil {
		writeEngineError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st.Raw)
}

// restore is POST /api/servers/:uuid/backup/:id/restore: 204 once the files
// are in place (the engine tells the Panel in the background), or 202 once
// started, with --async-restore. A client that gives up does not undo it
// halfway: only a cancel or shutdown stops it.
func (s *server) restore(w http.ResponseWriter, r *http.Request, server string, parts []string) {
	backup := strings.ToLower(parts[2])
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	if err := s.engine.StartRestore(server, backup, body); err != nil {
		writeEngineError(w, err)
		return
	}
	s.ops.started("restore", server, backup)
	if s.asyncRestore {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	st, err := s.ops.finished(r.Context(), server, backup)
	if err == nil {
		err = st.Err()
	}
	if err != nil {
		writeEngineError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// delete is DELETE /api/servers/:uuid/backup/:id; the library cancels a
// backup of that uuid still running or queued first.
func (s *server) delete(w http.ResponseWriter, r *http.Request, server string, parts []string) {
	if err := s.engine.DeleteBackup(server, parts[2]); err != nil {
		writeEngineError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// status is GET /api/servers/:uuid/backup/:id: the backup's state.
func (s *server) status(w http.ResponseWriter, r *http.Request, server string, parts []string) {
	st, err := s.engine.BackupStatus(server, parts[2])
	if err != nil {
		writeEngineError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st.Raw)
}

// cancel is POST /api/servers/:uuid/backup/:id/cancel: 202, the create or
// restore stops within a second.
func (s *server) cancel(w http.ResponseWriter, r *http.Request, server string, parts []string) {
	if err := s.engine.CancelBackup(server, parts[2]); err != nil {
		writeEngineError(w, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// list is GET /api/servers/:uuid/backups: the server's backups, newest first.
func (s *server) list(w http.ResponseWriter, r *http.Request, server string, _ []string) {
	list, err := s.engine.ListBackups(server)
	if err != nil {
		writeEngineError(w, err)
		return
	}
	raw := make([]json.RawMessage, len(list))
	for i, st := range list {
		raw[i] = st.Raw
	}
	body, _ := json.Marshal(raw)
	writeJSON(w, http.StatusOK, body)
}

// deleteAll is DELETE /api/servers/:uuid/backups (and Pelican's
// /deleteAllBackups): every local archive of the server goes, its creates
// in flight are cancelled.
func (s *server) deleteAll(w http.ResponseWriter, r *http.Request, server string, _ []string) {
	n, err := s.engine.DeleteAllBackups(server)
	if err != nil {
		writeEngineError(w, err)
		return
	}
	body, _ := json.Marshal(map[string]int{"deleted": n})
	writeJSON(w, http.StatusOK, body)
}

// events is GET /api/servers/:uuid/backup/:id/events: a text/event-stream
// of "progress" events (the state, at most 4 a second) and one "done"
// event, after which the stream ends.
func (s *server) events(w http.ResponseWriter, r *http.Request, server string, parts []string) {
	st, err := s.engine.BackupStatus(server, parts[2])
	if err != nil {
		writeEngineError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for {
		event := "progress"
		if st.Finished() {
			event = "done"
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, st.Raw); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		if st.Finished() {
			return
		}
		if st, err = s.engine.WaitBackup(r.Context(), server, parts[2], st.Seq); err != nil {
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// writeEngineError answers a library error with its status mapped to HTTP by
// the library (docs/api.md section 2) and its message, which never carries
// host paths. Anything else is a generic 500.
func writeEngineError(w http.ResponseWriter, err error) {
	var e *wingsbackup.Error
	if errors.As(err, &e) {
		writeError(w, e.Status.HTTPStatus(), e.Message)
		return
	}
	writeError(w, http.StatusInternalServerError, msgUnexpected)
}
