"""Node policy, through both hosts: how many backups run at once
(--max-running-backups, system.backups.max_running_backups in a Wings
config.yml, default 4), a backup with no free slot accepted (202) and queued
inside the engine, 409 for a queued uuid and for a server with a queued
backup, and DELETE of a queued or running backup (204, no file left).

A backup is slow here because every host of the suite runs with
--write-limit 1 (MiB/s) and the servers hold megabytes of random data. A
backup that runs has a temporary archive (.<uuid>.part...) in the backup
directory from its first moments; a queued one has none."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
import requests

from conftest import REPO, Host, host_command, start_host, stop_host
from helpers import assert_error, create_body, demo_tree, leftovers, new_id, temporary_files, wait_archive, wait_until

MSG_UUID_RUNNING = "A backup with this uuid is already running."
MSG_SERVER_BUSY = "Another backup is already running for this server."


def slow_tree(root: Path) -> None:
    """About two seconds of backup at 1 MiB/s."""
    demo_tree(root)
    (root / "big.bin").write_bytes(os.urandom(2 << 20))


def files_of(host: Host, backup: str) -> List[str]:
    return [n for n in leftovers(host) if backup in n]


def running(host: Host, backup: str) -> bool:
    """The backup has started writing (a temporary archive) or has finished."""
    return bool(files_of(host, backup))


def post(host: Host, server: str, backup: str) -> requests.Response:
    return host.request("POST", f"/api/servers/{server}/backup", body=create_body(backup))


@pytest.fixture
def start(host_kind: str, tmp_path: Path) -> Iterator[Callable[..., Host]]:
    """Starts the host with extra flags; stops it after the test (exit 0)."""
    hosts: List[Host] = []

    def go(*extra: str) -> Host:
        hosts.append(start_host(host_kind, tmp_path / "node", None, list(extra)))
        return hosts[-1]

    yield go
    for h in hosts:
        code = stop_host(h)
        assert code == 0, f"{h.kind} host did not exit 0 on SIGTERM (got {code}):\n{h.log()}"


def test_the_fifth_backup_waits_for_a_slot(start: Callable[..., Host]) -> None:
    """Default limit 4: five backups on five servers are all accepted; the
    fifth is queued (it starts writing only once one of the others is done,
    so it finishes after it); its uuid and its server are 409 meanwhile."""
    node = start()
    servers = [node.server(slow_tree) for _ in range(5)]
    backups = [new_id() for _ in range(5)]
    for server, backup in zip(servers, backups):
        res = post(node, server, backup)
        assert res.status_code == 202 and res.content == b"", res.text
    first_four, fifth = backups[:4], backups[4]
    wait_until(lambda: all(running(node, b) for b in first_four), "the first four backups did not start")
    assert not any(node.archive(b).exists() for b in first_four), "a backup finished too soon for this test"
    assert not running(node, fifth), f"the fifth backup runs beside four: {leftovers(node)}"

    res = post(node, node.server(demo_tree), fifth)
    assert_error(node, res, 409, MSG_UUID_RUNNING)
    res = post(node, servers[4], new_id())
    assert_error(node, res, 409, MSG_SERVER_BUSY)

    for backup in backups:
        wait_archive(node, backup, timeout=60)
    fifth_done = node.archive(fifth).stat().st_mtime_ns
    assert min(node.archive(b).stat().st_mtime_ns for b in first_four) <= fifth_done
    assert temporary_files(node) == []


def test_delete_of_a_queued_and_of_a_running_backup(start: Callable[..., Host]) -> None:
    """Limit 1 from the flag: the second backup is queued. DELETE of the
    queued one and of the running one: 204, and no file of either is left;
    the servers take backups again."""
    node = start("--max-running-backups", "1")
    s1, s2 = node.server(slow_tree), node.server(slow_tree)
    first, queued = new_id(), new_id()
    assert post(node, s1, first).status_code == 202
    wait_until(lambda: running(node, first), "the first backup did not start")
    res = post(node, s2, queued)
    assert res.status_code == 202, res.text
    assert_error(node, post(node, node.server(demo_tree), queued), 409, MSG_UUID_RUNNING)
    assert_error(node, post(node, s2, new_id()), 409, MSG_SERVER_BUSY)
    time.sleep(0.3)
    assert not running(node, queued), "a second backup runs with --max-running-backups 1"

    res = node.request("DELETE", f"/api/servers/{s2}/backup/{queued}")
    assert res.status_code == 204, res.text
    assert files_of(node, queued) == []
    res = node.request("DELETE", f"/api/servers/{s1}/backup/{first}")
    assert res.status_code == 204, res.text
    wait_until(lambda: files_of(node, first) == [], "the cancelled running backup left files")
    assert leftovers(node) == []
    # Deleted, they are gone for good.
    for server, backup in ((s1, first), (s2, queued)):
        assert_error(node, node.request("DELETE", f"/api/servers/{server}/backup/{backup}"), 404)

    # Both servers are free again, and the slot too.
    again = new_id()
    assert post(node, s2, again).status_code == 202
    wait_archive(node, again, timeout=60)


CONFIG = """\
system:
  backups:
    max_running_backups: 1
"""


def test_the_limit_from_a_wings_config(start: Callable[..., Host], tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(CONFIG)
    node = start("--config", str(tmp_path / "config.yml"))
    log = node.log_path.read_text(errors="replace")
    assert "key=system.backups.max_running_backups" not in log, log
    settings = next(ln for ln in log.splitlines() if re.search(r"\bsettings listen=|msg=settings ", ln))
    fields = dict(re.findall(r"(\w+)=(\S+)", settings.split("settings", 1)[1]))
    assert fields["max_running_backups"] == "1", settings
    assert "max-running-backups" in fields["from_config"].split(","), settings

    s1, s2 = node.server(slow_tree), node.server(slow_tree)
    first, second = new_id(), new_id()
    assert post(node, s1, first).status_code == 202
    wait_until(lambda: running(node, first), "the first backup did not start")
    assert post(node, s2, second).status_code == 202
    time.sleep(0.3)
    assert not node.archive(first).exists(), "the first backup finished too soon for this test"
    assert not running(node, second), "a second backup runs with max_running_backups: 1"
    wait_archive(node, second, timeout=60)
    assert node.archive(first).stat().st_mtime_ns <= node.archive(second).stat().st_mtime_ns


@pytest.mark.parametrize("value", ["0", "1025"])
def test_an_impossible_limit_is_refused(host_kind: str, tmp_path: Path, value: str) -> None:
    res = subprocess.run(host_command(host_kind) + ["--token", "t", "--data-dir", str(tmp_path / "v"),
                                                    "--backup-dir", str(tmp_path / "b"),
                                                    "--max-running-backups", value],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--max-running-backups" in res.stderr
