"""The s3 adapter through each host (issue #5), with tests/support/panel_stub.py
as the Panel: a Panel that creates multipart uploads on a real S3 server
(moto), hands out presigned part URLs (through a proxy that injects faults)
and completes the upload with the parts the node reports, as the real Panel
does. docs/api.md sections 3, 4, 6, 7 and 8.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import socket
import tarfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import Host, PanelCall, PanelStub, started
from helpers import WAIT, assert_error, demo_tree, new_id, snapshot, temporary_files, wait_until

# The stub's default part size (tests/support/panel_stub.py).
PART_SIZE = 64 * 1024
FAILED_REPORT = {"checksum": "", "checksum_type": "", "size": 0, "successful": False, "parts": None}


def s3_tree(root: Path) -> None:
    """The demo tree and enough incompressible data for several parts."""
    demo_tree(root)
    (root / "world" / "noise.bin").write_bytes(os.urandom(400_000))


def old_tree(root: Path) -> None:
    """What a server holds before a restore: different from the archives."""
    (root / "world").mkdir()
    (root / "world" / "level.dat").write_bytes(b"mine, not the backup's")
    (root / "old.txt").write_text("old\n")
    (root / "plugins").mkdir()
    (root / "plugins" / "a.jar").write_bytes(os.urandom(2000))


def s3_create(backup: str) -> Dict[str, Any]:
    return {"adapter": "s3", "uuid": backup, "ignore": ""}


def s3_restore(url: str, truncate: bool = True) -> Dict[str, Any]:
    return {"adapter": "s3", "truncate_directory": truncate, "download_url": url}


def tar_gz_of(root: Path) -> bytes:
    """A gzip'd tar of root made by Python's tarfile (not by the engine)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(os.listdir(root)):
            tar.add(root / name, arcname=name)
    return buf.getvalue()


def final_report(panel: PanelStub, backup: str, timeout: float = WAIT) -> PanelCall:
    """The one status report the Panel got for backup (waits, bounded)."""
    reports = panel.backup_reports(backup, timeout)
    assert reports, f"the Panel was not told of backup {backup} within {timeout}s"
    time.sleep(0.3)  # a second report would come right after the first
    reports = panel.backup_reports(backup, 0)
    assert len(reports) == 1, f"{len(reports)} reports: {[r.body for r in reports]}"
    assert reports[0].problem is None, reports[0].problem
    return reports[0]


def files_of(host: Host, backup: str) -> List[str]:
    return [p.name for p in host.backups.iterdir() if backup in p.name]


@pytest.fixture(scope="module", params=["go", "python"])
def s3_host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            panel: PanelStub) -> Iterator[Host]:
    """A host whose s3 restores may download from 127.0.0.1 (the stub and moto)."""
    yield from started(request.param, tmp_path_factory.mktemp(f"{request.param}-s3-host"), panel,
                       ["--restore-host-allowlist", "127.0.0.1"])


@pytest.fixture(scope="module")
def bucket_archive(panel: PanelStub, tmp_path_factory: pytest.TempPathFactory) -> Tuple[str, Dict[str, str], int]:
    """An archive made by tarfile, in the bucket: (key, snapshot of its tree, size)."""
    src = tmp_path_factory.mktemp("s3-src")
    s3_tree(src)
    data = tar_gz_of(src)
    key = f"restore/{new_id()}.tar.gz"
    panel.put(key, data)
    return key, snapshot(src), len(data)


@pytest.fixture
def clean_faults(panel: PanelStub) -> Iterator[None]:
    panel.configure(part_faults={}, part_forever={}, reset=True)
    yield
    panel.configure(part_faults={}, part_forever={})


# --------------------------------------------------------------------------- backups


def test_s3_backup_lands_in_the_bucket_with_the_reported_sha1_and_size(s3_host: Host, panel: PanelStub) -> None:
    host = s3_host
    server = host.server(s3_tree)
    expected = snapshot(host.root(server))
    backup = new_id()
    res = host.request("POST", f"/api/servers/{server}/backup", body=s3_create(backup))
    assert res.status_code == 202, res.text
    assert res.content == b""

    report = final_report(panel, backup)
    body = report.body
    assert isinstance(body, dict) and body.get("successful") is True, body
    assert body["checksum_type"] == "sha1"
    assert re.fullmatch(r"[0-9a-f]{40}", body["checksum"]), body["checksum"]
    size = body["size"]
    # One presigned part per part_size bytes, every part reported with its ETag.
    count = math.ceil(size / PART_SIZE)
    assert count >= 3, f"a small archive ({size} bytes) makes no multipart test"
    assert [p["part_number"] for p in body["parts"]] == list(range(1, count + 1))
    assert all(re.fullmatch(r'"[0-9a-f]{32}"', p["etag"]) for p in body["parts"]), body["parts"]

    # The stub completed the upload with those parts; the object's bytes are
    # the ones the Panel was told of.
    state = panel.state(backup)
    assert state["completed"][backup] == {"sha1": body["checksum"], "size": size}
    assert panel.object_info(f"backups/{backup}.tar.gz") == {"sha1": body["checksum"], "size": size}
    with urllib.request.urlopen(panel.presign(f"backups/{backup}.tar.gz"), timeout=30) as r:
        data = r.read()
    assert hashlib.sha1(data).hexdigest() == body["checksum"]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = {m.name for m in tar.getmembers()}
    assert names == set(expected), f"archive entries differ: {sorted(names ^ set(expected))}"

    # Every Panel call carried the Panel's headers; the GET asked for the size.
    calls = panel.calls(backup)
    gets = [c for c in calls if c.method == "GET"]
    assert len(gets) == 1 and gets[0].query.get("size") == str(size), [(c.method, c.query) for c in calls]
    for c in calls:
        assert c.problem is None, c.problem
        assert c.headers.get("user-agent"), "no User-Agent"

    # The local copy is gone, with no temporary file left behind.
    wait_until(lambda: files_of(host, backup) == [], "the s3 backup's local file was not removed")
    assert temporary_files(host) == []


def test_an_s3_backup_restores_from_its_presigned_url(s3_host: Host, panel: PanelStub) -> None:
    """The Panel's whole round trip: an s3 backup, then a restore of that very
    object into another server through a presigned GET URL."""
    host = s3_host
    source = host.server(s3_tree)
    expected = snapshot(host.root(source))
    backup = new_id()
    assert host.request("POST", f"/api/servers/{source}/backup", body=s3_create(backup)).status_code == 202
    assert final_report(panel, backup).body["successful"] is True

    target = host.server(old_tree)
    url = panel.presign(f"backups/{backup}.tar.gz")
    res = host.request("POST", f"/api/servers/{target}/backup/{backup}/restore", body=s3_restore(url))
    assert res.status_code == 204, res.text
    assert snapshot(host.root(target)) == expected


def test_a_part_failing_with_500_twice_is_retried(s3_host: Host, panel: PanelStub, clean_faults: None) -> None:
    host = s3_host
    panel.configure(part_faults={"2": [500, 500]})
    server = host.server(s3_tree)
    backup = new_id()
    assert host.request("POST", f"/api/servers/{server}/backup", body=s3_create(backup)).status_code == 202
    body = final_report(panel, backup).body
    assert body["successful"] is True, body
    state = panel.state(backup)
    assert state["part_attempts"]["2"] == 3, state["part_attempts"]
    assert state["completed"][backup] == {"sha1": body["checksum"], "size": body["size"]}
    wait_until(lambda: files_of(host, backup) == [], "the s3 backup's local file was not removed")


def test_a_403_part_fails_the_backup_fast_and_the_panel_is_told(s3_host: Host, panel: PanelStub,
                                                                clean_faults: None) -> None:
    host = s3_host
    panel.configure(part_forever={"2": 403})
    server = host.server(s3_tree)
    backup = new_id()
    began = time.monotonic()
    assert host.request("POST", f"/api/servers/{server}/backup", body=s3_create(backup)).status_code == 202
    report = final_report(panel, backup, timeout=20)
    assert time.monotonic() - began < 20, "a 403 part was retried"
    assert report.body == FAILED_REPORT
    state = panel.state(backup)
    assert state["part_attempts"]["2"] == 1, f"a 403 part was retried: {state['part_attempts']}"
    assert backup not in state["completed"]
    wait_until(lambda: files_of(host, backup) == [], "the failed s3 backup left its local file")
    assert temporary_files(host) == []
    # The server is not left held by the failed backup.
    panel.configure(part_forever={})
    res = host.request("POST", f"/api/servers/{server}/backup",
                       body={"adapter": "wings", "uuid": new_id(), "ignore": ""})
    assert res.status_code == 202, res.text


# --------------------------------------------------------------------------- restores


def test_a_restore_from_a_presigned_url_gives_the_tree_back(
        s3_host: Host, panel: PanelStub, bucket_archive: Tuple[str, Dict[str, str], int]) -> None:
    host = s3_host
    key, expected, _ = bucket_archive
    server = host.server(old_tree)
    backup = new_id()
    res = host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                       body=s3_restore(panel.presign(key), truncate=True))
    assert res.status_code == 204, res.text
    assert res.content == b""
    assert snapshot(host.root(server)) == expected
    reports = panel.restore_reports(backup)
    assert [r.body for r in reports] == [{"successful": True}]
    assert reports[0].problem is None, reports[0].problem


def test_a_merge_restore_from_a_presigned_url_keeps_other_files(
        s3_host: Host, panel: PanelStub, bucket_archive: Tuple[str, Dict[str, str], int]) -> None:
    host = s3_host
    key, expected, _ = bucket_archive
    server = host.server(old_tree)
    res = host.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore",
                       body=s3_restore(panel.presign(key), truncate=False))
    assert res.status_code == 204, res.text
    got = snapshot(host.root(server))
    assert {k: got[k] for k in expected} == expected
    assert got["old.txt"].startswith("file ") and got["plugins/a.jar"].startswith("file ")


def test_a_download_cut_off_midway_leaves_the_old_files(
        s3_host: Host, panel: PanelStub, bucket_archive: Tuple[str, Dict[str, str], int]) -> None:
    host = s3_host
    key, _, size = bucket_archive
    server = host.server(old_tree)
    before = snapshot(host.root(server))
    backup = new_id()
    url = f"{panel.url}/_test/cut?key={key}&at={size // 2}"
    res = host.request("POST", f"/api/servers/{server}/backup/{backup}/restore", body=s3_restore(url, True))
    # A transport failure (502) or a truncated archive (422): an error either way.
    assert_error(host, res, (422, 502))
    assert snapshot(host.root(server)) == before
    reports = panel.restore_reports(backup)
    assert [r.body for r in reports] == [{"successful": False}]


@pytest.mark.parametrize("case", ["status 404", "text/html"])
def test_a_download_that_is_not_a_gzip_200_is_400(
        s3_host: Host, panel: PanelStub, bucket_archive: Tuple[str, Dict[str, str], int], case: str) -> None:
    host = s3_host
    key = bucket_archive[0]
    server = host.server(old_tree)
    before = snapshot(host.root(server))
    query = "status=404" if case == "status 404" else "type=text/html"
    res = host.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore",
                       body=s3_restore(f"{panel.url}/_test/serve?key={key}&{query}"))
    assert_error(host, res, 400)
    assert snapshot(host.root(server)) == before


def test_a_gzip_typed_download_that_is_not_gzip_data_is_422(s3_host: Host, panel: PanelStub) -> None:
    """The Content-Type says gzip and the body is not: a corrupt archive
    (422), like a local archive that is not gzip; 400 is for the answer's
    status and Content-Type (docs/api.md sections 2 and 4)."""
    host = s3_host
    key = f"not-gzip-{new_id()}"
    panel.put(key, b"this is plain text, not a gzip stream\n" * 64)
    server = host.server(old_tree)
    before = snapshot(host.root(server))
    res = host.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore",
                       body=s3_restore(f"{panel.url}/_test/serve?key={key}"))
    assert_error(host, res, 422, "the archive is not gzip data")
    assert snapshot(host.root(server)) == before


# --------------------------------------------------------------------------- download safety (6.1)


class Listener:
    """A TCP port on 127.0.0.1 (and ::1 when there is IPv6) that counts the
    connections made to it: a refused download URL must make none."""

    def __init__(self) -> None:
        self.socks: List[socket.socket] = []
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("127.0.0.1", 0))
        self.port = v4.getsockname()[1]
        self.socks.append(v4)
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::1", self.port))
            self.socks.append(v6)
        except OSError:
            pass
        self.connections = 0
        self.stopping = threading.Event()
        self.threads = []
        for s in self.socks:
            s.listen(16)
            s.settimeout(0.2)
            t = threading.Thread(target=self._accept, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    def _accept(self, s: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = s.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(2)
        for s in self.socks:
            s.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


LOOPBACK_URLS = [
    "http://127.0.0.1:{port}/b.tar.gz",
    "http://localhost:{port}/b.tar.gz",
    "http://127.0.0.2:{port}/b.tar.gz",
    "http://127.1:{port}/b.tar.gz",
    "http://2130706433:{port}/b.tar.gz",
    "http://0x7f000001:{port}/b.tar.gz",
    "http://0.0.0.0:{port}/b.tar.gz",
    "http://[::1]:{port}/b.tar.gz",
    "http://[::ffff:127.0.0.1]:{port}/b.tar.gz",
    "http://[::]:{port}/b.tar.gz",
    "https://127.0.0.1:{port}/b.tar.gz",
    "http://user:pass@127.0.0.1:{port}/b.tar.gz",
]


@pytest.mark.parametrize("template", LOOPBACK_URLS)
def test_a_loopback_url_is_refused_unless_allowlisted(host: Host, listener: Listener, template: str) -> None:
    """`host` has no allowlist: every spelling of a loopback address is 400,
    and nothing connects to it."""
    server = host.server(old_tree)
    before = snapshot(host.root(server))
    url = template.format(port=listener.port)
    res = host.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore", body=s3_restore(url))
    assert_error(host, res, 400)
    time.sleep(0.1)
    assert listener.connections == 0, f"{url} was connected to"
    assert snapshot(host.root(server)) == before


def test_the_presigned_url_is_refused_without_the_allowlist(
        host: Host, panel: PanelStub, bucket_archive: Tuple[str, Dict[str, str], int]) -> None:
    """The same presigned URL that s3_host (allowlist 127.0.0.1) restores from."""
    server = host.server(old_tree)
    before = snapshot(host.root(server))
    res = host.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore",
                       body=s3_restore(panel.presign(bucket_archive[0])))
    assert_error(host, res, 400)
    assert snapshot(host.root(server)) == before


def test_a_redirect_to_a_loopback_address_is_refused(
        s3_host: Host, panel: PanelStub, listener: Listener) -> None:
    """Allowed first hop (127.0.0.1 is allowlisted), redirected to ::1 and to
    localhost-by-IPv6, which are not: each hop is checked again."""
    server = s3_host.server(old_tree)
    before = snapshot(s3_host.root(server))
    for target in (f"http://[::1]:{listener.port}/b.tar.gz", f"http://127.0.0.2:{listener.port}/b.tar.gz"):
        url = f"{panel.url}/_test/redirect?to={urllib.request.quote(target, safe='')}"
        res = s3_host.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore", body=s3_restore(url))
        assert_error(s3_host, res, 400)
    assert listener.connections == 0
    assert snapshot(s3_host.root(server)) == before


def test_s3_adapter_on_a_host_without_a_panel_is_400(host_kind: str, tmp_path: Path) -> None:
    gen = started(host_kind, tmp_path, None)
    h: Optional[Host] = next(gen)
    try:
        server = h.server(demo_tree)
        res = h.request("POST", f"/api/servers/{server}/backup", body=s3_create(new_id()))
        assert_error(h, res, 400)
    finally:
        next(gen, None)
