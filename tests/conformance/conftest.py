"""Fixtures of the HTTP conformance suite: a Panel stub and the hosts.

Every test runs against each host ("go" = target/go-host, "python" =
examples/python-host/main.py), started as a subprocess with the same flags on
a free 127.0.0.1 port, temporary data and backup directories, and a Panel
stub that records the callbacks it receives (CONTRACT section 3).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
GO_HOST = REPO / "target" / "go-host"
PYTHON_HOST = REPO / "examples" / "python-host" / "main.py"

PANEL_TOKEN_ID = "conformance-id"
PANEL_TOKEN = "conformance-panel-token"
PANEL_ACCEPT = "application/vnd.pterodactyl.v1+json"
PART_SIZE = 1 << 20

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


# --------------------------------------------------------------------------- Panel stub


@dataclass
class PanelCall:
    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Dict[str, str]
    body: Any
    # Why the stub refused the call (bad Authorization or Accept), or None.
    problem: Optional[str]


@dataclass
class PanelStub:
    url: str
    calls: List[PanelCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, call: PanelCall) -> None:
        with self.lock:
            self.calls.append(call)

    def snapshot(self) -> List[PanelCall]:
        with self.lock:
            return list(self.calls)

    def wait_for(self, pred: Callable[[PanelCall], bool], timeout: float = 8.0) -> List[PanelCall]:
        """The calls matching pred, once there is at least one (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.snapshot() if pred(c)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def backup_reports(self, backup: str, timeout: float = 8.0) -> List[PanelCall]:
        path = f"/api/remote/backups/{backup}"
        return self.wait_for(lambda c: c.method == "POST" and c.path == path, timeout)

    def restore_reports(self, backup: str, timeout: float = 8.0) -> List[PanelCall]:
        path = f"/api/remote/backups/{backup}/restore"
        return self.wait_for(lambda c: c.method == "POST" and c.path == path, timeout)


def _panel_handler(stub: PanelStub) -> type:
    expected_auth = f"Bearer {PANEL_TOKEN_ID}.{PANEL_TOKEN}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _reply(self, status: int, body: Any = None, headers: Optional[Dict[str, str]] = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            headers = {k.lower(): v for k, v in self.headers.items()}
            problem = None
            if split.path.startswith("/upload/"):
                # A presigned S3 UploadPart URL: no Panel headers here.
                stub.record(PanelCall(self.command, split.path, parse_qs(split.query), headers, None, None))
                self._reply(200, headers={"ETag": f'"{secrets.token_hex(8)}"'})
                return
            if headers.get("authorization") != expected_auth:
                problem = f"bad Authorization {headers.get('authorization')!r}"
            elif headers.get("accept") != PANEL_ACCEPT:
                problem = f"bad Accept {headers.get('accept')!r}"
            elif self.command == "POST" and not headers.get("content-type", "").startswith("application/json"):
                problem = f"bad Content-Type {headers.get('content-type')!r}"
            stub.record(PanelCall(self.command, split.path, parse_qs(split.query), headers, body, problem))
            if problem:
                self._reply(403, {"errors": [{"code": "HttpForbiddenException", "status": "403", "detail": problem}]})
                return
            parts = split.path.split("/")
            # /api/remote/backups/<uuid>[/restore]
            if parts[:4] != ["", "api", "remote", "backups"] or len(parts) not in (5, 6):
                self._reply(404, {"errors": [{"code": "NotFoundHttpException", "status": "404", "detail": "not found"}]})
            elif self.command == "GET" and len(parts) == 5:
                size = int(parse_qs(split.query).get("size", ["0"])[0])
                if size <= 0:
                    self._reply(400, {"errors": [{"code": "BadRequestHttpException", "status": "400",
                                                  "detail": 'A non-empty "size" query parameter must be provided.'}]})
                    return
                count = -(-size // PART_SIZE)
                urls = [f"{stub.url}/upload/{parts[4]}/{n}" for n in range(1, count + 1)]
                self._reply(200, {"parts": urls, "part_size": PART_SIZE})
            elif self.command == "POST":
                self._reply(204)
            else:
                self._reply(405, {"errors": [{"code": "MethodNotAllowed", "status": "405", "detail": "no"}]})

        do_GET = _handle
        do_POST = _handle
        do_PUT = _handle

    return Handler


@pytest.fixture(scope="session")
def panel() -> Iterator[PanelStub]:
    stub = PanelStub(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _panel_handler(stub))
    httpd.daemon_threads = True
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield stub
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------- hosts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Host:
    kind: str
    url: str
    token: str
    data: Path
    backups: Path
    proc: subprocess.Popen
    log_path: Path

    def headers(self, token: Optional[str] = None) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.token if token is None else token}"}

    def request(self, method: str, path: str, *, body: Any = None, raw: Optional[bytes] = None,
                headers: Optional[Dict[str, str]] = None, auth: bool = True, timeout: float = 60) -> requests.Response:
        h = dict(self.headers() if auth else {})
        h.update(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        return requests.request(method, self.url + path, data=data, headers=h, timeout=timeout)

    def server(self, tree: Optional[Callable[[Path], None]] = None) -> str:
        """A new server directory (with tree(root) written into it)."""
        sid = str(uuid.uuid4())
        root = self.data / sid
        root.mkdir(parents=True)
        if tree:
            tree(root)
        return sid

    def root(self, server: str) -> Path:
        return self.data / server

    def archive(self, backup: str) -> Path:
        return self.backups / f"{backup}.tar.gz"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def host_command(kind: str) -> List[str]:
    if kind == "go":
        if not GO_HOST.exists():
            pytest.fail(f"{GO_HOST} is missing: run `make go-host`")
        return [str(GO_HOST)]
    if not PYTHON_HOST.exists():
        pytest.skip("examples/python-host/main.py does not exist yet (the Python host is being written)")
    return [sys.executable, str(PYTHON_HOST)]


def start_host(kind: str, base: Path, panel: Optional[PanelStub], extra: Optional[List[str]] = None) -> Host:
    cmd = host_command(kind)
    data, backups = base / "volumes", base / "backups"
    data.mkdir(parents=True)
    backups.mkdir(parents=True)
    token = secrets.token_hex(16)
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--token", token, "--data-dir", str(data),
            "--backup-dir", str(backups), "--write-limit", "1"]
    if panel is not None:
        args += ["--panel-url", panel.url, "--panel-token-id", PANEL_TOKEN_ID, "--panel-token", PANEL_TOKEN]
    args += extra or []
    log_path = base / f"{kind}-host.log"
    env = dict(os.environ)
    env.pop("WINGS_TOKEN", None)
    env.setdefault("WINGS_BACKUP_LIB", str(REPO / "target" / "release" / "libwings_backup.so"))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd + args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    host = Host(kind, f"http://127.0.0.1:{port}", token, data, backups, proc, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{kind} host exited with {proc.returncode} at start:\n{host.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return host
        except OSError:
            if time.monotonic() > deadline:
                stop_host(host)
                pytest.fail(f"{kind} host did not listen within {START_TIMEOUT}s:\n{host.log()}")
            time.sleep(0.05)


def stop_host(host: Host) -> Optional[int]:
    """SIGTERM, then wait (bounded); kills and returns None if it hangs."""
    if host.proc.poll() is None:
        host.proc.send_signal(signal.SIGTERM)
    try:
        return host.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        host.proc.kill()
        host.proc.wait(timeout=5)
        return None


@pytest.fixture(scope="module", params=["go", "python"])
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, panel: PanelStub) -> Iterator[Host]:
    h = start_host(request.param, tmp_path_factory.mktemp(f"{request.param}-host"), panel)
    yield h
    code = stop_host(h)
    assert code == 0, f"{h.kind} host did not exit 0 on SIGTERM (got {code}):\n{h.log()}"


@pytest.fixture(params=["go", "python"])
def host_kind(request: pytest.FixtureRequest) -> str:
    host_command(request.param)  # skips a host that does not exist
    return request.param
