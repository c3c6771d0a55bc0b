"""Cancel tokens, raising callbacks, and handle lifetimes."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import List

import pytest

import wings_backup as wb
from conftest import Node, create_request, new_uuid, read_tree, restore_request, write_tree


def leftovers(node: Node) -> List[str]:
    # Parked reports and the engine's catalog (.wings-backup.db*) are not leftovers.
    return sorted(p.name for p in node.backups.iterdir()
                  if not p.name.startswith((".pending", ".wings-backup.db")))


def test_cancel_from_another_thread_before_work(node: Node, engine: wb.Engine) -> None:
    """The token is triggered by another thread while the call is parked in
    its STARTED callback: the call must fail with CancelledError and leave
    nothing behind. No timing is involved."""
    server = node.server()
    backup = new_uuid()
    token = wb.CancelToken()
    started, triggered = threading.Event(), threading.Event()

    def on_progress(p: wb.Progress) -> None:
        if p.phase == wb.Phase.STARTED:
            started.set()
            assert triggered.wait(30)

    def canceller() -> None:
        assert started.wait(30)
        token.cancel()
        triggered.set()

    t = threading.Thread(target=canceller)
    t.start()
    with pytest.raises(wb.CancelledError) as e:
        engine.create_backup(server, create_request(backup), progress=on_progress, cancel=token)
    t.join(30)
    assert e.value.http_status == 503
    assert token.cancelled
    assert leftovers(node) == []
    # The server was released: the same uuid can now be backed up.
    token.close()
    engine.create_backup(server, create_request(backup))


def test_cancel_from_another_thread_while_archiving(node: Node, engine: wb.Engine) -> None:
    """Triggered while the call is archiving (parked in its first ARCHIVE
    report until the other thread has triggered the token)."""
    server = node.server({f"f{i}": os.urandom(20_000) for i in range(20)})
    token = wb.CancelToken()
    archiving, triggered = threading.Event(), threading.Event()

    def on_progress(p: wb.Progress) -> None:
        if p.phase == wb.Phase.ARCHIVE and not archiving.is_set():
            archiving.set()
            assert triggered.wait(30)

    def canceller() -> None:
        assert archiving.wait(30)
        token.cancel()
        triggered.set()

    t = threading.Thread(target=canceller)
    t.start()
    with pytest.raises(wb.CancelledError):
        engine.create_backup(server, create_request(new_uuid()), progress=on_progress, cancel=token)
    t.join(30)
    assert leftovers(node) == []


def test_cancel_restore_keeps_files(node: Node, engine: wb.Engine) -> None:
    server = node.server({"a.txt": "backed up"})
    backup = new_uuid()
    engine.create_backup(server, create_request(backup))
    (node.root(server) / "a.txt").write_text("current")
    token = wb.CancelToken()
    token.cancel()  # already triggered: the restore stops at its first check
    with pytest.raises(wb.CancelledError):
        engine.restore_backup(server, backup, restore_request(truncate=True), cancel=token)
    assert read_tree(node.root(server)) == {"a.txt": b"current"}


def test_one_token_serves_several_calls(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", {"a": "a"})
    with wb.CancelToken() as token:
        wb.archive_create(tmp_path / "src", tmp_path / "1.tar.gz", cancel=token)
        wb.archive_create(tmp_path / "src", tmp_path / "2.tar.gz", cancel=token)
        token.cancel()
        token.cancel()  # idempotent
        with pytest.raises(wb.CancelledError):
            wb.archive_create(tmp_path / "src", tmp_path / "3.tar.gz", cancel=token)
    token.cancel()  # a no-op once closed
    with pytest.raises(ValueError, match="closed"):
        wb.archive_create(tmp_path / "src", tmp_path / "4.tar.gz", cancel=token)
    with pytest.raises(TypeError):
        wb.archive_create(tmp_path / "src", tmp_path / "5.tar.gz", cancel=object())  # type: ignore[arg-type]


class Boom(Exception):
    pass


def test_raising_callback_stops_the_call_and_is_reraised(node: Node, engine: wb.Engine) -> None:
    server = node.server({f"f{i}": os.urandom(10_000) for i in range(50)})
    backup = new_uuid()
    calls: List[wb.Progress] = []

    def on_progress(p: wb.Progress) -> None:
        calls.append(p)
        if p.phase == wb.Phase.ARCHIVE:
            raise Boom("stop right there")

    with pytest.raises(Boom, match="stop right there") as e:
        engine.create_backup(server, create_request(backup), progress=on_progress)
    assert e.type is Boom  # not CancelledError: the callback's own exception
    assert calls[-1].phase == wb.Phase.ARCHIVE  # no report after the raise
    assert leftovers(node) == []
    engine.create_backup(server, create_request(backup))  # the server is free again


def test_keyboard_interrupt_in_callback_stops_the_call(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", {"a": "a"})

    def on_progress(p: wb.Progress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wb.archive_create(tmp_path / "src", tmp_path / "a.tar.gz", progress=on_progress)
    assert not (tmp_path / "a.tar.gz").exists()


def test_raising_callback_during_restore_keeps_files(node: Node, engine: wb.Engine) -> None:
    server = node.server({"a.txt": "backed up"})
    backup = new_uuid()
    engine.create_backup(server, create_request(backup))
    (node.root(server) / "a.txt").write_text("current")

    def on_progress(p: wb.Progress) -> None:
        if p.phase == wb.Phase.EXTRACT:
            raise Boom()

    with pytest.raises(Boom):
        engine.restore_backup(server, backup, restore_request(truncate=True), progress=on_progress)
    assert read_tree(node.root(server)) == {"a.txt": b"current"}


def test_close_is_idempotent_and_final(node: Node) -> None:
    engine = wb.Engine(node.config())
    engine.close()
    engine.close()
    assert engine.closed
    with pytest.raises(ValueError, match="closed"):
        engine.check_create(node.server(), create_request(new_uuid()))


def test_close_during_a_call_waits_for_it(node: Node) -> None:
    """close() from another thread while a call runs: the native engine is
    freed only when the call returns, and the call completes normally."""
    engine = wb.Engine(node.config())
    server = node.server()
    started, closed = threading.Event(), threading.Event()

    def on_progress(p: wb.Progress) -> None:
        if p.phase == wb.Phase.STARTED:
            started.set()
            assert closed.wait(30)

    def closer() -> None:
        assert started.wait(30)
        engine.close()
        closed.set()

    t = threading.Thread(target=closer)
    t.start()
    details = engine.create_backup(server, create_request(new_uuid()), progress=on_progress)
    t.join(30)
    assert details["successful"] and engine.closed
    with pytest.raises(ValueError):
        engine.delete_backup(server, new_uuid())


def test_engines_are_freed_when_collected(node: Node) -> None:
    import gc
    import weakref

    engine = wb.Engine(node.config())
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is None


def test_cancel_all_ends_running_and_queued_backups(node: Node) -> None:
    """max_running_backups 1: the second backup is accepted (STARTED) and
    waits; cancel_all ends both, leaves no archive, and refuses new work."""
    engine = wb.Engine(node.config(max_running_backups=1))
    first, second = node.server(), node.server()
    started = {first: threading.Event(), second: threading.Event()}
    release = threading.Event()
    errors: dict = {}

    def run(server: str) -> None:
        def on_progress(p: wb.Progress) -> None:
            if p.phase == wb.Phase.STARTED:
                started[server].set()
                if server == first:
                    assert release.wait(30)
        try:
            engine.create_backup(server, create_request(new_uuid()), progress=on_progress)
        except wb.WingsBackupError as e:
            errors[server] = e

    threads = [threading.Thread(target=run, args=(s,)) for s in (first, second)]
    threads[0].start()
    assert started[first].wait(30)
    threads[1].start()
    assert started[second].wait(30)
    engine.cancel_all()
    release.set()
    for t in threads:
        t.join(30)
    assert isinstance(errors.get(first), wb.CancelledError)
    assert isinstance(errors.get(second), wb.CancelledError)
    assert leftovers(node) == []
    with pytest.raises(wb.CancelledError, match="shutting down"):
        engine.check_create(node.server(), create_request(new_uuid()))
    engine.close()
    engine.cancel_all()  # after close: nothing
