"""The HTTP application: routing, authentication, JSON bodies, statuses. The
engine runs the long calls on threads of its own, and the node's policy
(backups running at once and the queue, what is a 409, deleting or
cancelling a running or queued backup, the messages) is the engine's."""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import wings_backup as wb

log = logging.getLogger("python-host")

BODY_LIMIT = 1 << 20
WAITRESS_BODY_LIMIT = 16 << 20
HTTP_THREADS = 64  # a synchronous restore holds one for its whole length
SHUTDOWN_WAIT_S = 30.0

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

MSG_NO_AUTH = "The required authorization heads were not present in the request."
MSG_FORBIDDEN = "You are not authorized to access this endpoint."
MSG_NO_SERVER = "The requested resource does not exist on this instance."
MSG_NOT_ALLOWED = "The requested method is not allowed on this endpoint."
MSG_TOO_LARGE = "The request body is larger than the 1 MiB allowed."
MSG_UNEXPECTED = "An unexpected error was encountered while processing this request."
MSG_BAD_REQUEST = "The request could not be parsed."
MSG_HEADERS_TOO_LARGE = "The request headers are too large."


def json_error(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def compact(value: Any) -> str:
    """JSON as the library writes it (and the Go host passes on)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def raw_json(status: int, value: Any) -> Response:
    return Response(compact(value) + "\n", status=status, mimetype="application/json")


def empty(status: int) -> Response:
    resp = Response(status=status)
    del resp.headers["Content-Type"]
    return resp


class Host:
    def __init__(self, engine: wb.Engine, token: str, data_dir: str, async_restore: bool) -> None:
        self.engine = engine
        self.token = token.encode("utf-8")
        self.data_dir = data_dir
        self.async_restore = async_restore
        self.threads: List[threading.Thread] = []
        self.threads_lock = threading.Lock()
        self.background_token = wb.CancelToken()  # for sending parked reports
        self.app = self._make_app()

    # -- request plumbing ---------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask("wings_backup_python_host")
        app.config["MAX_CONTENT_LENGTH"] = BODY_LIMIT
        # "//" in a path is a 404 as in the Go host, not a redirect to the
        # merged path.
        app.url_map.merge_slashes = False
        app.before_request(self.authenticate)
        app.before_request(self.refuse_leading_slashes)
        app.before_request(self.refuse_head)
        # No automatic OPTIONS answer: a method the endpoint does not take is
        # 405, whatever it is (as in the Go host).
        app.add_url_rule("/api/servers/<server>/backup", "create", self.create, methods=["POST"],
                         provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>/restore", "restore", self.restore,
                         methods=["POST"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>", "delete", self.delete,
                         methods=["DELETE"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>", "status", self.status,
                         methods=["GET"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>/cancel", "cancel", self.cancel,
                         methods=["POST"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>/events", "events", self.events,
                         methods=["GET"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backups", "list", self.list_backups,
                         methods=["GET"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backups", "delete_all", self.delete_all,
                         methods=["DELETE"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/deleteAllBackups", "delete_all_pelican",
                         self.delete_all, methods=["DELETE"], provide_automatic_options=False)
        app.register_error_handler(wb.WingsBackupError, self.engine_error)
        app.register_error_handler(HTTPException, self.http_error)
        app.register_error_handler(Exception, self.unexpected_error)
        return app

    def authenticate(self) -> Optional[Response]:
        # As Wings: split on the first space; the scheme is "Bearer", exactly.
        parts = request.headers.get("Authorization", "").split(" ", 1)
        if len(parts) != 2 or parts[0] != "Bearer":
            return json_error(401, MSG_NO_AUTH, {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(parts[1].encode("latin-1", "replace"), self.token):
            return json_error(403, MSG_FORBIDDEN)
        return None

    @staticmethod
    def refuse_leading_slashes() -> Optional[Response]:
        # waitress turns "//api/..." into "/api/..."; the Go host (and Wings)
        # have no such route.
        if request.environ.get("REQUEST_URI", "").startswith("//"):
            return json_error(404, MSG_NO_SERVER)
        return None

    @staticmethod
    def refuse_head() -> None:
        # Flask answers HEAD on every GET route; the Go host (and Wings) do not.
        if request.method == "HEAD":
            allowed = current_app.url_map.bind_to_environ(request.environ).allowed_methods()
            if allowed:
                raise MethodNotAllowed(valid_methods=list(allowed))

    def engine_error(self, e: wb.WingsBackupError) -> Response:
        return json_error(e.http_status, e.message)

    def http_error(self, e: HTTPException) -> Response:
        messages = {404: MSG_NO_SERVER, 405: MSG_NOT_ALLOWED, 413: MSG_TOO_LARGE}
        status = e.code or 500
        resp = json_error(status, messages.get(status, e.name))
        allowed = sorted(m for m in getattr(e, "valid_methods", None) or [] if m not in ("HEAD", "OPTIONS"))
        if allowed:
            resp.headers["Allow"] = ", ".join(allowed)
        return resp

    def unexpected_error(self, e: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, MSG_UNEXPECTED)

    def require_server(self, server: str) -> None:
        """Wings' ServerExists: a canonical UUID naming a server directory, else 404."""
        if not UUID_RE.fullmatch(server) or not os.path.isdir(os.path.join(self.data_dir, server)):
            raise wb.NotFoundError(wb.Status.NOT_FOUND, MSG_NO_SERVER)

    @staticmethod
    def body() -> bytes:
        return request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH

    # -- endpoints ------------------------------------------------------------

    def create(self, server: str) -> Response:
        self.require_server(server)
        body = self.body()
        self.engine.start_backup(server, body)
        fields = json.loads(body)  # the engine has read it: an object with a uuid
        backup = str(fields["uuid"]).lower()
        self._watch("backup", server, backup)
        if fields.get("wait") is not True:
            return empty(202)
        state = self._finished(server, backup)
        error = self.engine.state_error(state)
        if error is not None:
            raise error
        return raw_json(200, state.raw)

    def restore(self, server: str, backup: str) -> Response:
        self.require_server(server)
        body = self.body()
        self.engine.start_restore(server, backup, body)
        self._watch("restore", server, backup.lower())
        if self.async_restore:
            return empty(202)
        # A client that gives up does not stop it halfway: only a cancel or
        # shutdown does.
        error = self.engine.state_error(self._finished(server, backup))
        if error is not None:
            raise error
        return empty(204)

    def delete(self, server: str, backup: str) -> Response:
        """The engine cancels a backup of that uuid still running or queued."""
        self.require_server(server)
        self.engine.delete_backup(server, backup)
        log.info("backup deleted backup=%s server=%s", backup.lower(), server)
        return empty(204)

    def status(self, server: str, backup: str) -> Response:
        self.require_server(server)
        return raw_json(200, self.engine.backup_status(server, backup).raw)

    def cancel(self, server: str, backup: str) -> Response:
        self.require_server(server)
        self.engine.cancel_backup(server, backup)
        return empty(202)

    def list_backups(self, server: str) -> Response:
        self.require_server(server)
        return raw_json(200, [s.raw for s in self.engine.list_backups(server)])

    def delete_all(self, server: str) -> Response:
        self.require_server(server)
        deleted = self.engine.delete_all_backups(server)
        log.info("backups deleted server=%s count=%d", server, deleted)
        return raw_json(200, {"deleted": deleted})

    def events(self, server: str, backup: str) -> Response:
        """Server-sent events: "progress" with the state (at most 4 a
        second), then one "done", and the stream ends."""
        self.require_server(server)
        first = self.engine.backup_status(server, backup)

        def stream() -> Iterator[bytes]:
            state = first
            while True:
                event = "done" if state.finished else "progress"
                yield f"event: {event}\ndata: {compact(state.raw)}\n\n".encode()
                if state.finished:
                    return
                state = self.engine.wait_backup(server, backup, state.seq, timeout=30)

        resp = Response(stream(), status=200, mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    # -- background work ------------------------------------------------------

    def _finished(self, server: str, backup: str) -> wb.BackupState:
        """Waits until the newest operation of the backup has ended."""
        state = self.engine.wait_backup(server, backup, 0, timeout=0)
        while not state.finished:
            state = self.engine.wait_backup(server, backup, state.seq, timeout=30)
        return state

    def _watch(self, kind: str, server: str, backup: str) -> None:
        """Logs the end of a call the engine has accepted."""
        began = time.monotonic()

        def watch() -> None:
            try:
                state = self._finished(server, backup)
            except wb.WingsBackupError as e:  # deleted meanwhile
                log.warning("%s finished backup=%s server=%s outcome=%s error=%r", kind, backup, server,
                            e.status_name, e.message)
                return
            took = time.monotonic() - began
            error = self.engine.state_error(state)
            if error is None:
                sha1 = f" sha1={state.checksum}" if state.checksum else ""
                log.info("%s finished backup=%s server=%s outcome=ok bytes=%d%s duration=%.3fs",
                         kind, backup, server, state.size, sha1, took)
            else:
                log.warning("%s finished backup=%s server=%s outcome=%s bytes=%d duration=%.3fs error=%r",
                            kind, backup, server, error.status_name, state.size, took, error.message)

        self._spawn(watch)

    def _spawn(self, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, daemon=True, name=target.__name__)
        with self.threads_lock:
            self.threads = [x for x in self.threads if x.is_alive()] + [t]
        t.start()

    def send_pending_reports(self) -> None:
        try:
            summary = self.engine.send_pending_reports(cancel=self.background_token)
            if summary.get("sent") or summary.get("pending"):
                log.info("pending Panel reports sent=%s still_pending=%s",
                         summary.get("sent"), summary.get("pending"))
        except wb.WingsBackupError as e:
            log.warning("sending pending Panel reports: %s", e.message)

    # -- shutdown -------------------------------------------------------------

    def shut_down(self, deadline: float) -> bool:
        """Has the engine cancel every call (and refuse new ones), and waits
        for the threads running them until `deadline`; True if they all ended."""
        self.background_token.cancel()
        self.engine.cancel_all()
        if not self.engine.wait_idle(max(0.0, deadline - time.monotonic())):
            return False
        with self.threads_lock:
            threads = list(self.threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


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

