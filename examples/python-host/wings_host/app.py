"""The WSGI application: authentication, the request-size limit, one call
to the library (Engine.handle_http: routes, statuses, messages and bodies
are the library's; it runs the long calls on threads of its own and logs
their ends), the answer, and the events of a stream."""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import wings_backup as wb

log = logging.getLogger("python-host")

BODY_LIMIT = 1 << 20
WAITRESS_BODY_LIMIT = 16 << 20
HTTP_THREADS = 64  # a synchronous restore holds one for its whole length
# Event streams (GET .../events) last as long as their backup and hold a
# thread each: at most this many at once (the Go host's maxEventStreams),
# more are 503 with Retry-After, so other requests always find a thread.
MAX_EVENT_STREAMS = 32
RETRY_AFTER_STREAMS = "5"
SHUTDOWN_WAIT_S = 30.0

MSG_NO_AUTH = "The required authorization heads were not present in the request."
MSG_FORBIDDEN = "You are not authorized to access this endpoint."
MSG_TOO_LARGE = "The request body is larger than the 1 MiB allowed."
MSG_UNEXPECTED = "An unexpected error was encountered while processing this request."
MSG_BAD_REQUEST = "The request could not be parsed."
MSG_HEADERS_TOO_LARGE = "The request headers are too large."
MSG_TOO_MANY_STREAMS = "Too many event streams are open on this node; try again later."

Headers = List[Tuple[str, str]]


def json_error(status: int, message: str, headers: Optional[Headers] = None) -> Tuple[int, Headers, bytes]:
    body = json.dumps({"error": message}, separators=(",", ":")).encode() + b"\n"
    return status, [("Content-Type", "application/json")] + (headers or []), body


class Host:
    def __init__(self, engine: wb.Engine, token: str, async_restore: bool) -> None:
        self.engine = engine
        self.token = token.encode("utf-8")
        self.async_restore = async_restore
        self.streams = threading.BoundedSemaphore(MAX_EVENT_STREAMS)

    def app(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, headers, body = self.authenticate(environ) or (0, [], b"")
        stream: Optional[Dict[str, Any]] = None
        if not status:
            try:
                resp = self.handle(environ)
                status, headers, body, stream = resp.status, [tuple(h) for h in resp.headers], resp.body, resp.stream
            except wb.WingsBackupError as e:
                status, headers, body = json_error(e.http_status, e.message)
            except Exception:
                log.exception("%s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
                status, headers, body = json_error(500, MSG_UNEXPECTED)
        if stream and not self.streams.acquire(blocking=False):
            stream = None
            status, headers, body = json_error(503, MSG_TOO_MANY_STREAMS, [("Retry-After", RETRY_AFTER_STREAMS)])
        if not stream and status != 204:
            headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return self.events(body, stream) if stream else [body]

    def authenticate(self, environ: Dict[str, Any]) -> Optional[Tuple[int, Headers, bytes]]:
        # As Wings: split on the first space; the scheme is "Bearer", exactly.
        # waitress joins a repeated header with ", ": a comma means the
        # header came more than once (or holds a list), which is ambiguous,
        # so 401, as in the Go host.
        value = environ.get("HTTP_AUTHORIZATION", "")
        parts = value.split(" ", 1)
        if len(parts) != 2 or parts[0] != "Bearer" or "," in value:
            return json_error(401, MSG_NO_AUTH, [("WWW-Authenticate", "Bearer")])
        if not hmac.compare_digest(parts[1].encode("latin-1", "replace"), self.token):
            return json_error(403, MSG_FORBIDDEN)
        return None

    def handle(self, environ: Dict[str, Any]) -> wb.HttpResponse:
        # WSGI paths are latin-1 text of the request's bytes; waitress turns
        # "//api/..." into "/api/...", which has no route in the Go host.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "surrogateescape")
        if environ.get("REQUEST_URI", "").startswith("//"):
            path = "/" + path
        length = int(environ.get("CONTENT_LENGTH") or 0)
        too_large = length > BODY_LIMIT
        body = b"" if too_large else environ["wsgi.input"].read(length)
        return self.engine.handle_http(environ["REQUEST_METHOD"], path, body, environ.get("QUERY_STRING", ""),
                                       async_restore=self.async_restore,
                                       body_error="too_large" if too_large else None)

    def events(self, first: bytes, stream: Dict[str, Any]) -> Iterator[bytes]:
        """The events of a stream after its first: "progress" with the state
        (at most 4 a second), then one "done"; the stream ends. It holds
        one of `streams`, given back when it ends or its client goes."""
        try:
            yield first
            while True:
                event = self.engine.next_http_event(stream["server"], stream["backup"], stream["seq"], timeout=30)
                if event.chunk is not None:
                    yield event.chunk
                    if event.done:
                        return
                    stream["seq"] = event.seq
        finally:
            self.streams.release()

    def shut_down(self, deadline: float) -> bool:
        """Has the engine cancel every call and its background work (and
        refuse new calls), and waits for them until `deadline` (and for the
        lines it logs when operations end); True if they all ended."""
        self.engine.cancel_all()
        return self.engine.wait_idle(max(0.0, deadline - time.monotonic()))


class RequestLog:
    """WSGI middleware: one log line per request, and a count of requests in
    flight (shutdown waits for them)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.in_flight = 0

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        began = time.monotonic()
        status: List[str] = ["-"]

        def capture(s: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = s.split(" ", 1)[0]
            return start_response(s, headers, exc_info)

        with self.lock:
            self.in_flight += 1
        try:
            yield from self.app(environ, capture)
        finally:
            with self.lock:
                self.in_flight -= 1
            log.info('%s "%s %s" %s %.1fms', environ.get("REMOTE_ADDR", "-"),
                     environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), status[0],
                     (time.monotonic() - began) * 1000)

    def wait_idle(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    return
            time.sleep(0.05)
