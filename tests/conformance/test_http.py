"""The HTTP conformance suite: CONTRACT sections 1, 3 and 7, against each host.

Tests that need a Panel callback are written to the contract (section 3);
they fail while the core does not yet report to the Panel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest
import requests

from conftest import PANEL_ACCEPT, Host, PanelStub, start_host, stop_host

WAIT = 30.0  # bound for a background backup to finish
ARCHIVE_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tar\.gz$")

MSG_NO_AUTH = "The required authorization heads were not present in the request."
MSG_FORBIDDEN = "You are not authorized to access this endpoint."
MSG_BACKUP_NOT_FOUND = "The requested backup was not found on this server."


# --------------------------------------------------------------------------- helpers


def new_id() -> str:
    return str(uuid.uuid4())


def create_body(backup: str, ignore: str = "") -> Dict[str, Any]:
    return {"adapter": "wings", "uuid": backup, "ignore": ignore}


def restore_body(truncate: bool = True) -> Dict[str, Any]:
    return {"adapter": "wings", "truncate_directory": truncate, "download_url": ""}


def demo_tree(root: Path) -> None:
    """Files with several modes, nested and empty directories, symlinks."""
    (root / "world" / "region").mkdir(parents=True)
    (root / "logs" / "old").mkdir(parents=True)
    (root / "cache").mkdir()
    (root / "server.properties").write_text("motd=conformance\nmax-players=20\n")
    (root / "start.sh").write_text("#!/bin/sh\nexec java -jar server.jar\n")
    (root / "world" / "level.dat").write_bytes(os.urandom(50_000))
    (root / "world" / "region" / "r.0.0.mca").write_bytes(b"chunk" * 4000)
    (root / "secret.key").write_bytes(b"k" * 32)
    (root / "naïve name.txt").write_text("unicode and a space\n")
    os.chmod(root / "start.sh", 0o755)
    os.chmod(root / "secret.key", 0o600)
    os.chmod(root / "world" / "region" / "r.0.0.mca", 0o640)
    os.chmod(root / "cache", 0o700)
    os.symlink("world/level.dat", root / "level.link")
    os.symlink("/etc/hostname", root / "outside.link")
    os.symlink("missing/target", root / "dangling.link")


def big_tree(root: Path) -> None:
    """A tree whose backup takes seconds under the hosts' 1 MiB/s write limit."""
    demo_tree(root)
    (root / "big.bin").write_bytes(os.urandom(4 << 20))


def snapshot(root: Path) -> Dict[str, str]:
    """Type, permission bits and content of every entry, symlinks not followed."""
    out: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            perm = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link " + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"dir {perm}"
            else:
                out[rel] = f"file {perm} {hashlib.sha1(path.read_bytes()).hexdigest()}"
    return out


def sha1_of(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def assert_error(host: Host, res: requests.Response, status: int, message: Optional[str] = None) -> str:
    """An error reply: the status, a JSON {"error": "..."} body, no node paths."""
    assert res.status_code == status, f"want {status}, got {res.status_code} {res.text!r}"
    ctype = res.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/json", f"Content-Type {ctype!r}"
    body = res.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], res.text
    for leak in (str(host.data), str(host.backups), "Traceback", "goroutine ", "panicked at"):
        assert leak not in res.text, f"error body leaks {leak!r}: {res.text!r}"
    if message is not None:
        assert body["error"] == message
    return body["error"]


def wait_archive(host: Host, backup: str, timeout: float = WAIT) -> Path:
    path = host.archive(backup)
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout}s"
        time.sleep(0.05)
    return path


def backup_now(host: Host, server: str) -> str:
    """Creates a backup of server and waits for its archive."""
    backup = new_id()
    res = host.request("POST", f"/api/servers/{server}/backup", body=create_body(backup))
    assert res.status_code == 202, res.text
    wait_archive(host, backup)
    return backup


def unless_busy(send: Callable[[], requests.Response], timeout: float = WAIT) -> requests.Response:
    """Sends a request again while it is answered 409: a backup whose archive
    just appeared may hold its server a moment longer (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        res = send()
        if res.status_code != 409 or time.monotonic() > deadline:
            return res
        time.sleep(0.05)


def wait_until(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what} (waited {timeout}s)"
        time.sleep(0.05)


def leftovers(host: Host) -> list:
    return sorted(p.name for p in host.backups.iterdir() if p.name != ".pending")


def temporary_files(host: Host) -> list:
    """Entries of the backup directory other than finished <uuid>.tar.gz files."""
    return [n for n in leftovers(host) if not ARCHIVE_NAME.match(n)]


# --------------------------------------------------------------------------- auth and routing


@pytest.mark.parametrize("auth", [None, "", "Basic Zm9vOmJhcg==", "Bearer", "bearer {token}", "Token {token}", "Bearer{token}"])
def test_missing_or_malformed_authorization_is_401(host: Host, auth: Optional[str]) -> None:
    server = host.server()
    headers = {} if auth is None else {"Authorization": auth.format(token=host.token)}
    for method, path in [("POST", f"/api/servers/{server}/backup"),
                         ("POST", f"/api/servers/{server}/backup/{new_id()}/restore"),
                         ("DELETE", f"/api/servers/{server}/backup/{new_id()}")]:
        res = host.request(method, path, body={}, headers=headers, auth=False)
        assert_error(host, res, 401, MSG_NO_AUTH)
        assert res.headers.get("WWW-Authenticate") == "Bearer"


@pytest.mark.parametrize("token", ["wrong", "{token}x", "{token_short}", "{token} extra"])
def test_wrong_token_is_403(host: Host, token: str) -> None:
    server = host.server()
    t = token.format(token=host.token, token_short=host.token[:-1])
    res = host.request("POST", f"/api/servers/{server}/backup", body=create_body(new_id()),
                       headers={"Authorization": f"Bearer {t}"}, auth=False)
    assert_error(host, res, 403, MSG_FORBIDDEN)
    assert not any(host.backups.iterdir())


def test_auth_runs_before_server_lookup(host: Host) -> None:
    unknown = new_id()
    res = host.request("POST", f"/api/servers/{unknown}/backup", body=create_body(new_id()), auth=False)
    assert_error(host, res, 401)
    assert res.headers.get("WWW-Authenticate") == "Bearer"
    res = host.request("DELETE", f"/api/servers/not-a-uuid/backup/{new_id()}",
                       headers={"Authorization": "Bearer nope"}, auth=False)
    assert_error(host, res, 403)


@pytest.mark.parametrize("server", ["unknown", "not-a-uuid", "upper", "braces", "dotdot"])
def test_unknown_or_non_uuid_server_is_404(host: Host, server: str) -> None:
    existing = host.server(demo_tree)
    sid = {
        "unknown": new_id(),
        "not-a-uuid": "not-a-uuid",
        "upper": existing.upper(),  # server ids match exactly, as in Wings
        "braces": "{" + existing + "}",
        "dotdot": "..%2F..%2Fetc",
    }[server]
    backup = backup_now(host, existing) if server == "unknown" else new_id()
    for method, path, body in [
        ("POST", f"/api/servers/{sid}/backup", create_body(new_id())),
        ("POST", f"/api/servers/{sid}/backup/{backup}/restore", restore_body()),
        ("DELETE", f"/api/servers/{sid}/backup/{backup}", None),
    ]:
        res = host.request(method, path, body=body)
        assert_error(host, res, 404)
    # Nothing happened to the archive through an unknown server.
    if server == "unknown":
        assert host.archive(backup).exists()


# --------------------------------------------------------------------------- create: validation


@pytest.mark.parametrize("raw", [
    b"", b"{", b"not json", b"[]", b'"string"', b"null",
    b'{"adapter":"wings","ignore":""}',                             # no uuid
    b'{"uuid":"UUID","ignore":""}',                                  # no adapter
    b'{"adapter":"wings","uuid":"UUID"}',                            # no ignore
    b'{"adapter":1,"uuid":"UUID","ignore":""}',                      # wrong types
    b'{"adapter":"wings","uuid":5,"ignore":""}',
    b'{"adapter":"wings","uuid":"UUID","ignore":["a"]}',
    b'{"adapter":"wings","uuid":"UUID","ignore":null}',
    b'{"adapter":"wings","uuid":"x","ignore":""}',                   # bad backup uuids
    b'{"adapter":"wings","uuid":"../../etc/passwd","ignore":""}',
    b'{"adapter":"wings","uuid":"{UUID}","ignore":""}',
    b'{"adapter":"wings","uuid":"","ignore":""}',
    b'{"adapter":"ftp","uuid":"UUID","ignore":""}',                  # unknown adapters
    b'{"adapter":"","uuid":"UUID","ignore":""}',
    b'{"adapter":"WINGS","uuid":"UUID","ignore":""}',
], ids=lambda r: r.decode()[:40] or "empty")
def test_create_bad_body_is_400(host: Host, raw: bytes) -> None:
    server = host.server(demo_tree)
    raw = raw.replace(b"UUID", new_id().encode())
    res = host.request("POST", f"/api/servers/{server}/backup", raw=raw,
                       headers={"Content-Type": "application/json"})
    assert_error(host, res, 400)
    assert temporary_files(host) == []


def test_create_ignores_unknown_fields(host: Host) -> None:
    server = host.server(demo_tree)
    backup = new_id()
    body = dict(create_body(backup), extra={"nested": [1, 2]}, name="weekly")
    res = host.request("POST", f"/api/servers/{server}/backup", body=body)
    assert res.status_code == 202, res.text
    wait_archive(host, backup)


def test_create_body_over_1mib_is_413(host: Host) -> None:
    server = host.server(demo_tree)
    body = json.dumps(dict(create_body(new_id()), pad="x" * (1 << 20))).encode()
    res = host.request("POST", f"/api/servers/{server}/backup", raw=body,
                       headers={"Content-Type": "application/json"})
    assert_error(host, res, 413)


def test_restore_body_over_1mib_is_413(host: Host) -> None:
    server = host.server(demo_tree)
    backup = backup_now(host, server)
    body = json.dumps(dict(restore_body(), pad="x" * (3 << 19))).encode()
    res = host.request("POST", f"/api/servers/{server}/backup/{backup}/restore", raw=body,
                       headers={"Content-Type": "application/json"})
    assert_error(host, res, 413)


# --------------------------------------------------------------------------- create: the backup


def test_create_is_202_empty_and_writes_the_archive(host: Host) -> None:
    server = host.server(demo_tree)
    backup = new_id()
    res = host.request("POST", f"/api/servers/{server}/backup", body=create_body(backup, "*.log\ncache/\n"))
    assert res.status_code == 202, res.text
    assert res.content == b""
    path = wait_archive(host, backup)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with tarfile.open(path, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    for name in ["server.properties", "world/level.dat", "logs/old", "level.link", "outside.link"]:
        assert name in members, f"{name} missing from the archive: {sorted(members)}"
    assert "cache" not in members, "ignored directory archived"
    assert members["logs/old"].isdir()
    assert members["level.link"].issym() and members["level.link"].linkname == "world/level.dat"
    assert members["start.sh"].mode & 0o777 == 0o755
    assert not any(n.startswith(("/", "./")) for n in members)
    # No temporary file is left beside it.
    assert temporary_files(host) == []


def test_create_reports_checksum_and_size_to_panel(host: Host, panel: PanelStub) -> None:
    server = host.server(demo_tree)
    backup = new_id()
    res = host.request("POST", f"/api/servers/{server}/backup", body=create_body(backup))
    assert res.status_code == 202, res.text
    path = wait_archive(host, backup)
    reports = panel.backup_reports(backup)
    assert reports, "the Panel was not told of the finished backup"
    call = reports[0]
    assert call.problem is None, call.problem
    assert call.headers.get("accept") == PANEL_ACCEPT
    assert call.headers.get("user-agent"), "no User-Agent"
    # The Panel reads these five fields (anything else it ignores).
    fields = ("checksum", "checksum_type", "size", "successful", "parts")
    assert isinstance(call.body, dict), call.body
    assert {k: call.body.get(k, "<missing>") for k in fields} == {
        "checksum": sha1_of(path),
        "checksum_type": "sha1",
        "size": path.stat().st_size,
        "successful": True,
        "parts": None,
    }
    time.sleep(0.5)
    assert len(panel.backup_reports(backup, timeout=0)) == 1, "more than one final report"


def test_duplicate_backup_uuid_is_409(host: Host) -> None:
    server, other = host.server(demo_tree), host.server(demo_tree)
    backup = backup_now(host, server)
    before = sha1_of(host.archive(backup))
    for sid in (server, other):
        res = host.request("POST", f"/api/servers/{sid}/backup", body=create_body(backup))
        assert_error(host, res, 409)
    assert sha1_of(host.archive(backup)) == before


def test_running_backup_uuid_and_busy_server_are_409(host: Host) -> None:
    slow, other = host.server(big_tree), host.server(demo_tree)
    running = new_id()
    res = host.request("POST", f"/api/servers/{slow}/backup", body=create_body(running))
    assert res.status_code == 202, res.text
    try:
        # Same uuid on another server while it runs.
        assert_error(host, host.request("POST", f"/api/servers/{other}/backup", body=create_body(running)), 409)
        # Another backup of the busy server.
        assert_error(host, host.request("POST", f"/api/servers/{slow}/backup", body=create_body(new_id())), 409)
        # A restore into the busy server.
        existing = backup_now(host, other)
        res = host.request("POST", f"/api/servers/{slow}/backup/{existing}/restore", body=restore_body())
        assert_error(host, res, 409)
    finally:
        # Deleting the running backup cancels it and removes the partial file.
        res = host.request("DELETE", f"/api/servers/{slow}/backup/{running}")
        assert res.status_code == 204, res.text
    assert not host.archive(running).exists()
    wait_until(lambda: not [n for n in leftovers(host) if running in n], "the cancelled backup left files")
    assert temporary_files(host) == []


def test_deleted_running_backup_reports_failure_to_panel(host: Host, panel: PanelStub) -> None:
    slow = host.server(big_tree)
    backup = new_id()
    assert host.request("POST", f"/api/servers/{slow}/backup", body=create_body(backup)).status_code == 202
    assert host.request("DELETE", f"/api/servers/{slow}/backup/{backup}").status_code == 204
    reports = panel.backup_reports(backup)
    assert reports, "the Panel was not told the backup ended"
    assert reports[0].problem is None, reports[0].problem
    assert reports[0].body == {"checksum": "", "checksum_type": "", "size": 0, "successful": False, "parts": None}
    time.sleep(0.5)
    assert len(panel.backup_reports(backup, timeout=0)) == 1, "more than one final report"


# --------------------------------------------------------------------------- restore


def test_restore_truncate_brings_the_tree_back(host: Host) -> None:
    server = host.server(demo_tree)
    root = host.root(server)
    before = snapshot(root)
    backup = backup_now(host, server)
    # Damage the server: change, remove and add files, drop the empty dir.
    (root / "server.properties").write_text("motd=damaged\n")
    os.chmod(root / "start.sh", 0o644)
    (root / "world" / "level.dat").unlink()
    (root / "logs" / "old").rmdir()
    (root / "level.link").unlink()
    (root / "added.txt").write_text("not in the backup")
    res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                           body=restore_body(True)))
    assert res.status_code == 204, res.text
    assert res.content == b""
    assert snapshot(root) == before
    assert root.is_dir()


def test_restore_merge_keeps_other_files(host: Host) -> None:
    server = host.server(demo_tree)
    root = host.root(server)
    backup = backup_now(host, server)
    expected = snapshot(root)
    (root / "server.properties").write_text("motd=changed\n")
    (root / "extra.txt").write_text("kept")
    res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                           body=restore_body(False)))
    assert res.status_code == 204, res.text
    got = snapshot(root)
    assert got.pop("extra.txt").startswith("file ")
    assert got == expected


def test_restore_reports_to_panel(host: Host, panel: PanelStub) -> None:
    server = host.server(demo_tree)
    backup = backup_now(host, server)
    res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                           body=restore_body()))
    assert res.status_code == 204, res.text
    reports = panel.restore_reports(backup)
    assert reports, "the Panel was not told of the restore"
    assert reports[0].problem is None, reports[0].problem
    assert reports[0].body == {"successful": True}


@pytest.mark.parametrize("case", [
    "not json", "unknown adapter", "truncate not bool", "backup id not uuid",
    "s3 without download_url", "s3 empty download_url", "s3 ftp url", "s3 loopback url", "s3 unparsable url",
])
def test_restore_bad_request_is_400(host: Host, case: str) -> None:
    server = host.server(demo_tree)
    backup = new_id()
    raw: Optional[bytes] = None
    body: Any = None
    bid = backup
    if case == "not json":
        raw = b"{adapter: wings"
    elif case == "unknown adapter":
        body = {"adapter": "ftp", "truncate_directory": False}
    elif case == "truncate not bool":
        body = {"adapter": "wings", "truncate_directory": "yes"}
    elif case == "backup id not uuid":
        body, bid = restore_body(), "not-a-uuid"
    elif case == "s3 without download_url":
        body = {"adapter": "s3", "truncate_directory": True}
    elif case == "s3 empty download_url":
        body = {"adapter": "s3", "truncate_directory": True, "download_url": ""}
    elif case == "s3 ftp url":
        body = {"adapter": "s3", "truncate_directory": True, "download_url": "ftp://example.com/b.tar.gz"}
    elif case == "s3 loopback url":
        body = {"adapter": "s3", "truncate_directory": True, "download_url": "http://127.0.0.1:9/b.tar.gz"}
    elif case == "s3 unparsable url":
        body = {"adapter": "s3", "truncate_directory": True, "download_url": "http://[::1"}
    before = snapshot(host.root(server))
    res = host.request("POST", f"/api/servers/{server}/backup/{bid}/restore", body=body, raw=raw,
                       headers={"Content-Type": "application/json"})
    assert_error(host, res, 400)
    assert snapshot(host.root(server)) == before


def test_restore_missing_local_backup_is_404(host: Host) -> None:
    server = host.server(demo_tree)
    before = snapshot(host.root(server))
    res = host.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore", body=restore_body(True))
    assert_error(host, res, 404)
    # Unlike Wings, nothing was truncated.
    assert snapshot(host.root(server)) == before


def test_restore_corrupt_archive_is_422_and_keeps_files(host: Host, panel: PanelStub) -> None:
    server = host.server(demo_tree)
    backup = new_id()
    good = host.archive(backup_now(host, server)).read_bytes()
    # A truncated archive under a new uuid.
    host.archive(backup).write_bytes(good[: len(good) // 2])
    before = snapshot(host.root(server))
    res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                           body=restore_body(True)))
    assert_error(host, res, 422)
    assert snapshot(host.root(server)) == before


def test_failed_restore_reports_to_panel(host: Host, panel: PanelStub) -> None:
    server = host.server(demo_tree)
    backup = new_id()
    host.archive(backup).write_bytes(b"this is not gzip")
    res = host.request("POST", f"/api/servers/{server}/backup/{backup}/restore", body=restore_body(True))
    assert_error(host, res, 422)
    reports = panel.restore_reports(backup)
    assert reports, "the Panel was not told of the failed restore"
    assert reports[0].problem is None, reports[0].problem
    assert reports[0].body == {"successful": False}


# --------------------------------------------------------------------------- delete


def test_delete_then_404(host: Host) -> None:
    server = host.server(demo_tree)
    backup = backup_now(host, server)
    res = host.request("DELETE", f"/api/servers/{server}/backup/{backup}")
    assert res.status_code == 204, res.text
    assert res.content == b""
    assert not host.archive(backup).exists()
    res = host.request("DELETE", f"/api/servers/{server}/backup/{backup}")
    assert_error(host, res, 404, MSG_BACKUP_NOT_FOUND)


@pytest.mark.parametrize("bid", ["not-a-uuid", "x" * 36, "{00000000-0000-4000-8000-000000000000}"])
def test_delete_non_uuid_is_400(host: Host, bid: str) -> None:
    server = host.server()
    res = host.request("DELETE", f"/api/servers/{server}/backup/{bid}")
    assert_error(host, res, 400)


# --------------------------------------------------------------------------- host options and lifecycle


def test_async_restore_answers_202(host_kind: str, tmp_path: Path) -> None:
    h = start_host(host_kind, tmp_path, None, ["--async-restore"])
    try:
        server = h.server(demo_tree)
        before = snapshot(h.root(server))
        backup = backup_now(h, server)
        (h.root(server) / "server.properties").write_text("damaged")
        res = unless_busy(lambda: h.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                            body=restore_body(True)))
        assert res.status_code == 202, res.text
        assert res.content == b""
        wait_until(lambda: snapshot(h.root(server)) == before, "the async restore did not finish")
        # Validation still answers before the 202.
        res = h.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore", body=restore_body(True))
        assert_error(h, res, 404)
    finally:
        code = stop_host(h)
    assert code == 0, h.log()


def test_sigterm_cancels_running_backup_and_exits_0(host_kind: str, tmp_path: Path) -> None:
    h = start_host(host_kind, tmp_path, None)
    try:
        server = h.server(big_tree)
        backup = new_id()
        res = h.request("POST", f"/api/servers/{server}/backup", body=create_body(backup))
        assert res.status_code == 202, res.text
        started = time.monotonic()
    finally:
        code = stop_host(h)
    assert code == 0, f"exit {code}:\n{h.log()}"
    assert time.monotonic() - started < 15, "shutdown was not prompt"
    assert not h.archive(backup).exists(), "a cancelled backup left its archive"
    assert leftovers(h) == [], f"left in the backup directory: {leftovers(h)}"
