"""The command line: ``python -m wings_backup create|restore|ls|verify|status|list|watch ...``.

    python -m wings_backup create SRC_DIR OUT.tar.gz [--ignore FILE] [--compression-level LEVEL] [--dry-run]
    python -m wings_backup restore ARCHIVE DEST_DIR [--truncate] [--path P ...]
    python -m wings_backup ls ARCHIVE [DIR]
    python -m wings_backup verify ARCHIVE
    python -m wings_backup status|watch SERVER BACKUP --url URL --token TOKEN
    python -m wings_backup list SERVER --url URL --token TOKEN

Progress goes to stderr: a bar redrawn in place on a terminal, plain log
lines otherwise, then a summary line (time, throughput, compression ratio,
files). The result goes to stdout (``sha1``/``size`` lines after create, a
summary after restore; ``--json`` prints the whole result). The exit status
says what happened (``EXIT_CODES``, also in ``--help``).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, TypeVar

from .engine import archive_create, archive_dry_run, archive_extract, archive_list, archive_verify
from .node import NodeError
from .errors import InvalidArgumentError, Status, WingsBackupError
from .progress import CancelToken, Phase, Progress

LEVELS = ("none", "best_speed", "best_compression")

#: Exit status of the command, one per outcome.
EXIT_OK = 0
#: A bug: the library's WB_INTERNAL, or anything unexpected.
EXIT_INTERNAL = 1
#: A usage error (argparse's own code), the library's WB_INVALID_ARGUMENT, or
#: a --url, --token, SERVER or BACKUP that status, list and watch refuse.
EXIT_USAGE = 2
#: The work finished but left entries out: a backup that skipped entries
#: (unreadable files, sockets, device nodes), a restore that skipped entries
#: (FIFOs, devices). Files that changed while read are archived (and listed
#: as a warning), so they alone do not make a backup partial.
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130

#: WB_* status -> exit status.
STATUS_EXIT: Dict[int, int] = {
    Status.INVALID_ARGUMENT: EXIT_USAGE,
    Status.NOT_FOUND: 4,
    Status.CONFLICT: 5,
    Status.CORRUPT_ARCHIVE: 6,
    Status.UNSAFE_ENTRY: 7,
    Status.QUOTA: 8,
    Status.REMOTE: 9,
    Status.CANCELLED: 10,
    Status.IO: 11,
    Status.INTERNAL: EXIT_INTERNAL,
}

#: The table shown by ``--help``.
EXIT_CODES = """exit status:
  0    success
  1    internal error (a bug)
  2    usage error, invalid argument or option (WB_INVALID_ARGUMENT)
  3    partial: finished, but entries were skipped (listed on stderr); with
       --dry-run: a backup would skip entries
  4    not found: the source, destination, archive or --ignore file (WB_NOT_FOUND)
  5    conflict (WB_CONFLICT)
  6    corrupt or truncated archive (WB_CORRUPT_ARCHIVE); verify found damage
  7    unsafe archive entry, nothing extracted (WB_UNSAFE_ENTRY)
  8    disk limit exceeded or disk full (WB_QUOTA)
  9    remote failure (WB_REMOTE); status, list, watch: the node cannot be
       reached, or its answer broke off or is not the API's
  10   cancelled (WB_CANCELLED)
  11   other I/O error (WB_IO)
  130  interrupted (Ctrl-C); nothing was left half-written"""


def exit_code_for(error: BaseException) -> int:
    """The exit status of a failure."""
    if isinstance(error, WingsBackupError):
        return STATUS_EXIT.get(int(error.status), EXIT_INTERNAL)
    if isinstance(error, OSError):
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return STATUS_EXIT[Status.NOT_FOUND]
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return STATUS_EXIT[Status.QUOTA]
        return STATUS_EXIT[Status.IO]
    return EXIT_INTERNAL


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressDisplay:
    """A progress callback that draws a bar on a terminal (redrawn with
    ``\\r``) or writes a log line per phase, and every few seconds, otherwise.

    A line gives the phase's bytes done and total (source bytes read for a
    backup, archive bytes read for a restore), the archive bytes written by
    a backup, the entries, the rate and an ETA."""

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
        parts = [f"{p.phase.name.lower()}: {amount}"]
        if p.phase == Phase.ARCHIVE:
            parts[0] += " read"
            parts.append(f"{human_bytes(p.archive_bytes)} written")
        parts.append(f"{p.entries_done} entries")
        elapsed = now - self.phase_started
        if elapsed > 0.5 and p.bytes_done:
            rate = p.bytes_done / elapsed
            parts.append(f"{human_bytes(rate)}/s")
            if p.bytes_total and p.bytes_done < p.bytes_total:
                parts.append(f"ETA {human_duration((p.bytes_total - p.bytes_done) / rate)}")
            elif p.phase == Phase.ARCHIVE and p.bytes_total:
                # All read; what is left is compressing and writing the
                # last blocks (slow under --write-limit).
                parts.append("writing the last blocks")
        return ", ".join(parts)

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

    def summary(self, text: str) -> None:
        """The last line: what was done, in how long."""
        self.stream.write(f"done in {human_duration(time.monotonic() - self.started)}: {text}\n")
        self.stream.flush()


def _parser(prog: str) -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description="Create and restore wings-backup archives.",
                                     epilog=EXIT_CODES, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", help="archive a directory into a .tar.gz", epilog=EXIT_CODES,
                            formatter_class=fmt,
                            description="Archive SRC_DIR into OUT.tar.gz. When OUT.tar.gz lies inside "
                                        "SRC_DIR, neither it nor its temporary file is archived.")
    create.add_argument("src_dir", metavar="SRC_DIR")
    create.add_argument("archive", metavar="OUT.tar.gz")
    create.add_argument("--ignore", metavar="FILE",
                        help="a file of .gitignore-style rules; matching paths are left out")
    create.add_argument("--compression-level", choices=LEVELS, default="best_speed")
    create.add_argument("--write-limit", type=int, default=0, metavar="MIB",
                        help="cap on archive bytes written per second, in MiB (0 = none)")
    create.add_argument("--threads", type=int, default=0, metavar="N", help="worker threads (0 = all cores)")
    create.add_argument("--json", action="store_true", help="print the whole result as JSON")
    create.add_argument("--dry-run", action="store_true",
                        help="write nothing: print what the archive would hold (files, bytes, "
                             "ignored paths, estimated size), reading no file data")

    restore = sub.add_parser("restore", help="extract a .tar.gz into a directory, safely",
                             epilog=EXIT_CODES, formatter_class=fmt)
    restore.add_argument("archive", metavar="ARCHIVE")
    restore.add_argument("dest_dir", metavar="DEST_DIR")
    restore.add_argument("--truncate", action="store_true",
                         help="replace DEST_DIR's contents instead of merging into them "
                              "(with --path: each named path, whole, and nothing else)")
    restore.add_argument("--path", action="append", dest="paths", metavar="P",
                         help="restore only this entry of the archive (a directory with everything "
                              "under it); repeatable. With the archive's index beside it, only that "
                              "part of the archive is read")
    restore.add_argument("--disk-limit", type=int, default=0, metavar="BYTES",
                         help="fail if the restored files would take more (0 = none)")
    restore.add_argument("--threads", type=int, default=0, metavar="N", help="worker threads (0 = all cores)")
    restore.add_argument("--json", action="store_true", help="print the whole result as JSON")

    ls = sub.add_parser("ls", help="list a directory of a .tar.gz", epilog=EXIT_CODES, formatter_class=fmt,
                        description="List the entries directly under DIR (default: the top level) of "
                                    "ARCHIVE, from the index beside it (ARCHIVE.index); an archive "
                                    "without one is read once and the index written beside it.")
    ls.add_argument("archive", metavar="ARCHIVE")
    ls.add_argument("dir", metavar="DIR", nargs="?", default="")
    ls.add_argument("--json", action="store_true", help="print the whole result as JSON")

    verify = sub.add_parser("verify", help="check a .tar.gz: every gzip member, the tar structure, "
                                           "and each entry against the index beside it",
                            epilog=EXIT_CODES, formatter_class=fmt)
    verify.add_argument("archive", metavar="ARCHIVE")
    verify.add_argument("--json", action="store_true", help="print the whole result as JSON")

    for name, what in (("status", "a backup's state on a running node"),
                       ("list", "a server's backups on a running node, newest first"),
                       ("watch", "follow a backup's progress on a running node until it ends")):
        cmd = sub.add_parser(name, help=what, epilog=EXIT_CODES, formatter_class=fmt)
        cmd.add_argument("server", metavar="SERVER")
        if name != "list":
            cmd.add_argument("backup", metavar="BACKUP")
        cmd.add_argument("--url", default=os.environ.get("WINGS_URL", "http://127.0.0.1:8080"),
                         help="the node's address (default: $WINGS_URL, else http://127.0.0.1:8080)")
        cmd.add_argument("--token", default=os.environ.get("WINGS_TOKEN", ""),
                         help="the node's token (default: $WINGS_TOKEN)")
        if name != "watch":
            cmd.add_argument("--json", action="store_true", help="print the node's JSON")
    return parser


def _node_command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from .node import Node, describe, final_exit, watch

    node = Node(args.url, args.token)
    if args.command == "watch":
        return watch(node, args.server, args.backup, out, err)
    if args.command == "status":
        state = node.status(args.server, args.backup)
        out.write((json.dumps(state) if args.json else describe(state)) + "\n")
        return final_exit(state) if state.get("state") in ("failed", "cancelled") else EXIT_OK
    states = node.list(args.server)
    if args.json:
        out.write(json.dumps(states) + "\n")
    for state in [] if args.json else states:
        out.write(describe(state) + "\n")
    return EXIT_OK


def _create(args: argparse.Namespace, display: ProgressDisplay, out: IO[str], err: IO[str]) -> int:
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
    if args.dry_run:
        return _dry_run(args, options, out, err)
    try:
        summary = _interruptible(archive_create, args.src_dir, args.archive, options, progress=display)
    finally:
        display.finish()
    _warn_list(err, "changed while being read", summary.changed, summary.changed_count)
    skipped = [f"{s.path} ({s.reason})" for s in summary.skipped]
    _warn_list(err, "skipped", skipped, summary.skipped_count)
    elapsed = max(time.monotonic() - display.started, 1e-6)
    ratio = f"{summary.size / summary.source_bytes:.1%} of the source" if summary.source_bytes else "no file data"
    display.summary(f"{summary.files} files, {summary.entries} entries, {human_bytes(summary.source_bytes)} "
                    f"read at {human_bytes(summary.source_bytes / elapsed)}/s, "
                    f"archive {human_bytes(summary.size)} ({ratio})")
    if args.json:
        out.write(json.dumps(summary.raw, indent=2) + "\n")
    else:
        out.write(f"sha1 {summary.checksum}\nsize {summary.size}\n")
    return EXIT_PARTIAL if summary.skipped_count else EXIT_OK


def _dry_run(args: argparse.Namespace, options: Dict[str, Any], out: IO[str], err: IO[str]) -> int:
    """``create --dry-run``: the report as ``key value`` lines (``--json``:
    the whole report), the ignored and skipped paths as notes on stderr."""
    report = _interruptible(archive_dry_run, args.src_dir, args.archive, options)
    _warn_list(err, "ignored", report.ignored, report.ignored_count)
    skipped = [f"{s.path} ({s.reason})" for s in report.skipped]
    _warn_list(err, "would be skipped", skipped, report.skipped_count)
    err.write(f"dry run: {report.files} files, {report.entries} entries, {human_bytes(report.bytes)}; "
              f"archive about {human_bytes(report.estimated_size)} at most; nothing written\n")
    if args.json:
        out.write(json.dumps(report.raw, indent=2) + "\n")
    else:
        for key in ("files", "entries", "bytes", "estimated_size", "ignored_count", "skipped_count"):
            out.write(f"{key} {getattr(report, key)}\n")
    return EXIT_PARTIAL if report.skipped_count else EXIT_OK


def _restore(args: argparse.Namespace, display: ProgressDisplay, out: IO[str], err: IO[str]) -> int:
    options: Dict[str, Any] = {"truncate": args.truncate, "disk_limit": args.disk_limit, "threads": args.threads}
    if args.paths:
        options["paths"] = args.paths
    try:
        summary = _interruptible(archive_extract, args.archive, args.dest_dir, options, progress=display)
    finally:
        display.finish()
    if summary.skipped:
        err.write(f"warning: {summary.skipped} entr{'y' if summary.skipped == 1 else 'ies'} skipped "
                  "(FIFOs, device nodes or unknown entry types are not restored)\n")
    elapsed = max(time.monotonic() - display.started, 1e-6)
    try:
        archive_size = os.stat(args.archive).st_size
    except OSError:
        archive_size = 0
    if args.paths:
        # Only part of the archive was read: no ratio or read rate to give.
        display.summary(f"{summary.files} files, {summary.entries} entries, {human_bytes(summary.bytes)} "
                        f"written from {len(args.paths)} selected path{'s' if len(args.paths) > 1 else ''} "
                        f"of a {human_bytes(archive_size)} archive")
    else:
        ratio = f" ({summary.bytes / archive_size:.1f}x the archive)" if archive_size else ""
        display.summary(f"{summary.files} files, {summary.entries} entries, {human_bytes(summary.bytes)} "
                        f"written{ratio}, archive {human_bytes(archive_size)} read at "
                        f"{human_bytes(archive_size / elapsed)}/s")
    if args.json:
        out.write(json.dumps(summary.raw, indent=2) + "\n")
    else:
        out.write(
            f"restored {summary.entries} entries: {summary.files} files, "
            f"{summary.directories} directories, {summary.symlinks} symlinks, "
            f"{summary.hard_links} hard links, {human_bytes(summary.bytes)}"
            f"; {summary.skipped} skipped\n"
        )
    return EXIT_PARTIAL if summary.skipped else EXIT_OK


_TYPE_CHAR = {"file": "-", "dir": "d", "symlink": "l", "hardlink": "h", "fifo": "p"}


def _mode_text(kind: str, mode: int) -> str:
    bits = ""
    for shift, special, mark in ((6, 0o4000, "s"), (3, 0o2000, "s"), (0, 0o1000, "t")):
        r, w, x = (mode >> shift) & 4, (mode >> shift) & 2, (mode >> shift) & 1
        xc = "x" if x else "-"
        if mode & special:
            xc = mark if x else mark.upper()
        bits += ("r" if r else "-") + ("w" if w else "-") + xc
    return _TYPE_CHAR.get(kind, "?") + bits


def _ls(args: argparse.Namespace, out: IO[str]) -> int:
    listing = archive_list(args.archive, args.dir)
    if args.json:
        out.write(json.dumps(listing.raw, indent=2) + "\n")
        return EXIT_OK
    width = max((len(str(e.size)) for e in listing.entries), default=1)
    for e in listing.entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.mtime))
        name = e.name + ("/" if e.type == "dir" else "")
        if e.link is not None:
            name += (" -> " if e.type == "symlink" else " link to ") + e.link
        out.write(f"{_mode_text(e.type, e.mode)} {e.size:>{width}} {when} {name}\n")
    return EXIT_OK


def _verify(args: argparse.Namespace, display: ProgressDisplay, out: IO[str], err: IO[str]) -> int:
    try:
        report = _interruptible(archive_verify, args.archive, progress=display)
    finally:
        display.finish()
    if args.json:
        out.write(json.dumps(report.raw, indent=2) + "\n")
    against = "against its index" if report.indexed else "without an index (gzip and tar only)"
    if report.ok:
        if not args.json:
            out.write(f"ok: {report.members} gzip members, {report.files} files, "
                      f"{human_bytes(report.bytes)} checked {against}\n")
        return EXIT_OK
    err.write(f"damaged: {report.error_count} problem{'s' if report.error_count != 1 else ''} found "
              f"in {report.members} gzip members, checked {against}\n")
    for e in report.errors:
        where = f"member {e.member} (byte {e.offset})" if e.member is not None else "archive"
        what = f" {e.path}:" if e.path is not None else ""
        err.write(f"  {where}:{what} {e.message}\n")
    if report.error_count > len(report.errors):
        err.write(f"  ... and {report.error_count - len(report.errors)} more\n")
    return STATUS_EXIT[Status.CORRUPT_ARCHIVE]


R = TypeVar("R")


def _interruptible(call: Callable[..., R], *args: Any, **kwargs: Any) -> R:
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
    args = _parser(prog).parse_args(argv)  # a usage error exits 2
    display = ProgressDisplay(sys.stderr)
    try:
        if args.command in ("status", "list", "watch"):
            return _node_command(args, sys.stdout, sys.stderr)
        if args.command == "create":
            return _create(args, display, sys.stdout, sys.stderr)
        if args.command == "ls":
            return _ls(args, sys.stdout)
        if args.command == "verify":
            return _verify(args, display, sys.stdout, sys.stderr)
        return _restore(args, display, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; nothing was left half-written\n")
        return EXIT_INTERRUPTED
    except NodeError as e:
        sys.stderr.write(f"{prog}: error: {e.message}\n")
        return e.exit_code
    except (WingsBackupError, OSError) as e:
        message = e.message if isinstance(e, WingsBackupError) else f"{e.strerror or e}: {e.filename}"
        sys.stderr.write(f"{prog}: error: {message}\n")
        return exit_code_for(e)
