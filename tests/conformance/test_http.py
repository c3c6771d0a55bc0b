"""The HTTP conformance suite: docs/api.md sections 1-6, against each host.

Tests that need a Panel callback check the calls of docs/api.md section 6.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tarfile
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from conftest import PANEL_ACCEPT, Host, PanelStub, read_reply, start_host, stop_host
from helpers import (CATALOG_NAME, MSG_BACKUP_NOT_FOUND, MSG_FORBIDDEN, MSG_NO_AUTH, assert_error, backup_now, big_tree,
                     create_body, demo_tree, leftovers, new_id, restore_body, sha1_of, snapshot,
                     temporary_files, unless_busy, wait_archive, wait_until)

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


@pytest.mark.parametrize("values", [["{good}", "{bad}"], ["{bad}", "{good}"], ["{good}", "{good}"],
                                    ["Bearer {token},x"], ["{good}, {bad}"]])
def test_an_authorization_header_sent_twice_or_with_a_comma_is_401(host: Host, values: list) -> None:
    """Two Authorization headers (which one counts?), or one holding a comma,
    the form in which HTTP joins repeated headers: 401 from both hosts."""
    server = host.server()
    fill = {"good": f"Bearer {host.token}", "bad": "Bearer nope", "token": host.token}
    head = (f"GET /api/servers/{server}/backups HTTP/1.1\r\nHost: 127.0.0.1:{host.port}\r\nConnection: close\r\n"
            + "".join(f"Authorization: {v.format(**fill)}\r\n" for v in values) + "\r\n")
    with socket.create_connection(("127.0.0.1", host.port), timeout=30) as sock:
        sock.sendall(head.encode())
        reply = read_reply(sock)
    assert_error(host, reply, 401, MSG_NO_AUTH)
    assert reply.headers.get("www-authenticate") == "Bearer"
    # One header with the token is still accepted.
    assert host.request("GET", f"/api/servers/{server}/backups").status_code == 200


@pytest.mark.parametrize("token", ["wrong", "{token}x", "{token_short}", "{token} extra"])
def test_wrong_token_is_403(host: Host, token: str) -> None:
    server = host.server()
    t = token.format(token=host.token, token_short=host.token[:-1])
    res = host.request("POST", f"/api/servers/{server}/backup", body=create_body(new_id()),
                       headers={"Authorization": f"Bearer {t}"}, auth=False)
    assert_error(host, res, 403, MSG_FORBIDDEN)
    assert not any(p for p in host.backups.iterdir() if not p.name.startswith(CATALOG_NAME))


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


def test_a_panel_that_keeps_failing_does_not_hold_the_server(host: Host, panel: PanelStub) -> None:
    """While a finished backup's report is retried (the Panel answers 503),
    its server takes new backups and restores; the uuid stays taken; the
    report goes out once the Panel is back."""
    server = host.server(demo_tree)
    backup = new_id()
    panel.configure(report_status_forever=503)
    try:
        assert host.request("POST", f"/api/servers/{server}/backup", body=create_body(backup)).status_code == 202
        wait_archive(host, backup)
        wait_until(lambda: bool(panel.backup_reports(backup, 0)), "no report was tried")
        res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                               body=restore_body(False)), timeout=5)
        assert res.status_code == 204, f"the server is held while the Panel is down: {res.text}"
        res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup",
                                               body=create_body(new_id())), timeout=5)
        assert res.status_code == 202, f"the server is held while the Panel is down: {res.text}"
        assert_error(host, host.request("POST", f"/api/servers/{host.server()}/backup", body=create_body(backup)),
                     409)
    finally:
        panel.configure(report_status_forever=None)
    wait_until(lambda: any(r["answered"] == 204 for r in panel.state(backup)["reports"]),
               "the report did not go out once the Panel was back", timeout=20)
    assert sum(r["answered"] == 204 for r in panel.state(backup)["reports"]) == 1


def test_a_delete_does_not_wait_for_a_slow_panel(host: Host, panel: PanelStub) -> None:
    """The Panel holds each backup report for 12 s before answering: a
    backup whose archive is written is deleted at once (204), and so is
    every backup of a server (delete-all); neither comes back."""
    server = host.server(demo_tree)
    one, two = new_id(), new_id()
    panel.configure(report_delay=12)
    try:
        for backup in (one, two):
            res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup",
                                                   body=create_body(backup)), timeout=10)
            assert res.status_code == 202, res.text
            wait_archive(host, backup)
            wait_until(lambda: bool(panel.backup_reports(backup, 0)), "no report was tried")
        began = time.monotonic()
        res = host.request("DELETE", f"/api/servers/{server}/backup/{one}")
        assert res.status_code == 204, res.text
        res = host.request("DELETE", f"/api/servers/{server}/backups")
        assert res.status_code == 200 and res.json() == {"deleted": 1}, res.text
        took = time.monotonic() - began
        assert took < 5, f"the deletes waited for the Panel: {took:.1f}s"
    finally:
        panel.configure(report_delay=0)
    for backup in (one, two):
        assert not host.archive(backup).exists()
        assert_error(host, host.request("GET", f"/api/servers/{server}/backup/{backup}"), 404)
    assert host.request("GET", f"/api/servers/{server}/backups").json() == []


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
        # Validation still answers before the 202: an unknown backup, and a
        # path the backup's index does not hold (nothing is touched).
        res = h.request("POST", f"/api/servers/{server}/backup/{new_id()}/restore", body=restore_body(True))
        assert_error(h, res, 404)
        (h.root(server) / "server.properties").write_text("changed again")
        before = snapshot(h.root(server))
        res = h.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                        body={**restore_body(True), "paths": ["world", "no-such-file"]})
        assert_error(h, res, 404, 'The backup does not hold "no-such-file".')
        assert snapshot(h.root(server)) == before
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
