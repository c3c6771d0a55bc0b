"""The command line: ``python -m wings_backup create|restore ...``.

    python -m wings_backup create SRC_DIR OUT.tar.gz [--ignore FILE] [--compression-level LEVEL]
    python -m wings_backup restore ARCHIVE DEST_DIR [--truncate]

Progress goes to stderr: a bar redrawn in place on a terminal, plain log
lines otherwise. The result goes to stdout (``sha1``/``size`` lines after
create, a summary after restore; ``--json`` prints the whole result). Exit
status: 0 on success, 1 on failure (with the message on stderr), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence

from .engine import archive_create, archive_extract
from .errors import InvalidArgumentError, Status, WingsBackupError
from .progress import CancelToken, Phase, Progress

LEVELS = ("none", "best_speed", "best_compression")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class ProgressDisplay:
    """A progress callback that draws a bar on a terminal (redrawn with
    ``\\r``) or writes a log line per phase, and every few seconds, otherwise."""

    LOG_EVERY_S = 5.0
    REDRAW_EVERY_S = 0.1

    def __init__(self, stream: IO[str], interactive: Optional[bool] = None) -> None:
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self.started = time.monotonic()
        self.phase: Optional[Phase] = None
        self.phase_started = self.started
        self.last_output = 0.0
        self.line_dirty = False
        self.pending: Optional[Progress] = None

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        new_phase = p.phase != self.phase
        if new_phase:
            self._log_pending(now)
            self.phase, self.phase_started = p.phase, now
        if p.phase in (Phase.STARTED, Phase.DONE):
            return  # nothing to show; the caller prints the result
        self.pending = p
        if self.interactive:
            if new_phase or now - self.last_output >= self.REDRAW_EVERY_S:
                self._draw(p, now)
        elif new_phase or now - self.last_output >= self.LOG_EVERY_S:
            self._log(p, now)

    def _log(self, p: Progress, now: float) -> None:
        self.stream.write(self._describe(p, now) + "\n")
        self.stream.flush()
        self.last_output = now
        self.pending = None

    def _log_pending(self, now: float) -> None:
        # In a log, each phase ends with a line giving where it got to.
        if not self.interactive and self.pending is not None:
            self._log(self.pending, now)

    def _describe(self, p: Progress, now: float) -> str:
        done = human_bytes(p.bytes_done)
        amount = f"{done} / {human_bytes(p.bytes_total)}" if p.bytes_total else done
        if p.fraction is not None:
            amount += f" ({p.fraction:.0%})"
        elapsed = now - self.phase_started
        rate = f", {human_bytes(p.bytes_done / elapsed)}/s" if elapsed > 0.5 else ""
        return f"{p.phase.name.lower()}: {amount}, {p.entries_done} entries{rate}"

    def _draw(self, p: Progress, now: float) -> None:
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        text = self._describe(p, now)
        bar = ""
        if p.fraction is not None and width - len(text) >= 12:
            cells = min(40, width - len(text) - 3)
            filled = int(cells * p.fraction)
            bar = "[" + "#" * filled + "-" * (cells - filled) + "] "
        line = (bar + text)[:width]
        self.stream.write("\r" + line.ljust(width))
        self.stream.flush()
        self.last_output = now
        self.line_dirty = True

    def finish(self) -> None:
        """Clears the bar so that what follows starts on a clean line."""
        self._log_pending(time.monotonic())
        if self.line_dirty:
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()
            self.line_dirty = False


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Create and restore wings-backup archives.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", help="archive a directory into a .tar.gz")
    create.add_argument("src_dir", metavar="SRC_DIR")
    create.add_argument("archive", metavar="OUT.tar.gz")
    create.add_argument("--ignore", metavar="FILE",
                        help="a file of .gitignore-style rules; matching paths are left out")
    create.add_argument("--compression-level", choices=LEVELS, default="best_speed")
    create.add_argument("--write-limit", type=int, default=0, metavar="MIB",
                        help="cap on archive bytes written per second, in MiB (0 = none)")
    create.add_argument("--threads", type=int, default=0, metavar="N", help="worker threads (0 = all cores)")
    create.add_argument("--json", action="store_true", help="print the whole result as JSON")

    restore = sub.add_parser("restore", help="extract a .tar.gz into a directory, safely")
    restore.add_argument("archive", metavar="ARCHIVE")
    restore.add_argument("dest_dir", metavar="DEST_DIR")
    restore.add_argument("--truncate", action="store_true",
                         help="replace DEST_DIR's contents instead of merging into them")
    restore.add_argument("--disk-limit", type=int, default=0, metavar="BYTES",
                         help="fail if the restored files would take more (0 = none)")
    restore.add_argument("--threads", type=int, default=0, metavar="N", help="worker threads (0 = all cores)")
    restore.add_argument("--json", action="store_true", help="print the whole result as JSON")
    return parser


def _create(args: argparse.Namespace, display: ProgressDisplay, out: IO[str], err: IO[str]) -> None:
    options: Dict[str, Any] = {
        "compression_level": args.compression_level,
        "write_limit": args.write_limit,
        "threads": args.threads,
    }
    if args.ignore:
        with open(args.ignore, "rb") as f:
            raw = f.read()
        try:
            options["ignore"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"{args.ignore} is not UTF-8 text") from None
    try:
        summary = _interruptible(archive_create, args.src_dir, args.archive, options, progress=display)
    finally:
        display.finish()
    _warn_list(err, "changed while being read", summary.get("changed", []), summary.get("changed_count"))
    skipped = [f"{s.get('path')} ({s.get('reason')})" for s in summary.get("skipped", [])]
    _warn_list(err, "skipped", skipped, summary.get("skipped_count"))
    if args.json:
        out.write(json.dumps(summary, indent=2) + "\n")
    else:
        out.write(f"sha1 {summary['checksum']}\nsize {summary['size']}\n")


def _restore(args: argparse.Namespace, display: ProgressDisplay, out: IO[str]) -> None:
    options = {"truncate": args.truncate, "disk_limit": args.disk_limit, "threads": args.threads}
    try:
        summary = _interruptible(archive_extract, args.archive, args.dest_dir, options, progress=display)
    finally:
        display.finish()
    if args.json:
        out.write(json.dumps(summary, indent=2) + "\n")
        return
    out.write(
        f"restored {summary.get('entries', 0)} entries: {summary.get('files', 0)} files, "
        f"{summary.get('directories', 0)} directories, {summary.get('symlinks', 0)} symlinks, "
        f"{summary.get('hard_links', 0)} hard links, {human_bytes(summary.get('bytes', 0))}"
        f"; {summary.get('skipped', 0)} skipped\n"
    )


def _interruptible(call: Callable[..., Dict[str, Any]], *args: Any, **kwargs: Any) -> Dict[str, Any]:
    """Runs a library call on a worker thread, so that Ctrl-C is seen at once
    by this (main) thread, which then cancels the call and waits for it to
    clean up before re-raising KeyboardInterrupt."""
    outcome: Dict[str, Any] = {}
    finished = threading.Event()
    with CancelToken() as token:

        def work() -> None:
            try:
                outcome["value"] = call(*args, cancel=token, **kwargs)
            except BaseException as e:  # handed to the main thread
                outcome["error"] = e
            finally:
                finished.set()

        # Waiting is on an Event, not Thread.join(): a KeyboardInterrupt
        # inside join() can leave the thread looking finished while it runs.
        # And not a daemon: the interpreter must not exit while the call runs
        # (a thread calling back into a finalizing interpreter is killed
        # inside the library, which aborts the process).
        try:
            threading.Thread(target=work, name="wings-backup").start()
            while not finished.wait(0.2):
                pass
        except KeyboardInterrupt:
            token.cancel()
            while True:
                try:
                    if finished.wait(0.2):
                        break
                except KeyboardInterrupt:
                    pass  # keep waiting: the call is already stopping
            raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _warn_list(err: IO[str], what: str, items: List[str], count: Optional[int]) -> None:
    total = count if isinstance(count, int) else len(items)
    if not total:
        return
    err.write(f"warning: {total} entr{'y' if total == 1 else 'ies'} {what}\n")
    for item in items[:10]:
        err.write(f"  {item}\n")
    if total > min(len(items), 10):
        err.write(f"  ... and {total - min(len(items), 10)} more\n")


def main(argv: Optional[Sequence[str]] = None, prog: str = "wings-backup") -> int:
    args = _parser(prog).parse_args(argv)
    display = ProgressDisplay(sys.stderr)
    try:
        if args.command == "create":
            _create(args, display, sys.stdout, sys.stderr)
        else:
            _restore(args, display, sys.stdout)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; nothing was left half-written\n")
        return 130
    except (WingsBackupError, OSError) as e:
        message = e.message if isinstance(e, WingsBackupError) else f"{e.strerror or e}: {e.filename}"
        sys.stderr.write(f"{prog}: error: {message}\n")
        return 1
    return 0
