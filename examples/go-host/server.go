package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	wingsbackup "github.com/wings-backup/wings-backup/bindings/go"
)

// maxBody is the largest request body passed on (docs/api.md section 1).
const maxBody = 1 << 20

// maxEventStreams is how many event streams (GET .../events, which last as
// long as their backup) a host keeps open at once; more are answered 503
// with Retry-After (docs/api.md section 5.1). The Python host has the same
// limit, which leaves it threads for every other request.
const maxEventStreams = 32

// retryAfterStreams is the Retry-After, in seconds, of that 503.
const retryAfterStreams = "5"

// drainLimit is how much of an oversized body is read and dropped before
// answering 413, so the client is not reset while it is still sending.
const drainLimit = 16 << 20

// Messages of the Wings API the host answers itself (authentication); the
// library words every other answer.
const (
	msgNoAuth         = "The required authorization heads were not present in the request."
	msgForbidden      = "You are not authorized to access this endpoint."
	msgUnexpected     = "An unexpected error was encountered while processing this request."
	msgTooManyStreams = "Too many event streams are open on this node; try again later."
)

// server checks the bearer token, reads the body within its limits, hands
// the request to the library (Engine.HandleHTTP: routes, statuses and
// messages are the library's; it logs the end of each backup or restore a
// request started), writes its answer and, for an event stream, the events
// that follow.
type server struct {
	engine       *wingsbackup.Engine
	log          *slog.Logger
	tokenSum     [32]byte
	asyncRestore bool
	// streams counts the event streams open (at most maxEventStreams).
	streams atomic.Int32
}

func newServer(engine *wingsbackup.Engine, log *slog.Logger, token string, asyncRestore bool) *server {
	return &server{engine: engine, log: log, tokenSum: sha256.Sum256([]byte(token)), asyncRestore: asyncRestore}
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
	body, bodyErr := readBody(r)
	resp, err := s.engine.HandleHTTP(wingsbackup.HTTPRequest{Method: r.Method, Path: r.URL.Path,
		Query: r.URL.RawQuery, Body: body, BodyError: bodyErr, AsyncRestore: s.asyncRestore})
	if err != nil {
		writeEngineError(rec, err)
		return
	}
	if resp.Stream != nil {
		if s.streams.Add(1) > maxEventStreams {
			s.streams.Add(-1)
			rec.Header().Set("Retry-After", retryAfterStreams)
			writeError(rec, http.StatusServiceUnavailable, msgTooManyStreams)
			return
		}
		defer s.streams.Add(-1)
	}
	for _, h := range resp.Headers {
		rec.Header().Set(h[0], h[1])
	}
	rec.WriteHeader(resp.Status)
	if resp.Body != "" {
		_, _ = io.WriteString(rec, resp.Body)
	}
	if resp.Stream != nil {
		s.events(rec, r, *resp.Stream)
	}
}

// authorize checks `Authorization: Bearer <token>`, before anything else.
// The header sent more than once, or a value holding a comma (the form in
// which HTTP joins several), is ambiguous: 401, as in the Python host, whose
// server joins repeated headers with ", " (docs/api.md section 1).
func (s *server) authorize(w http.ResponseWriter, r *http.Request) bool {
	values := r.Header.Values("Authorization")
	scheme, token, ok := "", "", false
	if len(values) == 1 && !strings.Contains(values[0], ",") {
		scheme, token, ok = strings.Cut(values[0], " ")
	}
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

// readBody reads a body of at most maxBody bytes, or says why it could not
// (the library answers 413, 400 or 408 on the routes that read one).
func readBody(r *http.Request) ([]byte, wingsbackup.BodyError) {
	if r.ContentLength > drainLimit {
		return nil, wingsbackup.BodyTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, wingsbackup.BodyTimedOut
		}
		return nil, wingsbackup.BodyUnreadable
	}
	if len(body) > maxBody {
		_, _ = io.CopyN(io.Discard, r.Body, drainLimit)
		return nil, wingsbackup.BodyTooLarge
	}
	return body, wingsbackup.BodyRead
}

// events writes the events of a stream as the library renders them,
// flushing each, until the "done" event or the client goes.
func (s *server) events(w http.ResponseWriter, r *http.Request, stream wingsbackup.HTTPStream) {
	rc := http.NewResponseController(w)
	for rc.Flush() == nil && r.Context().Err() == nil {
		ev, err := s.engine.NextHTTPEvent(stream, time.Second)
		if err != nil {
			return
		}
		if ev.Chunk == nil {
			continue
		}
		if _, err := io.WriteString(w, *ev.Chunk); err != nil || ev.Done {
			_ = rc.Flush()
			return
		}
		stream.Seq = ev.Seq
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// writeEngineError answers a library call that failed itself (a closed
// engine) with its status mapped to HTTP; anything else is a generic 500.
func writeEngineError(w http.ResponseWriter, err error) {
	var e *wingsbackup.Error
	if errors.As(err, &e) {
		writeError(w, e.Status.HTTPStatus(), e.Message)
		return
	}
	writeError(w, http.StatusInternalServerError, msgUnexpected)
}
