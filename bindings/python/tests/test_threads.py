"""The GIL is released during calls, and the engine runs different servers
in parallel: N threads are all inside create_backup at the same moment."""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import os
import threading
import time
from pathlib import Path
from typing import Dict, List

import wings_backup as wb
from conftest import Node, create_request, new_uuid, write_tree

N = 4


def test_backups_of_different_servers_run_at_once(node: Node, engine: wb.Engine) -> None:
    servers = [node.server({"data.bin": bytes([i]) * 200_000}) for i in range(N)]
    # Every call waits in its STARTED callback until all N calls have reached
    # it. If calls were serialized (the GIL held across the C call, or the
    # engine running one operation at a time), the barrier would break.
    barrier = threading.Barrier(N, timeout=60)
    results: Dict[str, dict] = {}
    errors: List[BaseException] = []

    def on_progress(p: wb.Progress) -> None:
        if p.phase == wb.Phase.STARTED:
            barrier.wait()

    def run(server: str) -> None:
        try:
            results[server] = engine.create_backup(server, create_request(new_uuid()), progress=on_progress)
        except BaseException as e:  # noqa: B036 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(results) == sorted(servers)
    assert len({r["checksum"] for r in results.values()}) == N


def test_library_calls_release_the_gil(tmp_path: Path) -> None:
    """archive_extract reads a FIFO: the C call blocks in open() until a
    writer appears, with no callback running. Only if the GIL is released
    can this (main) thread run Python meanwhile and be that writer. Were it
    held, the test would hang: the watchdog then fails it."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, {"a.txt": "through a pipe", "b.bin": os.urandom(300_000)})
    dst.mkdir()
    wb.archive_create(src, tmp_path / "a.tar.gz")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: List[object] = []

    def extract() -> None:
        try:
            outcome.append(wb.archive_extract(fifo, dst))
        except BaseException as e:  # noqa: B036 - checked by the main thread
            outcome.append(e)

    faulthandler.dump_traceback_later(120, exit=True)
    try:
        t = threading.Thread(target=extract)
        t.start()
        fd = -1
        for _ in range(3000):  # until the reader has opened the FIFO (ENXIO before)
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                time.sleep(0.01)
        assert fd >= 0, "archive_extract never opened the FIFO"
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as w:
            w.write((tmp_path / "a.tar.gz").read_bytes())
        t.join(60)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert not t.is_alive()
    assert isinstance(outcome[0], wb.ExtractSummary), outcome
    assert (dst / "a.txt").read_text() == "through a pipe"


def test_the_library_is_loaded_as_cdll() -> None:
    # ctypes.CDLL functions release the GIL for the call; PyDLL ones do not.
    from wings_backup import _native

    assert type(_native.LIB) is ctypes.CDLL


EXIT_SCRIPT = """
import atexit, sys, threading
import wings_backup as wb
parked, release = threading.Event(), threading.Event()
def on_progress(p):
    if p.phase == wb.Phase.ARCHIVE and not parked.is_set():
        parked.set()
        release.wait(30)
def run():
    try:
        wb.archive_create(sys.argv[1], sys.argv[2], {"compression_level": "best_compression", "threads": 1},
                          progress=on_progress)
        print("finished", flush=True)
    except wb.CancelledError:
        print("stopped at exit", flush=True)
threading.Thread(target=run, daemon=True).start()
assert parked.wait(30)
atexit.register(release.set)  # runs first (LIFO): the call goes on while the interpreter exits
"""


def test_interpreter_exit_with_a_call_in_a_daemon_thread(tmp_path: Path) -> None:
    """The main thread returns while a daemon thread is inside a call. The
    binding stops the call and waits for it at exit; without that, the call's
    next progress report would meet a finalizing interpreter, which kills the
    thread inside the library and aborts the process (SIGABRT)."""
    import subprocess
    import sys

    write_tree(tmp_path / "src", {f"f{i}": os.urandom(100_000) for i in range(300)})
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent),
               WINGS_BACKUP_LIB=str(wb.LIBRARY_PATH))
    r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, "src", "out.tar.gz"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # The thread may be stopped by the exiting interpreter before it prints.
    assert r.stdout.strip() in ("stopped at exit", "finished", "")
    assert sorted(p.name for p in tmp_path.iterdir()) in (["src"], ["out.tar.gz", "src"])
