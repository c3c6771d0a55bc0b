"""Errors from the network side, against a stub Panel on 127.0.0.1."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, List, Tuple

import pytest

import wings_backup as wb
from conftest import Node, new_uuid


class RefusingPanel(BaseHTTPRequestHandler):
    """Answers every call with a final 4xx (never retried by the engine)."""

    protocol_version = "HTTP/1.1"
    calls: List[Tuple[str, str]] = []

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.calls.append((self.command, self.path))
        body = b'{"errors":[{"code":"HttpForbiddenException","status":"403","detail":"no"}]}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _refuse
    do_POST = _refuse
    do_PUT = _refuse


@pytest.fixture
def panel_url() -> Iterator[str]:
    RefusingPanel.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RefusingPanel)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    t.join(10)


def test_panel_refusing_an_s3_upload_is_a_remote_error(node: Node, panel_url: str) -> None:
    config = node.config(panel={"url": panel_url, "token_id": "id", "token": "secret", "report_retry_s": 0})
    with wb.Engine(config) as engine:
        server = node.server()
        backup = new_uuid()
        with pytest.raises(wb.RemoteError) as e:
            engine.create_backup(server, {"adapter": "s3", "uuid": backup, "ignore": ""})
        assert e.value.http_status == 502
        assert RefusingPanel.calls[0][1].startswith(f"/api/remote/backups/{backup}?size=")
        assert list(node.backups.glob("*.tar.gz*")) == []  # the s3 temporary is always deleted


def test_s3_download_url_to_loopback_is_refused(node: Node, engine: wb.Engine) -> None:
    server = node.server()
    request = {"adapter": "s3", "truncate_directory": False, "download_url": "http://127.0.0.1:9/b.tar.gz"}
    with pytest.raises(wb.InvalidArgumentError):
        engine.check_restore(server, new_uuid(), request)


class ArchiveServer(BaseHTTPRequestHandler):
    """Serves `payload` with `content_type` (an S3 presigned GET stand-in)."""

    protocol_version = "HTTP/1.1"
    payload = b""
    content_type = "application/gzip"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)


def test_s3_restore_streams_from_an_allowlisted_url(node: Node, tmp_path: Any, panel_url: str) -> None:
    from conftest import read_tree, write_tree

    src = tmp_path / "src"
    write_tree(src, {"a.txt": "downloaded", "w/level.dat": b"\x02" * 50_000})
    wb.archive_create(src, tmp_path / "b.tar.gz")
    ArchiveServer.payload = (tmp_path / "b.tar.gz").read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveServer)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/b.tar.gz"
        # The engine wants a Panel for the s3 adapter (see the report); this
        # one refuses the restore report, which does not fail the restore.
        panel = {"url": panel_url, "token_id": "id", "token": "secret", "report_retry_s": 0}
        with wb.Engine(node.config(restore_host_allowlist=["127.0.0.1"], panel=panel)) as engine:
            server = node.server({"old.txt": "old"})
            request = {"adapter": "s3", "truncate_directory": True, "download_url": url}
            engine.check_restore(server, new_uuid(), request)
            engine.restore_backup(server, new_uuid(), request)
            assert read_tree(node.root(server)) == read_tree(src)

            ArchiveServer.content_type = "text/html"
            (node.root(server) / "mine.txt").write_text("kept")
            with pytest.raises(wb.InvalidArgumentError):
                engine.restore_backup(server, new_uuid(), request)
            assert (node.root(server) / "mine.txt").read_text() == "kept"
    finally:
        ArchiveServer.content_type = "application/gzip"
        httpd.shutdown()
        httpd.server_close()
        t.join(10)
