"""Fixtures of the HTTP conformance suite: the Panel stub and the hosts.

Every test runs against each host ("go" = target/go-host, or go-host under
$CARGO_TARGET_DIR; "python" = examples/python-host/main.py), started as a
subprocess with the same flags on a free 127.0.0.1 port, temporary data and
backup directories, and the Panel stub of tests/support/panel_stub.py (a
subprocess: the Panel's remote API over a real S3 server, recording every
callback with its headers; docs/api.md section 6).

Every error reply a test sees through Host.request or Host.raw is scanned for
node paths and stack traces (assert_no_leak).
"""

from __future__ import annotations

import http.client
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
# Cargo's output directory, as the Makefile uses it: $CARGO_TARGET_DIR (a
# relative one from the checkout) or target/.
TARGET_DIR = REPO / (os.environ.get("CARGO_TARGET_DIR") or "target")
GO_HOST = TARGET_DIR / "go-host"
LIBRARY = TARGET_DIR / "release" / "libwings_backup.so"
PYTHON_HOST = REPO / "examples" / "python-host" / "main.py"

PANEL_ACCEPT = "application/vnd.pterodactyl.v1+json"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


# --------------------------------------------------------------------------- Panel stub

PANEL_STUB = REPO / "tests" / "support" / "panel_stub.py"
PANEL_START_TIMEOUT = 60.0


@dataclass
class PanelCall:
    """One call a host made to the Panel's remote API, as the stub recorded it."""

    method: str
    path: str
    query: Dict[str, str]
    headers: Dict[str, str]
    body: Any
    # Why the stub refused the call (bad Authorization, Accept or
    # Content-Type), or None.
    problem: Optional[str]
    # When it arrived (time.monotonic(), comparable with this process's).
    t: float


class PanelStub:
    """tests/support/panel_stub.py run as a subprocess (the one Panel stub of
    the project: the Rust tests in tests/s3.rs use it too): the Panel's remote
    API in front of a real S3 server (moto), steered through /_test/*."""

    def __init__(self, log_path: Path, port: int = 0) -> None:
        """port: where the Panel listens (0: a free port); a test makes the
        Panel "come back" where a host has been calling in vain."""
        self.log_path = log_path
        env = dict(os.environ, STUB_PORT=str(port))
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(PANEL_STUB)], cwd=REPO, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, env=env)
        assert self.proc.stdout is not None
        line = self._first_line(self.proc.stdout)
        info = json.loads(line)
        self.url: str = info["panel_url"]
        self.s3_endpoint: str = info["s3_endpoint"]
        self.bucket: str = info["bucket"]
        self.token_id: str = info["token_id"]
        self.token: str = info["token"]
        self.session = requests.Session()

    def _first_line(self, stream: Any) -> str:
        found: List[str] = []
        reader = threading.Thread(target=lambda: found.append(stream.readline().decode()), daemon=True)
        reader.start()
        reader.join(PANEL_START_TIMEOUT)
        if not found or not found[0].strip():
            self.stop()
            pytest.fail(f"the Panel stub did not start:\n{self.log_path.read_text(errors='replace')[-4000:]}")
        return found[0]

    def stop(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def host_args(self) -> List[str]:
        return ["--panel-url", self.url, "--panel-token-id", self.token_id, "--panel-token", self.token]

    # -- steering ----------------------------------------------------------

    def state(self, backup: Optional[str] = None) -> Dict[str, Any]:
        params = {"backup": backup} if backup else None
        res = self.session.get(f"{self.url}/_test/state", params=params, timeout=30)
        res.raise_for_status()
        return res.json()

    def configure(self, **cfg: Any) -> None:
        self.session.post(f"{self.url}/_test/config", json=cfg, timeout=30).raise_for_status()

    def put(self, key: str, data: bytes) -> None:
        self.session.put(f"{self.url}/_test/put", params={"key": key}, data=data, timeout=30).raise_for_status()

    def presign(self, key: str) -> str:
        res = self.session.get(f"{self.url}/_test/presign", params={"key": key}, timeout=30)
        res.raise_for_status()
        return res.json()["url"]

    def object_info(self, key: str) -> Dict[str, Any]:
        """{"sha1", "size"} of an object in the bucket."""
        res = self.session.get(f"{self.url}/_test/object", params={"key": key}, timeout=30)
        res.raise_for_status()
        return res.json()

    # -- what the hosts told the Panel ---------------------------------------

    def calls(self, backup: Optional[str] = None) -> List[PanelCall]:
        out = []
        for r in self.state(backup)["requests"]:
            headers = {"authorization": r["authorization"], "accept": r["accept"],
                       "content-type": r["content_type"], "user-agent": r["user_agent"]}
            out.append(PanelCall(r["method"], r["path"], r["query"],
                                 {k: v for k, v in headers.items() if v is not None},
                                 r.get("body"), r.get("problem"), r.get("t", 0.0)))
        return out

    def wait_for(self, pred: Callable[[PanelCall], bool], backup: Optional[str] = None,
                 timeout: float = 8.0) -> List[PanelCall]:
        """The calls matching pred, once there is at least one (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls(backup) if pred(c)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def backup_reports(self, backup: str, timeout: float = 8.0) -> List[PanelCall]:
        path = f"/api/remote/backups/{backup}"
        return self.wait_for(lambda c: c.method == "POST" and c.path == path, backup, timeout)

    def restore_reports(self, backup: str, timeout: float = 8.0) -> List[PanelCall]:
        path = f"/api/remote/backups/{backup}/restore"
        return self.wait_for(lambda c: c.method == "POST" and c.path == path, backup, timeout)


@pytest.fixture(scope="session")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelStub]:
    stub = PanelStub(tmp_path_factory.mktemp("panel") / "panel-stub.log")
    yield stub
    stub.stop()


# --------------------------------------------------------------------------- leaks

# Nothing an error body may carry: node paths (the hosts' directories live
# under pytest's base temporary directory), the checkout's path (Go and Rust
# panics name source files), stack traces.
LEAK_WORDS = ("Traceback", "goroutine", "panic", 'File "', ".py\"", ".go:", ".rs:")
_leak_paths: List[str] = [str(REPO)]
# How many error replies were scanned, by host kind (a test checks the scan ran).
SCANNED: Dict[str, int] = {}


@pytest.fixture(scope="session", autouse=True)
def _leak_roots(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = str(tmp_path_factory.getbasetemp())
    _leak_paths.append(base)
    # The real path too, in case the host resolves symlinks (/tmp -> /private/tmp).
    _leak_paths.append(os.path.realpath(base))


def assert_no_leak(kind: str, status: int, text: str, where: str = "") -> None:
    """An error body must not carry a node path or a stack trace."""
    if status < 400:
        return
    SCANNED[kind] = SCANNED.get(kind, 0) + 1
    for leak in list(_leak_paths) + list(LEAK_WORDS):
        assert leak not in text, f"{kind} host: error body of {where} leaks {leak!r}: {text[:500]!r}"


# --------------------------------------------------------------------------- hosts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    """A response read off a raw socket (see Host.raw)."""

    status: int
    headers: Dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Host:
    kind: str
    url: str
    token: str
    base: Path
    data: Path
    backups: Path
    proc: subprocess.Popen
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def headers(self, token: Optional[str] = None) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.token if token is None else token}"}

    def request(self, method: str, path: str, *, body: Any = None, raw: Optional[bytes] = None,
                headers: Optional[Dict[str, str]] = None, auth: bool = True, timeout: float = 60,
                session: Optional[requests.Session] = None) -> requests.Response:
        h = dict(self.headers() if auth else {})
        h.update(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        send = session.request if session is not None else requests.request
        res = send(method, self.url + path, data=data, headers=h, timeout=timeout)
        assert_no_leak(self.kind, res.status_code, res.text, f"{method} {path}")
        return res

    def raw(self, method: str, target: str, *, headers: Optional[Dict[str, str]] = None, body: bytes = b"",
            auth: bool = True, timeout: float = 30) -> Reply:
        """Sends a request with `target` written verbatim on the request line
        (no client-side normalisation of `..`, %-escapes or backslashes)."""
        h = {"Host": f"127.0.0.1:{self.port}", "Connection": "close"}
        if auth:
            h.update(self.headers())
        h.update(headers or {})
        if body or method in ("POST", "PUT", "PATCH"):
            h.setdefault("Content-Length", str(len(body)))
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(head.encode("latin-1") + body)
            reply = read_reply(sock, method)
        assert_no_leak(self.kind, reply.status, reply.text, f"{method} {target[:200]}")
        return reply

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

    def rss_kib(self) -> int:
        """The host process's resident set size (VmRSS), in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def read_reply(sock: socket.socket, method: str = "GET") -> Reply:
    """Reads one HTTP response from sock (raises on a timeout or a closed
    connection before a status line)."""
    res = http.client.HTTPResponse(sock, method=method)
    res.begin()
    body = res.read()
    return Reply(res.status, {k.lower(): v for k, v in res.getheaders()}, body)


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
    # Existing directories are a restarted node's.
    data.mkdir(parents=True, exist_ok=True)
    backups.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--token", token, "--data-dir", str(data),
            "--backup-dir", str(backups), "--write-limit", "1"]
    if panel is not None:
        args += panel.host_args()
    args += extra or []
    log_path = base / f"{kind}-host.log"
    env = dict(os.environ)
    env.pop("WINGS_TOKEN", None)
    env.setdefault("WINGS_BACKUP_LIB", str(LIBRARY))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd + args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    host = Host(kind, f"http://127.0.0.1:{port}", token, base, data, backups, proc, log_path)
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


def started(kind: str, base: Path, panel: Optional[PanelStub], extra: Optional[List[str]] = None) -> Iterator[Host]:
    """A host for a fixture: started, yielded, stopped (it must exit 0)."""
    h = start_host(kind, base, panel, extra)
    yield h
    code = stop_host(h)
    assert code == 0, f"{h.kind} host did not exit 0 on SIGTERM (got {code}):\n{h.log()}"


@pytest.fixture(scope="module", params=["go", "python"])
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, panel: PanelStub) -> Iterator[Host]:
    yield from started(request.param, tmp_path_factory.mktemp(f"{request.param}-host"), panel)


@pytest.fixture(params=["go", "python"])
def host_kind(request: pytest.FixtureRequest) -> str:
    host_command(request.param)  # skips a host that does not exist
    return request.param
