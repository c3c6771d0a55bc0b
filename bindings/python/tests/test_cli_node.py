"""python -m wings_backup status|list|watch: bad input and an unreachable or
broken node exit with a documented status and a one-line message, never a
traceback."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import wings_backup as wb
from conftest import new_uuid

PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT), WINGS_BACKUP_LIB=str(wb.LIBRARY_PATH))
    env.pop("WINGS_URL", None)
    env.pop("WINGS_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "wings_backup", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def assert_refused(r: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and text in lines[0], r.stderr
    assert r.stdout == ""


class Fake:
    """A node answering every GET with one fixed body; records the paths."""

    def __init__(self, body: bytes, content_type: str = "application/json") -> None:
        self.paths: List[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                fake.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[Fake]:
    node = Fake(b"[]")
    yield node
    node.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BAD_URLS: List[Tuple[str, str]] = [
    ("notaurl", "http:// or https://"),
    ("http://[::1", "not a valid URL"),
    ("ftp://x", "http:// or https://"),
    ("http://", "no host"),
    ("http://127.0.0.1:99999", "not a valid URL"),
    ("http://a b", "space"),
    ("http://x/?q=1", "query"),
]


@pytest.mark.parametrize("url,text", BAD_URLS)
@pytest.mark.parametrize("command", ["status", "list", "watch"])
def test_a_bad_url_is_a_usage_error(command: str, url: str, text: str) -> None:
    ids = [new_uuid()] if command == "list" else [new_uuid(), new_uuid()]
    assert_refused(cli(command, *ids, "--url", url, "--token", "t"), 2, text)


@pytest.mark.parametrize("token", ["a\nb", "a\rb", "a\x1bb", "caf\u00e9"])
def test_a_bad_token_is_a_usage_error(fake: Fake, token: str) -> None:
    r = cli("list", new_uuid(), "--url", fake.url, "--token", token)
    assert_refused(r, 2, "--token")
    assert token not in r.stderr
    assert fake.paths == []


@pytest.mark.parametrize("args,what", [
    (["list", "a b"], "SERVER"),
    (["list", "../x"], "SERVER"),
    (["status", "a b", "0b5c7f3e-1a2b-4c3d-8e4f-5a6b7c8d9e01"], "SERVER"),
    (["status", "0b5c7f3e-1a2b-4c3d-8e4f-5a6b7c8d9e01", "x/y"], "BACKUP"),
    (["watch", "0b5c7f3e-1a2b-4c3d-8e4f-5a6b7c8d9e01", "0b5c7f3e-1a2b-4c3d-8e4f-5a6b7c8d9e01\n"], "BACKUP"),
])
def test_a_server_or_backup_not_a_uuid_is_a_usage_error(fake: Fake, args: List[str], what: str) -> None:
    assert_refused(cli(*args, "--url", fake.url, "--token", "t"), 2, f"{what} is not a UUID")
    assert fake.paths == []


def test_uuids_go_into_the_path(fake: Fake) -> None:
    server = new_uuid().upper()
    r = cli("list", server, "--url", fake.url + "/", "--token", "t")
    assert r.returncode == 0, r.stderr
    assert fake.paths == [f"/api/servers/{server}/backups"]


@pytest.mark.parametrize("command", ["status", "list", "watch"])
def test_an_unreachable_node_is_a_remote_failure(command: str) -> None:
    ids = [new_uuid()] if command == "list" else [new_uuid(), new_uuid()]
    r = cli(command, *ids, "--url", f"http://127.0.0.1:{closed_port()}", "--token", "t")
    assert_refused(r, 9, "cannot reach")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"{}", b"\xff"])
@pytest.mark.parametrize("command", ["status", "list"])
def test_an_answer_not_the_apis_is_a_remote_failure(command: str, body: bytes) -> None:
    if command == "status" and body == b"{}":
        return  # a state with no fields: shown as such
    node = Fake(body)
    try:
        ids = [new_uuid()] if command == "list" else [new_uuid(), new_uuid()]
        assert_refused(cli(command, *ids, "--url", node.url, "--token", "t"), 9, "bad answer")
    finally:
        node.close()


@pytest.mark.parametrize("body", [b"event: progress\ndata: nope\n\n", b"event: progress\ndata: [1]\n\n",
                                  b"event: progress\ndata: \xff\n\n", b""])
def test_a_broken_event_stream_is_a_remote_failure(body: bytes) -> None:
    node = Fake(body, "text/event-stream")
    try:
        r = cli("watch", new_uuid(), new_uuid(), "--url", node.url, "--token", "t")
        assert_refused(r, 9, "bad answer" if body else "without a done event")
    finally:
        node.close()
