"""A Panel stub backed by a real S3-compatible server (moto in server mode).

It speaks the Panel's remote API as docs/api.md section 6 describes it:

- ``GET  /api/remote/backups/<uuid>?size=N`` creates a multipart upload with
  boto3 and hands out presigned UploadPart URLs (``part_size`` is small, so
  backups have several parts);
- ``POST /api/remote/backups/<uuid>`` records the status report and, like the
  real Panel, completes the multipart upload with the reported parts (or
  aborts it on failure);
- ``POST /api/remote/backups/<uuid>/restore`` records the restore report.

Every call to the remote API is recorded with its headers, its JSON body, the
status it was answered and when it arrived (``time.monotonic()``, which is
system-wide on Linux, so tests in another process can compare it with their
own clock). A call without the Panel's headers (``Authorization: Bearer
<token_id>.<token>``, ``Accept: application/vnd.pterodactyl.v1+json``, and
``Content-Type: application/json`` on a POST) is answered 403 and recorded with
the ``problem``.

Tests steer it through ``/_test/*``: read what it recorded, make reports
answer given statuses, make parts fail, presign downloads, cut downloads off.
Part URLs go through a proxy in this stub (``/_s3proxy/...``) so that faults
can be injected before requests reach moto.

Run as a program it prints one JSON line (``panel_url``, ``s3_endpoint``,
``bucket``) and serves until its standard input closes; ``STUB_PORT`` chooses
the Panel's port (a test starting "the Panel coming back" where a host has
been calling in vain), else it is a free one. Everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import re
import socketserver
import sys
import threading
import time
import urllib.parse
from typing import Any

# Small parts are the point of the stub: lift S3's 5 MiB minimum before moto loads.
os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", "1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

TOKEN_ID = "stub-token-id"
TOKEN = "stub-token-secret"
PANEL_ACCEPT = "application/vnd.pterodactyl.v1+json"
BUCKET = "backups"
UUID_RE = r"[0-9a-fA-F-]{36}"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class PanelStub:
    """A running Panel stub and its S3 server."""

    def __init__(self, part_size: int = 64 * 1024, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.part_size = part_size
        self.max_concurrent: int | None = None
        self.reports: list[dict[str, Any]] = []
        self.restores: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.uploads: dict[str, str] = {}
        self.completed: dict[str, dict[str, Any]] = {}
        self.report_statuses: list[int] = []
        self.report_status_forever: int | None = None
        # Seconds a backup status report is held before it is answered.
        self.report_delay = 0.0
        self.part_faults: dict[int, list[int]] = {}
        self.part_forever: dict[int, int] = {}
        self.part_attempts: dict[int, int] = {}

        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                stub.handle(self, "GET")

            def do_POST(self) -> None:
                stub.handle(self, "POST")

            def do_PUT(self) -> None:
                stub.handle(self, "PUT")

        # Bound before moto starts: moto finds its port by binding port 0 and
        # letting go, which can hand it a port just released for this stub.
        self.http = _Server(("127.0.0.1", port), Handler)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        s3_host, s3_port = self.moto.get_host_and_port()
        self.s3_endpoint = f"http://{s3_host}:{s3_port}"
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        self.s3.create_bucket(Bucket=BUCKET)

        self.port = self.http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.moto.stop()

    # -- helpers ---------------------------------------------------------

    @staticmethod
    def _reply(h: http.server.BaseHTTPRequestHandler, status: int, body: Any = None,
               headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        h.send_response(status)
        if body is not None and not isinstance(body, bytes):
            h.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _body(h: http.server.BaseHTTPRequestHandler) -> bytes:
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    def _panel_error(self, h: http.server.BaseHTTPRequestHandler, status: int, detail: str) -> None:
        self._reply(h, status, {"errors": [{"code": "StubError", "status": str(status), "detail": detail}]})

    def key(self, backup: str) -> str:
        return f"backups/{backup}.tar.gz"

    # -- dispatch --------------------------------------------------------

    def handle(self, h: http.server.BaseHTTPRequestHandler, method: str) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        path = parsed.path
        try:
            if path.startswith("/_s3proxy/"):
                return self.proxy_part(h, method, parsed)
            if path.startswith("/_test/"):
                return self.control(h, method, path, urllib.parse.parse_qs(parsed.query))
            if path.startswith("/api/remote/"):
                return self.remote(h, method, path, urllib.parse.parse_qs(parsed.query))
            self._reply(h, 404, {"error": "not found"})
        except Exception as e:  # a stub bug must show in the test, not hang it
            self._reply(h, 500, {"error": f"stub failure: {e!r}"})

    def remote(self, h: http.server.BaseHTTPRequestHandler, method: str, path: str,
               query: dict[str, list[str]]) -> None:
        body = self._body(h)
        try:
            payload: Any = json.loads(body) if body else None
        except ValueError:
            payload = body.decode("utf-8", "replace")
        problem = None
        if h.headers.get("Authorization") != f"Bearer {TOKEN_ID}.{TOKEN}":
            problem = f"bad Authorization {h.headers.get('Authorization')!r}"
        elif h.headers.get("Accept") != PANEL_ACCEPT:
            problem = f"bad Accept {h.headers.get('Accept')!r}"
        elif method == "POST" and not (h.headers.get("Content-Type") or "").startswith("application/json"):
            problem = f"bad Content-Type {h.headers.get('Content-Type')!r}"
        record = {
            "method": method,
            "path": path,
            "query": {k: v[0] for k, v in query.items()},
            "authorization": h.headers.get("Authorization"),
            "accept": h.headers.get("Accept"),
            "content_type": h.headers.get("Content-Type"),
            "user_agent": h.headers.get("User-Agent"),
            "body": payload,
            "problem": problem,
            "t": time.monotonic(),
        }
        with self.lock:
            self.requests.append(record)
        if problem:
            return self._panel_error(h, 403, "You are not authorized to access this resource.")
        m = re.fullmatch(rf"/api/remote/backups/({UUID_RE})(/restore)?", path)
        if not m:
            return self._panel_error(h, 404, "no such route")
        backup, restore = m.group(1), m.group(2)
        if method == "GET" and not restore:
            return self.upload_urls(h, backup, query)
        if method == "POST" and restore:
            with self.lock:
                self.restores.append({"backup": backup, "body": payload})
            return self._reply(h, 204)
        if method == "POST":
            return self.status_report(h, backup, payload)
        return self._panel_error(h, 405, "method not allowed")

    def upload_urls(self, h: http.server.BaseHTTPRequestHandler, backup: str,
                    query: dict[str, list[str]]) -> None:
        size = int((query.get("size") or ["0"])[0] or 0)
        if size <= 0:
            return self._panel_error(h, 400, 'A non-empty "size" query parameter must be provided.')
        up = self.s3.create_multipart_upload(Bucket=BUCKET, Key=self.key(backup),
                                             ContentType="application/x-gzip")
        upload_id = up["UploadId"]
        with self.lock:
            self.uploads[backup] = upload_id
        count = -(-size // self.part_size)
        urls = []
        for i in range(count):
            direct = self.s3.generate_presigned_url(
                "upload_part",
                Params={"Bucket": BUCKET, "Key": self.key(backup), "UploadId": upload_id, "PartNumber": i + 1},
                ExpiresIn=3600,
            )
            d = urllib.parse.urlsplit(direct)
            urls.append(f"{self.url}/_s3proxy/{i + 1}{d.path}?{d.query}")
        answer: dict[str, Any] = {"parts": urls, "part_size": self.part_size}
        if self.max_concurrent:
            answer["max_concurrent_uploads"] = self.max_concurrent
        self._reply(h, 200, answer)

    def status_report(self, h: http.server.BaseHTTPRequestHandler, backup: str, payload: Any) -> None:
        with self.lock:
            if self.report_statuses:
                status = self.report_statuses.pop(0)
            else:
                status = self.report_status_forever or 204
            self.reports.append({"backup": backup, "body": payload, "answered": status, "t": time.monotonic()})
            delay = self.report_delay
        if delay:
            time.sleep(delay)
        if status >= 300:
            return self._panel_error(h, status, "injected failure")
        upload_id = self.uploads.get(backup)
        if upload_id and isinstance(payload, dict):
            if payload.get("successful"):
                parts = [{"ETag": p["etag"], "PartNumber": p["part_number"]} for p in payload.get("parts") or []]
                self.s3.complete_multipart_upload(Bucket=BUCKET, Key=self.key(backup), UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
                data = self.s3.get_object(Bucket=BUCKET, Key=self.key(backup))["Body"].read()
                with self.lock:
                    self.completed[backup] = {"sha1": hashlib.sha1(data).hexdigest(), "size": len(data)}
            else:
                self.s3.abort_multipart_upload(Bucket=BUCKET, Key=self.key(backup), UploadId=upload_id)
            # Settled: a later report of the same uuid (another host's backup
            # in a shared stub) finds no upload, as the Panel's row is done.
            with self.lock:
                if self.uploads.get(backup) == upload_id:
                    del self.uploads[backup]
        self._reply(h, 204)

    def proxy_part(self, h: http.server.BaseHTTPRequestHandler, method: str,
                   parsed: urllib.parse.SplitResult) -> None:
        rest = parsed.path[len("/_s3proxy/"):]
        part_text, _, s3_path = rest.partition("/")
        part = int(part_text)
        body = self._body(h)
        with self.lock:
            self.part_attempts[part] = self.part_attempts.get(part, 0) + 1
            queue = self.part_faults.get(part) or []
            fault = queue.pop(0) if queue else self.part_forever.get(part)
        if fault:
            return self._reply(h, fault, f"<Error><Code>Injected</Code><Message>HTTP {fault}</Message></Error>".encode(),
                               {"Content-Type": "application/xml"})
        host = urllib.parse.urlsplit(self.s3_endpoint).netloc
        conn = http.client.HTTPConnection(host, timeout=60)
        headers = {"Content-Length": str(len(body))}
        if h.headers.get("Content-Type"):
            headers["Content-Type"] = h.headers["Content-Type"]
        conn.request(method, f"/{s3_path}?{parsed.query}", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out = {}
        if resp.getheader("ETag"):
            out["ETag"] = resp.getheader("ETag")
        with self.lock:
            self.part_bodies = getattr(self, "part_bodies", {})
            self.part_bodies[part] = hashlib.sha1(body).hexdigest()
        self._reply(h, resp.status, data, out)

    def control(self, h: http.server.BaseHTTPRequestHandler, method: str, path: str,
                query: dict[str, list[str]]) -> None:
        if path == "/_test/state":
            # ?backup=<uuid> keeps only what concerns that backup.
            only = (query.get("backup") or [None])[0]
            with self.lock:
                state = {
                    "reports": [r for r in self.reports if only in (None, r["backup"])],
                    "restores": [r for r in self.restores if only in (None, r["backup"])],
                    "requests": [r for r in self.requests if only is None or only in r["path"]],
                    "completed": {k: v for k, v in self.completed.items() if only in (None, k)},
                    "part_attempts": {str(k): v for k, v in self.part_attempts.items()},
                }
            return self._reply(h, 200, state)
        if path == "/_test/config" and method == "POST":
            cfg = json.loads(self._body(h) or b"{}")
            with self.lock:
                if "part_size" in cfg:
                    self.part_size = int(cfg["part_size"])
                if "max_concurrent_uploads" in cfg:
                    self.max_concurrent = cfg["max_concurrent_uploads"]
                if "report_statuses" in cfg:
                    self.report_statuses = list(cfg["report_statuses"])
                if "report_status_forever" in cfg:
                    self.report_status_forever = cfg["report_status_forever"]
                if "report_delay" in cfg:
                    self.report_delay = min(float(cfg["report_delay"] or 0), 30.0)
                if "part_faults" in cfg:
                    self.part_faults = {int(k): list(v) for k, v in cfg["part_faults"].items()}
                if "part_forever" in cfg:
                    self.part_forever = {int(k): int(v) for k, v in cfg["part_forever"].items()}
                if cfg.get("reset"):
                    self.reports.clear()
                    self.restores.clear()
                    self.requests.clear()
                    self.part_attempts.clear()
            return self._reply(h, 200, {"ok": True})
        if path == "/_test/put" and method == "PUT":
            key = query["key"][0]
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=self._body(h), ContentType="application/gzip")
            return self._reply(h, 200, {"ok": True})
        if path == "/_test/presign":
            key = query["key"][0]
            url = self.s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key},
                                                 ExpiresIn=3600)
            return self._reply(h, 200, {"url": url})
        if path == "/_test/object":
            key = query["key"][0]
            data = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            return self._reply(h, 200, {"sha1": hashlib.sha1(data).hexdigest(), "size": len(data)})
        if path == "/_test/cut":
            # Serves an object but closes the connection after `at` bytes,
            # having promised all of it.
            key, at = query["key"][0], int(query["at"][0])
            ctype = (query.get("type") or ["application/gzip"])[0]
            data = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[:at])
            h.wfile.flush()
            h.close_connection = True
            return None
        if path == "/_test/stall":
            # Serves an object but stops sending after `at` bytes and keeps
            # the connection open for `secs` seconds (at most 60).
            key, at = query["key"][0], int(query["at"][0])
            secs = min(float((query.get("secs") or ["30"])[0]), 60.0)
            data = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            h.send_response(200)
            h.send_header("Content-Type", "application/gzip")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[:at])
            h.wfile.flush()
            time.sleep(secs)
            h.close_connection = True
            return None
        if path == "/_test/serve":
            # Serves an object with a chosen status and Content-Type.
            key = query["key"][0]
            status = int((query.get("status") or ["200"])[0])
            ctype = (query.get("type") or ["application/gzip"])[0]
            data = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            return self._reply(h, status, data, {"Content-Type": ctype})
        if path == "/_test/loop":
            n = int((query.get("n") or ["0"])[0])
            return self._reply(h, 302, b"", {"Location": f"/_test/loop?n={n + 1}"})
        if path == "/_test/redirect":
            to = query["to"][0]
            return self._reply(h, 302, b"", {"Location": to})
        return self._reply(h, 404, {"error": "no such control"})


def main() -> None:
    stub = PanelStub(part_size=int(os.environ.get("STUB_PART_SIZE", str(64 * 1024))),
                     port=int(os.environ.get("STUB_PORT", "0")))
    print(json.dumps({"panel_url": stub.url, "s3_endpoint": stub.s3_endpoint, "bucket": BUCKET,
                      "token_id": TOKEN_ID, "token": TOKEN}), flush=True)
    try:
        sys.stdin.read()
    finally:
        stub.stop()


if __name__ == "__main__":
    main()
