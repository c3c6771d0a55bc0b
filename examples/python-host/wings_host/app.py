"""The HTTP application: routing, authentication, JSON bodies, statuses, and
the engine's long calls run on threads of their own. The node's policy
(backups running at once and the queue, what is a 409, deleting a running
or queued backup, the messages) is the engine's."""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

import wings_backup as wb

log = logging.getLogger("python-host")

BODY_LIMIT = 1 << 20
WAITRESS_BODY_LIMIT = 16 << 20
HTTP_THREADS = 64  # a synchronous restore holds one for its whole length
ACCEPT_WAIT_S = 30.0
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


class Call:
    """One backup or restore: the engine's call, from its start to its end."""

    def __init__(self, kind: str, server: str, backup: str) -> None:
        self.kind, self.server, self.backup = kind, server, backup.lower()
        self.cond = threading.Condition()
        self.started = False  # the engine reported phase STARTED: accepted
        self.done = False
        self.error: Optional[wb.WingsBackupError] = None
        self.bytes = 0  # archive bytes: written by a backup, read by a restore
        self.began = time.monotonic()

    def on_progress(self, p: wb.Progress) -> None:
        if p.phase == wb.Phase.STARTED:
            with self.cond:
                self.started = True
                self.cond.notify_all()
        elif p.phase == wb.Phase.EXTRACT:
            self.bytes = p.bytes_done

    def finish(self, error: Optional[wb.WingsBackupError]) -> None:
        with self.cond:
            self.error, self.done = error, True
            self.cond.notify_all()

    def wait_accepted(self, timeout: float) -> Optional[wb.WingsBackupError]:
        """Waits until the engine has accepted the call or it has ended;
        returns its error if it failed before it was accepted."""
        with self.cond:
            self.cond.wait_for(lambda: self.started or self.done, timeout)
            return self.error if self.done and not self.started else None

    def wait_done(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.done, timeout)


def json_error(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


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
        # No automatic OPTIONS answer: a method the endpoint does not take is
        # 405, whatever it is (as in the Go host).
        app.add_url_rule("/api/servers/<server>/backup", "create", self.create, methods=["POST"],
                         provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>/restore", "restore", self.restore,
                         methods=["POST"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>", "delete", self.delete,
                         methods=["DELETE"], provide_automatic_options=False)
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

    def engine_error(self, e: wb.WingsBackupError) -> Response:
        return json_error(e.http_status, e.message)

    def http_error(self, e: HTTPException) -> Response:
        messages = {404: MSG_NO_SERVER, 405: MSG_NOT_ALLOWED, 413: MSG_TOO_LARGE}
        status = e.code or 500
        resp = json_error(status, messages.get(status, e.name))
        allowed = [m for m in getattr(e, "valid_methods", None) or [] if m not in ("HEAD", "OPTIONS")]
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
        self.engine.check_create(server, body)
        call = Call("backup", server, str(json.loads(body)["uuid"]))  # the engine checked it is there
        self._spawn(self._run, call, body)
        return self._accepted(call)

    def restore(self, server: str, backup: str) -> Response:
        self.require_server(server)
        body = self.body()
        self.engine.check_restore(server, backup, body)
        call = Call("restore", server, backup)
        if self.async_restore:
            self._spawn(self._run, call, body)
            return self._accepted(call)
        # Synchronous, on this request's thread. A client that gives up does
        # not stop it halfway: only shutdown cancels it.
        self._run(call, body)
        if call.error is not None:
            raise call.error
        return empty(204)

    def delete(self, server: str, backup: str) -> Response:
        """The engine cancels a backup of that uuid still running or queued."""
        self.require_server(server)
        self.engine.delete_backup(server, backup)
        log.info("backup deleted backup=%s server=%s", backup.lower(), server)
        return empty(204)

    # -- background work ------------------------------------------------------

    @staticmethod
    def _accepted(call: Call) -> Response:
        error = call.wait_accepted(ACCEPT_WAIT_S)
        if error is not None:
            raise error
        return empty(202)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name=target.__name__)
        with self.threads_lock:
            self.threads = [x for x in self.threads if x.is_alive()] + [t]
        t.start()

    def _run(self, call: Call, body: bytes) -> None:
        details: Dict[str, Any] = {}
        error: Optional[wb.WingsBackupError] = None
        try:
            if call.kind == "backup":
                details = self.engine.create_backup(call.server, body, progress=call.on_progress)
                call.bytes = int(details.get("size", 0))
            else:
                self.engine.restore_backup(call.server, call.backup, body, progress=call.on_progress)
        except wb.WingsBackupError as e:
            error = e
        except Exception as e:  # a bug here must still end the call properly
            log.exception("%s %s", call.kind, call.backup)
            error = wb.InternalError(wb.Status.INTERNAL, f"internal error: {e}")
        took = time.monotonic() - call.began
        if error is None:
            sha1 = f" sha1={details['checksum']}" if details.get("checksum") else ""
            log.info("%s finished backup=%s server=%s outcome=ok bytes=%d%s duration=%.3fs",
                     call.kind, call.backup, call.server, call.bytes, sha1, took)
        else:
            log.warning("%s finished backup=%s server=%s outcome=%s bytes=%d duration=%.3fs error=%r",
                        call.kind, call.backup, call.server, error.status_name, call.bytes, took,
                        error.message)
        call.finish(error)

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

