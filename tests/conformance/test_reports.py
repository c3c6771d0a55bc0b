"""Panel reports through each host while the Panel is down (issue 15 item 6).

A synchronous restore answers once the files are in place, not after the
engine has given up on the Panel; the engine's reporter tells the Panel in
the background, and the report reaches a Panel that comes back. Every retry
of a Panel call, for backups too, is in the host's log at WARN as it
happens, with its attempt number and the Panel's URL without credentials.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from conftest import Host, PanelStub, free_port, start_host, stop_host
from helpers import backup_now, demo_tree, restore_body, snapshot, unless_busy, wait_until

# The stub's credentials (tests/support/panel_stub.py).
STUB_TOKEN_ID = "stub-token-id"
STUB_TOKEN = "stub-token-secret"


def retry_lines(host: Host, path: str) -> List[str]:
    """The host's log lines of retried Panel calls to `path`, at WARN."""
    text = host.log_path.read_text(errors="replace")
    found = []
    for line in text.splitlines():
        if f"{path} attempt " not in line or "retrying" not in line:
            continue
        if host.kind == "go":
            assert "level=WARN" in line, line
        else:
            assert " WARNING wings_backup: " in line, line
        found.append(line)
    return found


def attempts(lines: List[str]) -> List[int]:
    return [int(m.group(1)) for m in (re.search(r" attempt (\d+) failed", line) for line in lines) if m]


@pytest.fixture
def late_panel_port() -> Iterator[int]:
    """A port nothing listens on, where a Panel stub is started later."""
    yield free_port()


def test_restore_answers_at_once_and_reports_to_a_panel_that_comes_back(
        host_kind: str, tmp_path: Path, late_panel_port: int) -> None:
    port = late_panel_port
    panel_url = f"http://127.0.0.1:{port}"
    host = start_host(host_kind, tmp_path / "node", None,
                      ["--panel-url", panel_url, "--panel-token-id", STUB_TOKEN_ID, "--panel-token", STUB_TOKEN])
    stub = None
    try:
        server = host.server(demo_tree)
        expected = snapshot(host.root(server))
        backup = backup_now(host, server)
        backup_path = f"/api/remote/backups/{backup}"
        restore_path = f"{backup_path}/restore"
        # The backup's report is being retried: logged as it happens.
        wait_until(lambda: bool(retry_lines(host, backup_path)), "a logged retry of the backup report", 10)
        (host.root(server) / "config.yml").write_text("changed")

        began = time.monotonic()
        res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup/{backup}/restore",
                                               body=restore_body(True)))
        took = time.monotonic() - began
        assert res.status_code == 204, res.text
        assert took < 1.0, f"{host.kind} host: the restore answered after {took:.2f}s with the Panel down"
        assert snapshot(host.root(server)) == expected

        wait_until(lambda: bool(retry_lines(host, restore_path)), "a logged retry of the restore report", 10)
        first = retry_lines(host, restore_path)[0]
        assert f"POST {panel_url}{restore_path} attempt 1 failed" in first, first

        # The Panel comes back within the restore report's 30 s.
        stub = PanelStub(tmp_path / "panel-stub.log", port=port)
        reports = stub.restore_reports(backup, timeout=40)
        assert len(reports) == 1, f"{host.kind} host: {reports}\n{host.log()}"
        assert reports[0].body == {"successful": True}
        assert reports[0].problem is None
        time.sleep(1.0)
        assert len(stub.restore_reports(backup, timeout=0)) == 1, "exactly one restore report"

        log = host.log_path.read_text(errors="replace")
        assert STUB_TOKEN not in log
        numbers = attempts(retry_lines(host, restore_path))
        assert numbers == list(range(1, len(numbers) + 1)), numbers
        assert attempts(retry_lines(host, backup_path))[:1] == [1]
    finally:
        code = stop_host(host)
        if stub is not None:
            stub.stop()
    assert code == 0, host.log()
    # Delivered, so nothing of the restore was parked at shutdown.
    assert not (host.backups / ".pending" / f"{backup}.restore.json").exists()
