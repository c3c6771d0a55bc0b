"""The engine's log through the logging module (logger ``wings_backup``), and
restores that answer before the Panel has been told."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Callable, List, Tuple

import pytest

import wings_backup as wb
from conftest import Node, new_uuid


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def backed_up(node: Node) -> Tuple[str, str]:
    server = node.server({"a.txt": "hello", "w/level.dat": b"\x01" * 1000})
    backup = new_uuid()
    with wb.Engine(node.config()) as engine:
        engine.create_backup(server, {"adapter": "wings", "uuid": backup, "ignore": ""})
    return server, backup


def test_retries_of_a_restore_report_are_warnings_of_the_wings_backup_logger(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    server, backup = backed_up(node)
    port = closed_port()
    panel = {"url": f"http://id:pw@127.0.0.1:{port}", "token_id": "id", "token": "secret",
             "report_retry_s": 600}
    caplog.set_level(logging.INFO, logger="wings_backup")
    engine = wb.Engine(node.config(panel=panel))  # the default logger
    try:
        began = time.monotonic()
        engine.restore_backup(server, backup, {"adapter": "wings", "truncate_directory": True})
        took = time.monotonic() - began
        assert took < 1.0, f"the restore waited {took:.2f}s for a Panel that is down"

        def retries() -> List[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "wings_backup" and "attempt 1 failed" in r.getMessage()]
        assert wait_for(lambda: bool(retries())), caplog.text
        record = retries()[0]
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert f"POST http://REDACTED@127.0.0.1:{port}/api/remote/backups/{backup}/restore" in message
        assert "id:pw" not in message
    finally:
        engine.close()
    # Closing parks the report that was still being retried.
    parked = json.loads((node.backups / ".pending" / f"{backup}.restore.json").read_text())
    assert parked == {"backup": backup, "body": {"successful": True}}
    assert any("parked as .pending" in r.getMessage() for r in caplog.records), caplog.text


def test_set_logger_redirects_and_none_silences(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    server, backup = backed_up(node)
    panel = {"url": f"http://127.0.0.1:{closed_port()}", "token_id": "id", "token": "secret",
             "report_retry_s": 600}
    mine = logging.getLogger("test-node")
    caplog.set_level(logging.INFO)
    with wb.Engine(node.config(panel=panel), logger=mine) as engine:
        engine.restore_backup(server, backup, {"adapter": "wings", "truncate_directory": True})
        assert wait_for(lambda: any(r.name == "test-node" and r.levelno == logging.WARNING
                                    for r in caplog.records)), caplog.text
        engine.set_logger(None)
        count = len(caplog.records)
        time.sleep(1.2)  # the next retries (0.5 s, then 1 s apart) are not logged
        assert len(caplog.records) == count
    assert not any(r.name == "wings_backup" for r in caplog.records)
