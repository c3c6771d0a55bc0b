"""Host hardening (issue #7), against each host: request size limits, slow
clients, path traversal through :uuid and :id, unknown routes and methods,
and error bodies that never carry node paths or stack traces.

The hosts here run with short read timeouts (READ_HEADER_TIMEOUT,
READ_TIMEOUT) so that slow clients are dropped within the test's time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import socket
import tarfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import Host, PanelStub, assert_no_leak, started
from helpers import MSG_NO_AUTH, assert_error, backup_now, create_body, demo_tree, new_id, restore_body

READ_HEADER_TIMEOUT = 1.0
READ_TIMEOUT = 2.0
# How late a host may drop a slow client (the Python host looks every second).
SLACK = 3.5
TIMEOUT_FLAGS = ["--read-header-timeout", f"{READ_HEADER_TIMEOUT:g}s", "--read-timeout", f"{READ_TIMEOUT:g}s"]

MSG_NO_RESOURCE = "The requested resource does not exist on this instance."
MSG_NOT_ALLOWED = "The requested method is not allowed on this endpoint."


@pytest.fixture(scope="module", params=["go", "python"])
def hard_host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              panel: PanelStub) -> Iterator[Host]:
    yield from started(request.param, tmp_path_factory.mktemp(f"{request.param}-hard-host"), panel, TIMEOUT_FLAGS)


def tree_state(base: Path) -> Dict[str, str]:
    """Every entry under base (the host's whole temporary directory: data,
    backups, and the sentinel outside them), but the host's log."""
    out: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(base))
            if rel.endswith("-host.log"):
                continue
            if path.is_symlink():
                out[rel] = "link " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------- body size


def test_a_body_of_exactly_1_mib_is_accepted(hard_host: Host) -> None:
    server = hard_host.server(demo_tree)
    body = json.dumps(create_body(new_id())).encode()
    body += b" " * ((1 << 20) - len(body))
    assert len(body) == 1 << 20
    res = hard_host.request("POST", f"/api/servers/{server}/backup", raw=body,
                            headers={"Content-Type": "application/json"})
    assert res.status_code == 202, res.text[:300]


def test_one_byte_over_1_mib_is_413(hard_host: Host) -> None:
    server = hard_host.server(demo_tree)
    body = json.dumps(create_body(new_id())).encode()
    body += b" " * ((1 << 20) + 1 - len(body))
    res = hard_host.request("POST", f"/api/servers/{server}/backup", raw=body,
                            headers={"Content-Type": "application/json"})
    assert_error(hard_host, res, 413)


def test_a_chunked_body_over_1_mib_is_413(hard_host: Host) -> None:
    server = hard_host.server(demo_tree)
    backup = new_id()
    pad = b'{"adapter":"wings","uuid":"' + backup.encode() + b'","ignore":"","pad":"' + b"x" * (3 << 19) + b'"}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (pad[i:i + 65536] for i in range(0, len(pad), 65536)))
    reply = hard_host.raw("POST", f"/api/servers/{server}/backup", body=chunks + b"0\r\n\r\n",
                          headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    assert_error(hard_host, reply, 413)
    time.sleep(0.2)
    assert not hard_host.archive(backup).exists()


def test_a_huge_declared_length_is_413_at_once(hard_host: Host) -> None:
    """Content-Length: 8 GiB and no body: answered without waiting for it."""
    server = hard_host.server(demo_tree)
    began = time.monotonic()
    reply = hard_host.raw("POST", f"/api/servers/{server}/backup", timeout=10,
                          headers={"Content-Length": str(8 << 30), "Content-Type": "application/json"})
    assert_error(hard_host, reply, 413)
    assert time.monotonic() - began < READ_TIMEOUT, "the host waited for the body before refusing it"


# --------------------------------------------------------------------------- slow clients


def trickle(host: Host, head: bytes, body: bytes = b"", step: float = 0.2,
            limit: float = 10.0) -> Tuple[float, bytes, str]:
    """Sends head then body one byte per `step` (after sending head whole if
    body is given), until the host ends the connection or `limit` passes.
    Returns (seconds until the host ended it, what it answered, how)."""
    sock = socket.create_connection(("127.0.0.1", host.port), timeout=5)
    began = time.monotonic()
    got = b""
    how = "still open"
    try:
        data = head
        if body:
            sock.sendall(head)
            data = body
        sent = 0
        while time.monotonic() - began < limit:
            ready, _, _ = select.select([sock], [], [], step)
            if ready:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    how = "reset"
                    break
                if not chunk:
                    how = "closed"
                    break
                got += chunk
                continue
            if sent < len(data):
                try:
                    sock.send(data[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    how = "reset"
                    break
                sent += 1
        return time.monotonic() - began, got, how
    finally:
        sock.close()


def check_dropped(host: Host, result: Tuple[float, bytes, str], limit: float) -> None:
    took, got, how = result
    assert how != "still open", f"{host.kind} host still holds a slow client after {took:.1f}s"
    assert took <= limit + SLACK, f"{host.kind} host dropped a slow client only after {took:.1f}s (limit {limit}s)"
    if got:
        # An answer before closing is fine if it is an error (400 or 408).
        status = int(got.split(b" ", 2)[1])
        assert status in (400, 408), got[:300]
        assert_no_leak(host.kind, status, got.decode("latin-1"), "a slow request")


def test_a_connection_that_sends_nothing_is_dropped(hard_host: Host) -> None:
    check_dropped(hard_host, trickle(hard_host, b""), READ_HEADER_TIMEOUT)


def test_headers_sent_byte_by_byte_are_dropped(hard_host: Host) -> None:
    server = hard_host.server()
    head = (f"POST /api/servers/{server}/backup HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {hard_host.token}\r\n" + "X-Pad: aaaaaaaaaaaaaaaa\r\n" * 20).encode()
    check_dropped(hard_host, trickle(hard_host, head), READ_HEADER_TIMEOUT)


def test_a_body_sent_byte_by_byte_is_dropped(hard_host: Host) -> None:
    server = hard_host.server(demo_tree)
    body = json.dumps(create_body(new_id())).encode().ljust(400)
    head = (f"POST /api/servers/{server}/backup HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {hard_host.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    check_dropped(hard_host, trickle(hard_host, head, body), READ_TIMEOUT)


def test_many_slow_clients_do_not_starve_others(hard_host: Host) -> None:
    """More slowloris connections than the Python host has worker threads:
    ordinary requests are still answered promptly, and every slow connection
    is dropped."""
    count = 40
    server = hard_host.server(demo_tree)
    head = (f"POST /api/servers/{server}/backup HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {hard_host.token}\r\n" + "X-Pad: a\r\n" * 100).encode()
    socks = [socket.create_connection(("127.0.0.1", hard_host.port), timeout=5) for _ in range(count)]
    open_socks = list(socks)
    stop = threading.Event()
    dropped_after: List[float] = []
    began = time.monotonic()

    def drip() -> None:
        sent = 0
        while open_socks and not stop.is_set() and time.monotonic() - began < 15:
            for s in list(open_socks):
                try:
                    if select.select([s], [], [], 0)[0] and not s.recv(65536):
                        raise ConnectionResetError
                    if sent < len(head):
                        s.send(head[sent:sent + 1])
                except OSError:
                    open_socks.remove(s)
                    dropped_after.append(time.monotonic() - began)
            sent += 1
            time.sleep(0.1)

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        time.sleep(0.3)
        for _ in range(5):
            t0 = time.monotonic()
            res = hard_host.request("DELETE", f"/api/servers/{server}/backup/{new_id()}", timeout=10)
            assert res.status_code == 404, res.text
            assert time.monotonic() - t0 < 2, "an ordinary request waited behind slow clients"
        dripper.join(READ_HEADER_TIMEOUT + SLACK + 2)
        assert not open_socks, f"{len(open_socks)} of {count} slow connections still open after " \
                               f"{time.monotonic() - began:.1f}s"
        assert max(dropped_after) <= READ_HEADER_TIMEOUT + SLACK + 0.5, max(dropped_after)
    finally:
        stop.set()
        dripper.join(5)
        for s in socks:
            s.close()


def random_archive(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        data = os.urandom(size)
        info = tarfile.TarInfo("world/big.bin")
        info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
        dinfo = tarfile.TarInfo("world")
        dinfo.type, dinfo.mode, dinfo.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
        tar.addfile(dinfo)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_restore_longer_than_the_read_timeout_still_answers(hard_host: Host) -> None:
    """The read timeouts bound reading the request, not the synchronous
    restore behind it (the hosts read archives at --write-limit 1 MiB/s)."""
    server = hard_host.server(demo_tree)
    backup = new_id()
    archive = hard_host.archive(backup)
    archive.write_bytes(random_archive(3 << 20))
    archive.chmod(0o600)
    began = time.monotonic()
    res = hard_host.request("POST", f"/api/servers/{server}/backup/{backup}/restore", body=restore_body(True))
    took = time.monotonic() - began
    assert res.status_code == 204, res.text
    assert took > READ_TIMEOUT, f"the restore took {took:.1f}s: too fast to test the read timeout"
    assert (hard_host.root(server) / "world" / "big.bin").stat().st_size == 3 << 20


# --------------------------------------------------------------------------- routes and methods

ROUTE_METHODS = [("/api/servers/{sid}/backup", "POST"),
                 ("/api/servers/{sid}/backup/{bid}/restore", "POST"),
                 ("/api/servers/{sid}/backup/{bid}", "DELETE, GET"),
                 ("/api/servers/{sid}/backup/{bid}/cancel", "POST"),
                 ("/api/servers/{sid}/backup/{bid}/events", "GET"),
                 ("/api/servers/{sid}/backups", "DELETE, GET"),
                 ("/api/servers/{sid}/deleteAllBackups", "DELETE")]


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "FOO", "other"])
def test_a_method_an_endpoint_does_not_take_is_405(hard_host: Host, method: str) -> None:
    sid = hard_host.server(demo_tree)
    for template, allowed in ROUTE_METHODS:
        target = template.format(sid=sid, bid=new_id())
        m = ("DELETE" if "DELETE" not in allowed else "POST") if method == "other" else method
        if m in allowed.split(", "):
            continue
        if m == "CONNECT":
            target = f"127.0.0.1:{hard_host.port}"  # CONNECT takes an authority
        reply = hard_host.raw(m, target)
        if m == "CONNECT":
            assert reply.status in (400, 404, 405), (m, reply.status, reply.text)
            continue
        if m == "HEAD":
            assert reply.status == 405 and reply.body == b"", (m, target, reply.status)
        else:
            assert_error(hard_host, reply, 405, MSG_NOT_ALLOWED)
        assert reply.headers.get("allow") == allowed, (m, target, reply.headers)
        # Without a token, authentication still comes first.
        reply = hard_host.raw(m, target, auth=False)
        assert reply.status == 401, (m, target, reply.status)


UNKNOWN_ROUTES = [
    "/", "/api", "/api/", "/api/servers", "/api/servers/", "/api/servers/{sid}", "/api/servers/{sid}/",
    "/api/servers/{sid}/backup/", "/api/servers/{sid}/backupz", "/api/servers/{sid}/backups/",
    "/api/servers/{sid}/backup/{bid}/",
    "/api/servers/{sid}/backup/{bid}/restore/", "/api/servers/{sid}/backup/{bid}/restore/x",
    "/api/servers/{sid}/backup/{bid}/download", "/api/servers//backup", "//api/servers/{sid}/backup",
    "/api//servers/{sid}/backup", "/API/servers/{sid}/backup", "/api/servers/{sid}/BACKUP",
    "/api/system", "/download/backup", "/api/servers/{sid}/files/list-directory", "*",
    "/api/servers/{sid}/backup/{bid}/restore/../../backup",
]


@pytest.mark.parametrize("route", UNKNOWN_ROUTES)
def test_an_unknown_route_is_404(hard_host: Host, route: str) -> None:
    sid = hard_host.server(demo_tree)
    target = route.format(sid=sid, bid=new_id())
    before = tree_state(hard_host.data)
    for method in ("GET", "POST", "DELETE", "OPTIONS"):
        body = json.dumps(create_body(new_id())).encode() if method == "POST" else b""
        reply = hard_host.raw(method, target, body=body)
        assert_error(hard_host, reply, 404, MSG_NO_RESOURCE)
        reply = hard_host.raw(method, target, body=body, auth=False)
        assert_error(hard_host, reply, 401, MSG_NO_AUTH)
    assert tree_state(hard_host.data) == before


# --------------------------------------------------------------------------- path traversal


@pytest.fixture(scope="module", params=["go", "python"])
def trav_host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              panel: PanelStub) -> Iterator[Tuple[Host, str, str]]:
    """A host of its own (nothing else runs on it), a server and a finished
    backup of it, and a sentinel directory beside data/ and backups/ holding
    what a traversal would aim at."""
    base = tmp_path_factory.mktemp(f"{request.param}-trav-host")
    outside = base / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "file.txt").write_text("do not touch")
    gen = started(request.param, base, panel, TIMEOUT_FLAGS)
    host = next(gen)
    sid = host.server(demo_tree)
    bid = backup_now(host, sid)
    # The backup's Panel report is out (and the server free) before trees
    # are compared.
    panel.backup_reports(bid)
    (outside / f"{new_id()}.tar.gz").write_bytes(host.archive(bid).read_bytes())
    yield host, sid, bid
    next(gen, None)


LONG = "a" * 8000
SERVER_SEGMENTS = [
    "..", "%2e%2e", "%2E%2E", ".", "%2e", "..%2F..%2Foutside%2Fvictim", "%2e%2e%2f%2e%2e%2foutside",
    "{sid}%2F..%2F{sid}", "{sid}%2f", "{sid}%00", "%00", "{sid}%00.tar.gz", "..%5C..%5Coutside",
    "{sid}%5C..%5C{sid}", "{sid}\\..\\{sid}", "..\\..\\outside", "{sid}/..", "../{sid}",
    "{sid}/../{sid}", "%252e%252e", "..%00", "{sid}%20", "%20{sid}", "{sid}.", LONG, LONG * 8,
    "{sid}" + "/x" * 200, "~", "%7e", "{sid}%0a", "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc",
]
BACKUP_SEGMENTS = [
    "..", "%2e%2e", ".", "..%2F{bid}", "..%2F..%2Fbackups%2F{bid}", "..%2F..%2Foutside%2F{decoy}",
    "{bid}%00", "{bid}%00.tar.gz", "{bid}.tar.gz", "{bid}%2F..%2F{bid}", "..%5C{bid}", "{bid}%5C",
    "..\\..\\outside\\{decoy}", "{bid}\\", "%2Fetc%2Fpasswd", "%2F{bid}", "{bid}/..", "../{bid}",
    "%252e%252e%252f{bid}", "{bid}%20", "{bid}.", "{BID}%00", LONG, LONG * 8, "{bid}%0d%0aX-Injected:%201",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
]


def traversal_requests(sid: str, bid: str, decoy: str, server_seg: Optional[str],
                       backup_seg: Optional[str]) -> List[Tuple[str, str, bytes]]:
    fill = {"sid": sid, "bid": bid, "decoy": decoy, "BID": bid.upper()}
    restore = json.dumps(restore_body(True)).encode()
    if server_seg is not None:
        s = server_seg.format(**fill)
        return [("POST", f"/api/servers/{s}/backup", json.dumps(create_body(new_id())).encode()),
                ("POST", f"/api/servers/{s}/backup/{bid}/restore", restore),
                ("DELETE", f"/api/servers/{s}/backup/{bid}", b"")]
    assert backup_seg is not None
    b = backup_seg.format(**fill)
    return [("POST", f"/api/servers/{sid}/backup/{b}/restore", restore),
            ("DELETE", f"/api/servers/{sid}/backup/{b}", b"")]


def decoy_of(host: Host) -> str:
    return next(p.name for p in (host.base / "outside").iterdir() if p.name.endswith(".tar.gz"))[:-7]


def check_traversal(host: Host, sid: str, bid: str, server_seg: Optional[str], backup_seg: Optional[str],
                    allowed: Tuple[int, ...]) -> None:
    before = tree_state(host.base)
    for method, target, body in traversal_requests(sid, bid, decoy_of(host), server_seg, backup_seg):
        try:
            reply = host.raw(method, target, body=body, headers={"Content-Type": "application/json"})
        except (ConnectionError, OSError) as e:  # a request line the server refuses to read at all
            raise AssertionError(f"{method} {target[:100]}: {e}") from e
        if reply.status == 400 and "json" not in reply.headers.get("content-type", ""):
            # Go's net/http refuses a request line it cannot parse (a raw
            # backslash or %-escape it rejects) before the host sees it.
            assert host.kind == "go", (target[:100], reply.status, reply.text)
            continue
        assert_error(host, reply, allowed)
    assert tree_state(host.base) == before, f"{server_seg or backup_seg!r} changed files"


@pytest.mark.parametrize("segment", SERVER_SEGMENTS, ids=lambda s: s[:40])
def test_traversal_through_the_server_uuid_is_404(trav_host: Tuple[Host, str, str], segment: str) -> None:
    host, sid, bid = trav_host
    check_traversal(host, sid, bid, segment, None, (404,))


@pytest.mark.parametrize("segment", BACKUP_SEGMENTS, ids=lambda s: s[:40])
def test_traversal_through_the_backup_id_is_400_or_404(trav_host: Tuple[Host, str, str], segment: str) -> None:
    host, sid, bid = trav_host
    check_traversal(host, sid, bid, None, segment, (400, 404))


def test_the_traversal_host_still_works(trav_host: Tuple[Host, str, str]) -> None:
    """After all that, the real backup is where it was and restores."""
    host, sid, bid = trav_host
    res = host.request("POST", f"/api/servers/{sid}/backup/{bid}/restore", body=restore_body(False))
    assert res.status_code == 204, res.text


# --------------------------------------------------------------------------- error bodies


def test_error_bodies_never_carry_paths_or_traces(host_kind: str, tmp_path: Path) -> None:
    """Errors whose messages are most likely to name files: corrupt and
    unsafe archives, the disk limit, and a backup directory that has gone
    (replaced by a file)."""
    gen = started(host_kind, tmp_path, None, ["--disk-limit", "20000"])
    h = next(gen)
    try:
        sid = h.server(demo_tree)
        cases: List[Tuple[str, bytes, Tuple[int, ...]]] = []
        good = io.BytesIO()
        with tarfile.open(fileobj=good, mode="w:gz") as tar:
            data = b"x" * 10
            for name in ("ok.txt", "../../../escape.txt"):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        cases.append(("unsafe entry", good.getvalue(), (422,)))
        cases.append(("not gzip", b"plain text, no gzip here", (422,)))
        cases.append(("truncated", random_archive(100_000)[:50_000], (422,)))
        cases.append(("over the disk limit", random_archive(100_000), (507,)))
        for what, data, statuses in cases:
            bid = new_id()
            h.archive(bid).write_bytes(data)
            res = h.request("POST", f"/api/servers/{sid}/backup/{bid}/restore", body=restore_body(True))
            msg = assert_error(h, res, statuses)
            assert str(tmp_path) not in msg, (what, msg)
        assert not (tmp_path / "escape.txt").exists()
        # The backup directory replaced by a file: every call fails, and says
        # so without naming it.
        for p in h.backups.iterdir():
            p.unlink()
        h.backups.rmdir()
        h.backups.write_text("not a directory")
        for method, path, body in [("POST", f"/api/servers/{sid}/backup", create_body(new_id())),
                                   ("POST", f"/api/servers/{sid}/backup/{new_id()}/restore", restore_body()),
                                   ("DELETE", f"/api/servers/{sid}/backup/{new_id()}", None)]:
            res = h.request(method, path, body=body)
            if res.status_code == 202:
                continue  # accepted, failing in the background (logged, not answered)
            assert_error(h, res, (400, 404, 409, 500, 502, 503))
    finally:
        next(gen, None)


def test_the_leak_scan_catches_a_leak(tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        assert_no_leak("self-test", 500, f'{{"error": "open {tmp_path}/x: denied"}}')
    with pytest.raises(AssertionError):
        assert_no_leak("self-test", 500, "Traceback (most recent call last):")
    assert_no_leak("self-test", 404, '{"error": "The requested resource does not exist on this instance."}')

