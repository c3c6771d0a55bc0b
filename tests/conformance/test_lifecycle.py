"""A backup's whole life through both hosts: its state while it runs
(GET .../backup/:id), live progress (GET .../backup/:id/events), cancelling
a queued and a running create and a running restore (POST .../cancel), the
list of a server's backups and deleting them all (GET and DELETE
.../backups, Pelican's DELETE .../deleteAllBackups), waiting for a backup
("wait": true), and a restarted host (after SIGTERM, and after kill -9) that
still answers for the backups it made.

Backups are slow here: every host of the suite runs with --write-limit 1
(MiB/s), and the servers hold megabytes of random data."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
import requests

from conftest import LIBRARY, REPO, Host, PanelStub, start_host, stop_host
from helpers import (assert_error, big_tree, create_body, demo_tree, leftovers, new_id, restore_body, snapshot,
                     temporary_files, wait_archive, wait_until)

STATE_KEYS = {"uuid", "server", "adapter", "state", "phase", "bytes_done", "bytes_total", "files", "size",
              "checksum", "error", "started_at", "finished_at"}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
FINISHED = ("succeeded", "failed", "cancelled")


def status(host: Host, server: str, backup: str) -> requests.Response:
    return host.request("GET", f"/api/servers/{server}/backup/{backup}")


def state_of(host: Host, server: str, backup: str) -> Dict[str, Any]:
    res = status(host, server, backup)
    assert res.status_code == 200 and res.headers["Content-Type"].startswith("application/json"), res.text
    body = res.json()
    assert STATE_KEYS <= set(body), body
    assert RFC3339_UTC.match(body["started_at"]), body
    assert body["finished_at"] is None or RFC3339_UTC.match(body["finished_at"]), body
    return body


def wait_state(host: Host, server: str, backup: str, states: tuple, timeout: float = 30) -> Dict[str, Any]:
    found: Dict[str, Any] = {}

    def reached() -> bool:
        found.update(state_of(host, server, backup))
        return found["state"] in states

    wait_until(reached, f"backup {backup} did not reach {states}: {found}", timeout)
    return found


def create(host: Host, server: str, backup: str, **extra: Any) -> requests.Response:
    return host.request("POST", f"/api/servers/{server}/backup", body={**create_body(backup), **extra})


def cancel(host: Host, server: str, backup: str) -> requests.Response:
    return host.request("POST", f"/api/servers/{server}/backup/{backup}/cancel")


def events(host: Host, server: str, backup: str, timeout: float = 60) -> List[Dict[str, Any]]:
    """The events of the stream, read until it ends: [{"event", "data", "t"}]."""
    res = host.request("GET", f"/api/servers/{server}/backup/{backup}/events", timeout=timeout)
    assert res.status_code == 200, res.text
    assert res.headers["Content-Type"].split(";")[0] == "text/event-stream"
    out: List[Dict[str, Any]] = []
    # requests has read the whole body: the stream ended by itself.
    for block in res.text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append({"event": fields["event"], "data": json.loads(fields["data"])})
    return out


@pytest.fixture
def start(host_kind: str, tmp_path: Path) -> Iterator[Callable[..., Host]]:
    """Starts the host with extra flags; stops it after the test."""
    hosts: List[Host] = []

    def go(*extra: str, panel: PanelStub = None) -> Host:  # type: ignore[assignment]
        hosts.append(start_host(host_kind, tmp_path / f"node{len(hosts)}", panel, list(extra)))
        return hosts[-1]

    yield go
    for h in hosts:
        if h.proc.poll() is None:
            code = stop_host(h)
            assert code == 0, f"{h.kind} host did not exit 0 on SIGTERM (got {code}):\n{h.log()}"


def test_status_and_events_during_a_slow_backup(host: Host) -> None:
    server = host.server(big_tree)
    backup = new_id()
    assert_error(host, status(host, server, backup), 404)
    res = create(host, server, backup)
    assert res.status_code == 202 and res.content == b"", res.text
    first = state_of(host, server, backup)
    assert first["uuid"] == backup and first["server"] == server and first["adapter"] == "wings"
    assert first["state"] in ("queued", "running") and first["finished_at"] is None and first["error"] is None
    began = time.monotonic()
    stream = events(host, server, backup)
    took = time.monotonic() - began
    kinds = [e["event"] for e in stream]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"progress"}, kinds
    progress = [e["data"] for e in stream[:-1] if e["data"]["phase"] == "archive"]
    assert len(progress) >= 3, kinds
    # The backup advances from one event to the next: the source bytes read
    # and the archive bytes written never go back, and one of them grows (the
    # whole 4 MiB tree may be read before the first event while the write
    # limit holds the archive back, so the growth may be in either).
    done = [(p["bytes_done"], p["size"]) for p in progress]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(done, done[1:])), done
    assert done[-1] != done[0], done
    # The total is 0 (unknown) until the engine has counted the tree.
    assert progress[-1]["bytes_total"] >= 4 << 20, progress[-1]
    assert all(p["bytes_total"] in (0, progress[-1]["bytes_total"]) for p in progress), progress
    # At most a few a second: the stream lasted as long as the backup.
    assert len(stream) <= 5 * took + 3, (len(stream), took)
    last = stream[-1]["data"]
    assert last["state"] == "succeeded" and last["phase"] == "done"
    assert last["size"] == host.archive(backup).stat().st_size
    assert re.fullmatch(r"[0-9a-f]{40}", last["checksum"])
    assert RFC3339_UTC.match(last["finished_at"])
    assert state_of(host, server, backup) == last
    # A finished backup's stream is one "done" event at once.
    again = events(host, server, backup, timeout=10)
    assert [e["event"] for e in again] == ["done"] and again[0]["data"] == last
    assert_error(host, host.request("GET", f"/api/servers/{server}/backup/{new_id()}/events"), 404)
    assert_error(host, cancel(host, server, backup), 409)
    assert_error(host, cancel(host, server, new_id()), 404)


def test_cancel_a_running_create(host: Host, panel: PanelStub) -> None:
    server = host.server(big_tree)
    backup = new_id()
    assert create(host, server, backup).status_code == 202
    wait_until(lambda: any(backup in n for n in leftovers(host)), "the backup did not start writing")
    began = time.monotonic()
    res = cancel(host, server, backup)
    assert res.status_code == 202 and res.content == b"", res.text
    final = wait_state(host, server, backup, FINISHED, timeout=5)
    assert time.monotonic() - began < 1.5, time.monotonic() - began
    assert final["state"] == "cancelled" and final["error"], final
    wait_until(lambda: not any(backup in n for n in leftovers(host)), "the cancelled backup left files")
    reports = panel.backup_reports(backup)
    assert len(reports) == 1 and reports[0].body["successful"] is False, reports
    assert_error(host, cancel(host, server, backup), 409)


def test_cancel_a_queued_create(start: Callable[..., Host]) -> None:
    node = start("--max-running-backups", "1")
    s1, s2 = node.server(big_tree), node.server(big_tree)
    running, queued = new_id(), new_id()
    assert create(node, s1, running).status_code == 202
    assert create(node, s2, queued).status_code == 202
    assert state_of(node, s2, queued)["state"] == "queued"
    res = cancel(node, s2, queued)
    assert res.status_code == 202, res.text
    final = wait_state(node, s2, queued, FINISHED, timeout=5)
    assert final["state"] == "cancelled"
    assert not any(queued in n for n in leftovers(node))
    # The running one was not disturbed.
    assert wait_state(node, s1, running, FINISHED)["state"] == "succeeded"
    assert temporary_files(node) == []


def test_cancel_a_running_restore(host: Host) -> None:
    server = host.server(big_tree)
    backup = new_id()
    assert create(host, server, backup, wait=True).status_code == 200
    (host.root(server) / "server.properties").write_text("changed since the backup\n")
    (host.root(server) / "new.txt").write_text("not in the backup\n")
    before = snapshot(host.root(server))
    answer: Dict[str, Any] = {}

    def restore() -> None:
        answer["res"] = host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                     body=restore_body(truncate=True))

    import threading
    t = threading.Thread(target=restore)
    t.start()
    try:
        wait_until(lambda: state_of(host, server, backup)["phase"] == "extract",
                   "the restore did not start extracting")
        res = cancel(host, server, backup)
        assert res.status_code == 202, res.text
    finally:
        t.join(30)
    assert not t.is_alive()
    assert_error(host, answer["res"], 503)
    final = state_of(host, server, backup)
    assert final["state"] == "cancelled" and final["kind"] == "restore", final
    assert snapshot(host.root(server)) == before


def test_list_and_delete_all_across_two_servers(host: Host) -> None:
    s1, s2 = host.server(demo_tree), host.server(demo_tree)
    b1, b2, b3 = new_id(), new_id(), new_id()
    for server, backup in ((s1, b1), (s1, b2), (s2, b3)):
        res = create(host, server, backup, wait=True)
        assert res.status_code == 200, res.text
        time.sleep(0.01)
    res = host.request("GET", f"/api/servers/{s1}/backups")
    assert res.status_code == 200, res.text
    listed = res.json()
    assert [b["uuid"] for b in listed] == [b2, b1]
    assert all(STATE_KEYS <= set(b) and b["state"] == "succeeded" for b in listed)
    assert [b["uuid"] for b in host.request("GET", f"/api/servers/{s2}/backups").json()] == [b3]
    res = host.request("DELETE", f"/api/servers/{s1}/backups")
    assert res.status_code == 200 and res.json() == {"deleted": 2}, res.text
    assert not host.archive(b1).exists() and not host.archive(b2).exists()
    assert host.archive(b3).exists()
    assert host.request("GET", f"/api/servers/{s1}/backups").json() == []
    assert_error(host, status(host, s1, b1), 404)
    # Pelican's route does the same.
    res = host.request("DELETE", f"/api/servers/{s2}/deleteAllBackups")
    assert res.status_code == 200 and res.json() == {"deleted": 1}, res.text
    assert not host.archive(b3).exists()
    assert_error(host, host.request("GET", f"/api/servers/{new_id()}/backups"), 404)


def test_delete_all_cancels_a_running_create(host: Host) -> None:
    server = host.server(big_tree)
    backup = new_id()
    assert create(host, server, backup).status_code == 202
    wait_until(lambda: any(backup in n for n in leftovers(host)), "the backup did not start writing")
    res = host.request("DELETE", f"/api/servers/{server}/backups")
    assert res.status_code == 200 and res.json() == {"deleted": 1}, res.text
    assert not any(backup in n for n in leftovers(host))


def test_wait_answers_the_details_or_the_error(host: Host) -> None:
    server = host.server(demo_tree)
    backup = new_id()
    res = create(host, server, backup, wait=True)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["state"] == "succeeded" and body["uuid"] == backup
    assert body["size"] == host.archive(backup).stat().st_size
    assert re.fullmatch(r"[0-9a-f]{40}", body["checksum"])
    # The same uuid again: the error's status.
    assert_error(host, create(host, server, backup, wait=True), 409)
    # "wait": false is Wings' answer.
    other = new_id()
    res = create(host, server, other, wait=False)
    assert res.status_code == 202 and res.content == b""
    wait_archive(host, other)
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_a_restarted_host_answers_for_its_backups(start: Callable[..., Host], how: str) -> None:
    node = start()
    server = node.server(demo_tree)
    made = []
    for _ in range(2):
        backup = new_id()
        res = create(node, server, backup, wait=True)
        assert res.status_code == 200, res.text
        made.append(res.json())
    if how == "sigterm":
        assert stop_host(node) == 0
    else:
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
    again = start_host(node.kind, node.base, None, [])
    try:
        # The same directories, a new process.
        for m in made:
            st = state_of(again, server, m["uuid"])
            assert st["state"] == "succeeded" and st["size"] == m["size"], st
        listed = again.request("GET", f"/api/servers/{server}/backups")
        assert listed.status_code == 200
        assert {b["uuid"] for b in listed.json()} == {m["uuid"] for m in made}
    finally:
        assert stop_host(again) == 0


def cli(host: Host, *args: str, timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    """The Python package's command line against the host."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "bindings" / "python"))
    env.setdefault("WINGS_BACKUP_LIB", str(LIBRARY))
    return subprocess.run([sys.executable, "-m", "wings_backup", *args, "--url", host.url, "--token", host.token],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_the_command_line_watches_lists_and_shows_a_backup(host: Host) -> None:
    server = host.server(big_tree)
    backup = new_id()
    assert create(host, server, backup).status_code == 202
    run = cli(host, "watch", server, backup)
    assert run.returncode == 0, run.stderr
    final = state_of(host, server, backup)
    assert run.stdout.startswith(f"{backup} create succeeded done") and final["checksum"] in run.stdout, run.stdout
    progress = [line for line in run.stderr.splitlines() if line.startswith(f"{backup} create running")]
    assert len(progress) >= 2, run.stderr
    run = cli(host, "status", server, backup, "--json")
    assert run.returncode == 0 and json.loads(run.stdout) == final, run.stdout
    run = cli(host, "list", server)
    assert run.returncode == 0 and run.stdout.splitlines()[0].startswith(f"{backup} create succeeded"), run.stdout
    run = cli(host, "status", server, new_id())
    assert run.returncode == 4 and "not found" in run.stderr, (run.returncode, run.stderr)
    # A cancelled backup: the exit status of a cancelled call.
    other = new_id()
    assert create(host, server, other).status_code == 202
    wait_until(lambda: any(other in n for n in leftovers(host)), "the backup did not start writing")
    assert cancel(host, server, other).status_code == 202
    run = cli(host, "watch", server, other)
    assert run.returncode == 10 and "cancelled" in run.stdout, (run.returncode, run.stdout, run.stderr)


def test_a_waiting_create_deleted_while_it_runs_answers_503(host: Host) -> None:
    """The DELETE cancels the backup: the create waiting for it answers as a
    cancelled backup (503), never 404 because its record went with it."""
    server = host.server(big_tree)
    backup = new_id()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(create, host, server, backup, wait=True)
        wait_until(lambda: any(backup in n for n in leftovers(host)), "the backup did not start writing")
        res = host.request("DELETE", f"/api/servers/{server}/backup/{backup}")
        assert res.status_code == 204, res.text
        assert_error(host, waiting.result(timeout=60), 503)
    assert not any(backup in n for n in leftovers(host))


# Event streams a host keeps open at once (the Go host's maxEventStreams,
# the Python host's MAX_EVENT_STREAMS); docs/api.md section 5.1.
MAX_EVENT_STREAMS = 32
MSG_TOO_MANY_STREAMS = "Too many event streams are open on this node; try again later."


def open_stream(host: Host, server: str, backup: str) -> Tuple[socket.socket, http.client.HTTPResponse]:
    """An event stream whose status and headers have been read and whose
    events are left unread (the stream stays open until the socket closes)."""
    sock = socket.create_connection(("127.0.0.1", host.port), timeout=10)
    sock.sendall((f"GET /api/servers/{server}/backup/{backup}/events HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{host.port}\r\nAuthorization: Bearer {host.token}\r\n\r\n").encode())
    res = http.client.HTTPResponse(sock, method="GET")
    res.begin()
    return sock, res


def test_event_streams_are_bounded_and_leave_room_for_other_requests(host: Host) -> None:
    server = host.server(big_tree)
    backup = new_id()
    assert create(host, server, backup).status_code == 202
    socks: List[socket.socket] = []
    try:
        for _ in range(MAX_EVENT_STREAMS):
            sock, res = open_stream(host, server, backup)
            socks.append(sock)
            assert res.status == 200, (res.status, res.read(200))
        # One more is refused at once, with a JSON error and Retry-After.
        res = host.request("GET", f"/api/servers/{server}/backup/{backup}/events", timeout=10)
        assert_error(host, res, 503, MSG_TOO_MANY_STREAMS)
        assert res.headers.get("Retry-After") == "5"
        # Every other request still finds a thread, authenticated or not.
        began = time.monotonic()
        assert_error(host, host.request("GET", f"/api/servers/{server}/backups", auth=False, timeout=10), 401)
        res = host.request("GET", f"/api/servers/{server}/backups", timeout=10)
        assert res.status_code == 200, res.text
        assert time.monotonic() - began < 5
        assert state_of(host, server, backup)["state"] in ("queued", "running"), "the backup ended too soon"
    finally:
        for sock in socks:
            sock.close()
    # Streams whose clients went give their places back.
    other = host.server(big_tree)
    second = new_id()
    assert create(host, other, second).status_code == 202
    try:
        deadline = time.monotonic() + 30
        opened = 0
        while opened < MAX_EVENT_STREAMS and time.monotonic() < deadline:
            sock, res = open_stream(host, other, second)
            socks.append(sock)
            if res.status == 200:
                opened += 1
            else:
                assert res.status == 503, res.status
                sock.close()
                time.sleep(0.2)
        assert opened == MAX_EVENT_STREAMS
    finally:
        for sock in socks:
            sock.close()
        cancel(host, server, backup)
        cancel(host, other, second)
    wait_state(host, other, second, FINISHED)


def test_a_restore_the_node_stop_interrupts_says_the_node_is_shutting_down(start: Callable[..., Host]) -> None:
    host = start()
    server = host.server(big_tree)
    backup = new_id()
    assert create(host, server, backup, wait=True).status_code == 200
    answer: Dict[str, Any] = {}

    def restore() -> None:
        answer["res"] = host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                     body=restore_body(truncate=True), timeout=30)

    import threading
    t = threading.Thread(target=restore)
    t.start()
    try:
        wait_until(lambda: state_of(host, server, backup)["phase"] == "extract",
                   "the restore did not start extracting")
        host.proc.send_signal(signal.SIGTERM)
    finally:
        t.join(30)
    assert not t.is_alive()
    assert_error(host, answer["res"], 503, "The node is shutting down.")
    assert host.proc.wait(timeout=30) == 0, host.log()
