"""python -m wings_backup create|restore, as a script would run it."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import wings_backup as wb
from conftest import read_tree, write_tree
from wings_backup.cli import ProgressDisplay, human_bytes

PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT), WINGS_BACKUP_LIB=str(wb.LIBRARY_PATH))
    return subprocess.run([sys.executable, "-m", "wings_backup", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_create_then_restore(tmp_path: Path) -> None:
    files = {"a.txt": "alpha", "logs/latest.log": "noise", "world/level.dat": os.urandom(50_000)}
    write_tree(tmp_path / "src", files)
    (tmp_path / "ignore").write_text("logs/\n")

    # Relative paths, resolved against the working directory.
    r = cli("create", "src", "out.tar.gz", "--ignore", "ignore", "--compression-level", "best_compression",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "out.tar.gz").read_bytes()
    assert r.stdout == f"sha1 {hashlib.sha1(data).hexdigest()}\nsize {len(data)}\n"
    assert "\r" not in r.stderr  # not a terminal: plain lines
    assert "archive:" in r.stderr

    dest = tmp_path / "dest"
    write_tree(dest, {"old.txt": "goes away"})
    r = cli("restore", "out.tar.gz", "dest", "--truncate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("restored ") and "2 files" in r.stdout
    assert read_tree(dest) == {"a.txt": b"alpha", "world/level.dat": files["world/level.dat"]}


def test_json_output(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", {"a": "a"})
    r = cli("create", "src", "o.tar.gz", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["files"] == 1


def test_each_failure_class_has_its_exit_status(tmp_path: Path) -> None:
    r = cli("restore", "missing.tar.gz", ".", cwd=tmp_path)
    assert r.returncode == 4, r.stderr  # not found
    assert "error: the archive does not exist" in r.stderr
    assert "Traceback" not in r.stderr

    (tmp_path / "bad.tar.gz").write_bytes(b"garbage")
    r = cli("restore", "bad.tar.gz", ".", cwd=tmp_path)
    assert r.returncode == 6 and "error:" in r.stderr and "Traceback" not in r.stderr  # corrupt

    write_tree(tmp_path / "src", {"a": "a"})
    r = cli("create", "src", "o.tar.gz", "--ignore", "no-such-file", cwd=tmp_path)
    assert r.returncode == 4 and "no-such-file" in r.stderr and "Traceback" not in r.stderr

    r = cli("create", "missing-src", "o.tar.gz", cwd=tmp_path)
    assert r.returncode == 4 and "error:" in r.stderr

    r = cli("create", "src", "o.tar.gz", "--compression-level", "fast", cwd=tmp_path)
    assert r.returncode == 2  # argparse: a usage error

    r = cli("create", "src", "o.tar.gz", "--threads", "100000", cwd=tmp_path)
    assert r.returncode == 2 and "error:" in r.stderr  # the library's WB_INVALID_ARGUMENT

    # An archive that climbs out of the destination: unsafe, nothing written.
    import tarfile

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as t:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "dest").mkdir()
    r = cli("restore", "evil.tar.gz", "dest", cwd=tmp_path)
    assert r.returncode == 7, r.stderr
    assert not (tmp_path / "escaped.txt").exists()

    # A disk limit the archive's files exceed.
    write_tree(tmp_path / "big", {"f.bin": os.urandom(100_000)})
    assert cli("create", "big", "big.tar.gz", cwd=tmp_path).returncode == 0
    r = cli("restore", "big.tar.gz", "dest", "--disk-limit", "1000", cwd=tmp_path)
    assert r.returncode == 8, r.stderr


def test_help_lists_the_exit_statuses(tmp_path: Path) -> None:
    r = cli("--help", cwd=tmp_path)
    assert r.returncode == 0
    for line in ("0    success", "3    partial", "4    not found", "130  interrupted"):
        assert line in r.stdout, r.stdout
    assert "3    partial" in cli("create", "--help", cwd=tmp_path).stdout


def test_a_backup_that_skips_entries_exits_3_and_lists_them(tmp_path: Path) -> None:
    import socket

    write_tree(tmp_path / "src", {"a.txt": "a"})
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "src" / "console.sock"))
        r = cli("create", "src", "out.tar.gz", cwd=tmp_path)
    finally:
        sock.close()
    assert r.returncode == 3, r.stderr
    assert "warning: 1 entry skipped" in r.stderr
    assert "console.sock (a socket (not archived))" in r.stderr
    data = (tmp_path / "out.tar.gz").read_bytes()
    assert r.stdout == f"sha1 {hashlib.sha1(data).hexdigest()}\nsize {len(data)}\n"
    # The same tree without the socket is a whole backup.
    (tmp_path / "src" / "console.sock").unlink()
    assert cli("create", "src", "out.tar.gz", cwd=tmp_path).returncode == 0


def test_an_archive_written_inside_its_source_is_left_out(tmp_path: Path) -> None:
    import tarfile

    src = tmp_path / "src"
    write_tree(src, {"a.txt": "alpha", "world/level.dat": "beta"})
    r = cli("create", ".", "./here.tar.gz", cwd=src)
    assert r.returncode == 0, r.stderr
    r = cli("create", ".", "./here.tar.gz", cwd=src)  # and again, over the first one
    assert r.returncode == 0, r.stderr
    with tarfile.open(src / "here.tar.gz") as t:
        assert sorted(t.getnames()) == ["a.txt", "world", "world/level.dat"]
    dest = tmp_path / "dest"
    dest.mkdir()
    assert cli("restore", src / "here.tar.gz", dest, cwd=tmp_path).returncode == 0
    assert read_tree(dest) == {"a.txt": b"alpha", "world/level.dat": b"beta"}


def test_progress_ends_where_the_backup_ended_with_a_summary_line(tmp_path: Path) -> None:
    """With a write limit the archive is written after all was read: the
    lines say how much is written, the last progress line is complete, and
    a summary line follows."""
    write_tree(tmp_path / "src", {"a.bin": os.urandom(3 << 20), "b.txt": "hi"})
    r = cli("create", "src", "out.tar.gz", "--write-limit", "2", "--compression-level", "none",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    archive_lines = [line for line in lines if line.startswith("archive:")]
    size = (tmp_path / "out.tar.gz").stat().st_size
    total = human_bytes((3 << 20) + 2)
    assert archive_lines[-1].startswith(f"archive: {total} / {total} (100%) read, {human_bytes(size)} written"), \
        archive_lines
    assert not any("(0%)" in line for line in archive_lines[1:]), archive_lines
    assert lines[-1].startswith("done in "), lines
    assert "2 files" in lines[-1] and "% of the source" in lines[-1] and "/s" in lines[-1]

    dest = tmp_path / "dest"
    dest.mkdir()
    r = cli("restore", "out.tar.gz", "dest", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[-1].startswith("done in "), r.stderr


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def reports() -> List[wb.Progress]:
    return [
        wb.Progress(wb.Phase.STARTED, 0, 0, 0),
        wb.Progress(wb.Phase.ARCHIVE, 0, 1000, 0),
        wb.Progress(wb.Phase.ARCHIVE, 500, 1000, 3),
        wb.Progress(wb.Phase.ARCHIVE, 1000, 1000, 6),
        wb.Progress(wb.Phase.DONE, 1000, 1000, 6),
    ]


def test_progress_bar_on_a_terminal() -> None:
    term = FakeTerminal()
    display = ProgressDisplay(term)
    display.REDRAW_EVERY_S = 0.0
    for p in reports():
        display(p)
    display.finish()
    out = term.getvalue()
    assert out.startswith("\r") and "\n" not in out
    assert "[" in out and "50%" in out and "100%" in out
    assert out.endswith("\r")  # the bar is cleared at the end


def test_log_lines_when_not_a_terminal() -> None:
    log = io.StringIO()
    display = ProgressDisplay(log)
    for p in reports():
        display(p)
    display.finish()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("archive: 0 B / 1000 B (0%) read, 0 B written")
    assert lines[-1].startswith("archive: 1000 B / 1000 B (100%) read, 0 B written, 6 entries")


def test_lines_give_archive_bytes_and_an_eta() -> None:
    log = io.StringIO()
    display = ProgressDisplay(log)
    display.phase, display.phase_started = wb.Phase.ARCHIVE, display.started - 10.0
    display._log(wb.Progress(wb.Phase.ARCHIVE, 1 << 20, 4 << 20, 5, 300 << 10), display.started)
    line = log.getvalue()
    assert "1.0 MiB / 4.0 MiB (25%) read, 300.0 KiB written, 5 entries" in line, line
    assert "ETA 30.0 s" in line, line


def test_ctrl_c_cancels_the_call_and_waits_for_it() -> None:
    """_interruptible: KeyboardInterrupt in the main thread triggers the
    call's token, waits for the call to stop, then propagates."""
    import _thread
    import threading
    import time

    from wings_backup import cli as cli_module

    started = threading.Event()
    seen: List[wb.CancelToken] = []

    def slow_call(*, cancel: wb.CancelToken, progress: object) -> dict:
        seen.append(cancel)
        started.set()
        for _ in range(3000):  # at most 30 s
            if cancel.cancelled:
                raise wb.CancelledError(wb.Status.CANCELLED, "cancelled")
            time.sleep(0.01)
        return {}

    def interrupt() -> None:
        assert started.wait(30)
        _thread.interrupt_main()

    threading.Thread(target=interrupt).start()
    try:
        cli_module._interruptible(slow_call, progress=None)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("KeyboardInterrupt was not raised")
    assert seen and seen[0].cancelled


def test_sigint_exits_130_and_leaves_nothing(tmp_path: Path) -> None:
    import signal

    write_tree(tmp_path / "src", {"big.bin": os.urandom(16 << 20)})  # 8 s at 2 MiB/s
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT), WINGS_BACKUP_LIB=str(wb.LIBRARY_PATH))
    proc = subprocess.Popen([sys.executable, "-m", "wings_backup", "create", "src", "out.tar.gz",
                             "--write-limit", "2", "--compression-level", "none"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the first progress line: the work has begun
        assert first.startswith("archive:"), first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
