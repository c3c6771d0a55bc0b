"""A started backup's life through the binding: status while it runs,
progress through wait_backup, cancel, list and delete-all, a started
restore's outcome."""

from __future__ import annotations

import os
import time

import pytest

import wings_backup as wb

from conftest import Node, create_request, new_uuid, read_tree, restore_request


def _until_finished(engine: wb.Engine, server: str, backup: str) -> wb.BackupState:
    state = engine.wait_backup(server, backup, 0, timeout=0)
    deadline = time.monotonic() + 30
    while not state.finished:
        assert time.monotonic() < deadline, state
        state = engine.wait_backup(server, backup, state.seq, timeout=5)
    return state


def test_started_backup_status_progress_and_cancel(node: Node) -> None:
    server = node.server({"noise.bin": os.urandom(4 << 20)})
    backup = new_uuid()
    with wb.Engine(node.config(write_limit=1, compression_level="none")) as engine:
        engine.start_backup(server, create_request(backup))
        state = engine.backup_status(server, backup)
        assert (state.kind, state.server, state.finished) == ("create", server, False)
        seen = []
        deadline = time.monotonic() + 20
        while len(seen) < 2:
            assert time.monotonic() < deadline
            state = engine.wait_backup(server, backup, state.seq, timeout=5)
            assert not state.finished, state
            if state.phase == "archive":
                seen.append(state.bytes_done)
        assert seen[0] <= seen[1] and state.bytes_total >= 4 << 20
        began = time.monotonic()
        engine.cancel_backup(server, backup)
        state = _until_finished(engine, server, backup)
        assert time.monotonic() - began < 2
        assert state.state == "cancelled" and state.finished_at
        assert isinstance(engine.state_error(state), wb.CancelledError)
        assert engine.wait_idle(5)
        assert [n for n in os.listdir(node.backups) if not n.startswith(".wings-backup.db")] == []
        with pytest.raises(wb.ConflictError):
            engine.cancel_backup(server, backup)
        with pytest.raises(wb.NotFoundError):
            engine.cancel_backup(server, new_uuid())


def test_list_delete_all_and_a_started_restore(node: Node, engine: wb.Engine) -> None:
    s1, s2 = node.server(), node.server()
    b1, b2, b3 = new_uuid(), new_uuid(), new_uuid()
    for server, backup in ((s1, b1), (s1, b2), (s2, b3)):
        engine.start_backup(server, create_request(backup))
        state = _until_finished(engine, server, backup)
        assert state.state == "succeeded" and len(state.checksum) == 40, state
        time.sleep(0.01)
    assert [s.uuid for s in engine.list_backups(s1)] == [b2, b1]
    before = read_tree(node.root(s1))
    (node.root(s1) / "server.properties").write_text("changed")
    engine.start_restore(s1, b1, restore_request(truncate=True))
    state = _until_finished(engine, s1, b1)
    assert (state.kind, state.state, engine.state_error(state)) == ("restore", "succeeded", None)
    assert read_tree(node.root(s1)) == before
    with pytest.raises(wb.NotFoundError):
        engine.start_restore(s1, new_uuid(), restore_request())
    assert engine.delete_all_backups(s1) == 2
    assert not node.archive(b1).exists() and not node.archive(b2).exists()
    assert node.archive(b3).exists()
    assert [s.uuid for s in engine.list_backups(s2)] == [b3]
    with pytest.raises(wb.NotFoundError):
        engine.backup_status(s1, b1)
