"""The engine (one node's backups) and the archive-level calls for scripts."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
import time
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ._handle import NativeHandle
from . import _native
from ._native import LIB, LOG_FN, take_string
from .errors import InvalidArgumentError, Status, WingsBackupError, check, error_for
from .progress import CALLS, CancelToken, ProgressCallback, _Bridge, lend_token
from .results import (ArchiveSummary, BackupState, Details, DryRunReport, ExtractSummary, FileListing, HttpEvent,
                      HttpResponse, PendingReports, VerifyReport)

#: ``handle_http``'s ``body_error`` as the library's flags.
_HTTP_BODY_ERRORS = {None: 0, "too_large": _native.HTTP_BODY_TOO_LARGE,
                     "unreadable": _native.HTTP_BODY_UNREADABLE, "timed_out": _native.HTTP_BODY_TIMED_OUT}

#: A JSON document: a mapping (encoded here), or JSON text.
JsonArg = Union[Mapping[str, Any], str, bytes]
PathArg = Union[str, "os.PathLike[str]", bytes]


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _with_paths(value: Optional[JsonArg], paths: Optional[Sequence[str]], what: str) -> Optional[JsonArg]:
    """``value`` (a JSON object in any accepted form) with its ``paths`` set
    to ``paths``; unchanged when ``paths`` is None."""
    if paths is None:
        return value
    if isinstance(paths, (str, bytes)):
        raise InvalidArgumentError(Status.INVALID_ARGUMENT, "paths must be a list of paths, not one string")
    if value is None:
        obj: Dict[str, Any] = {}
    elif isinstance(value, Mapping):
        obj = dict(value)
    else:
        try:
            loaded = json.loads(bytes(value) if isinstance(value, (bytearray, memoryview)) else value)
        except ValueError:
            loaded = None
        if not isinstance(loaded, dict):
            raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"{what} must be a JSON object to take paths")
        obj = loaded
    obj["paths"] = [os.fspath(p) if isinstance(p, os.PathLike) else p for p in paths]
    return obj


def _c_string(data: bytes, what: str) -> bytes:
    # A C string ends at the first NUL: "{...}\0junk" would pass as "{...}".
    if b"\0" in data:
        raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"{what} contains a NUL byte")
    return data


def _json_arg(value: Optional[JsonArg], what: str, optional: bool = False) -> Optional[bytes]:
    """``value`` as the C string of a JSON document. None is the library's
    NULL where the call takes one (``optional``), else a wrong type: a
    TypeError, as any other (InvalidArgumentError is for bad values)."""
    if value is None:
        if optional:
            return None
        raise TypeError(f"{what} must be a mapping, str or bytes, not None")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"{what} is not valid UTF-8") from None
    elif isinstance(value, Mapping):
        data = json.dumps(value, default=_json_default).encode("utf-8")
    else:
        raise TypeError(f"{what} must be a mapping, str or bytes, not {type(value).__name__}")
    return _c_string(data, what)


def _text_arg(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return _c_string(value.encode("utf-8", "surrogateescape"), what)


def _path_arg(value: PathArg, what: str) -> bytes:
    # Absolute, so that the library never sees a bare file name (whose
    # parent directory is "", which libwings_backup 0.1.0 fails to open).
    # But an empty path stays empty: abspath("") is the working directory,
    # and the library refuses "" (as from C and Go) where abspath would have
    # an extract with truncate empty the caller's working directory.
    path = os.fsencode(value)
    return _c_string(os.path.abspath(path) if path else path, what)


def _parse(text: Optional[str]) -> Dict[str, Any]:
    return json.loads(text) if text else {}


def _long_call(fn: Any, args: List[Any], progress: Optional[ProgressCallback],
               cancel: Optional[CancelToken], out: Optional[ctypes.c_void_p]) -> Optional[str]:
    """Runs one blocking call with its callback bridge and cancel token; the
    trailing arguments (callback, userdata, cancel, [out], err) are added here.
    ctypes releases the GIL for the duration of the call."""
    bridge = _Bridge(progress)
    err = ctypes.c_void_p()
    with lend_token(cancel) as token, CALLS.track():
        tail = [bridge.c_function, None, token]
        if out is not None:
            tail.append(ctypes.byref(out))
        status = fn(*args, *tail, ctypes.byref(err))
    text = take_string(out.value) if out is not None else None
    try:
        bridge.reraise()  # the callback's own exception wins over WB_CANCELLED
    except BaseException:
        if err.value:
            LIB.wb_error_free(err.value)
        raise
    check(status, err)
    return text


#: ``WB_LOG_*`` levels as :mod:`logging` levels.
_LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}

#: The logger an engine logs to unless told otherwise.
DEFAULT_LOGGER = "wings_backup"

_NO_LOGGER: Any = object()


class _LogSink:
    """The C log callback of one engine, forwarding to a :class:`logging.Logger`.
    It lives as long as the native engine (its free function holds it), so the
    library never calls a freed callback."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.c_function: Optional[Any] = None

    @staticmethod
    def bridge(logger: logging.Logger) -> Any:
        def forward(_userdata: Optional[int], level: int, message: Optional[bytes]) -> None:
            try:
                logger.log(_LOG_LEVELS.get(level, logging.ERROR),
                           (message or b"").decode("utf-8", "replace"))
            except Exception:  # noqa: BLE001  (nothing may unwind into the library)
                pass
        return LOG_FN(forward)

    def set(self, handle: NativeHandle, logger: Optional[logging.Logger]) -> None:
        with self.lock:
            c_function = self.bridge(logger) if logger is not None else LOG_FN()
            err = ctypes.c_void_p()
            with handle.use(while_closing=True) as engine:
                # ctypes releases the GIL here: a message being delivered on
                # another thread finishes before the call returns.
                status = LIB.wb_engine_set_logger(engine, c_function, None, ctypes.byref(err))
            check(status, err)
            # The previous callback is never called again: it may go now.
            self.c_function = c_function if logger is not None else None

    def detach(self, handle: NativeHandle) -> None:
        """At interpreter exit: no engine thread may call into Python any more."""
        try:
            self.set(handle, None)
        except Exception:  # noqa: BLE001  (closed, or failing at exit)
            pass


def _freeing(sink: _LogSink) -> Any:
    def free(ptr: int) -> None:
        LIB.wb_engine_free(ptr)  # joins the engine's threads
        sink.c_function = None
    return free


class Engine:
    """One node's backup engine: configuration plus the state of running
    operations. Thread-safe: calls on different servers run in parallel (the
    GIL is released during every call).

    ``config`` is a mapping (paths may be ``pathlib.Path``) or JSON text with
    the keys of docs/api.md section 12: ``data_directory``, ``backup_directory``,
    ``compression_level``, ``write_limit``, ``threads``, ``owner``,
    ``disk_limit``, ``restore_host_allowlist``, ``upload_concurrency``,
    ``max_running_backups``, ``backup_reuse``, ``panel``. Unknown keys raise :class:`InvalidArgumentError`.

    The engine's log messages (every retry of a Panel call at WARNING as it
    happens, reports parked for later, ...) go to ``logger``: by default the
    :mod:`logging` logger named ``wings_backup``; ``None`` drops them. See
    :meth:`set_logger`.

    Use it as a context manager, or call :meth:`close` (idempotent; a call
    still running keeps the native engine alive until it returns).
    """

    def __init__(self, config: JsonArg, logger: Optional[logging.Logger] = _NO_LOGGER) -> None:
        data = _json_arg(config, "config")
        out = ctypes.c_void_p()
        err = ctypes.c_void_p()
        check(LIB.wb_engine_new(data, ctypes.byref(out), ctypes.byref(err)), err)
        self._log = _LogSink()
        self._handle = NativeHandle(out.value or 0, _freeing(self._log), "engine")
        self._finalizer = weakref.finalize(self, self._handle.close)
        # At interpreter exit, daemon threads may still be inside a call.
        self._finalizer.atexit = False
        # ... but the engine's own threads must stop calling into Python.
        self._log_finalizer = weakref.finalize(self, self._log.detach, self._handle)
        self.set_logger(logging.getLogger(DEFAULT_LOGGER) if logger is _NO_LOGGER else logger)

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "Engine":
        return cls(text)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "Engine":
        return cls(config)

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<wings_backup.Engine{' closed' if self.closed else ''}>"

    def set_logger(self, logger: Optional[logging.Logger]) -> None:
        """Sends the engine's log messages to ``logger`` (``None``: nowhere).
        Messages may come from any of the engine's threads, including its
        reporter thread, which tells the Panel the results of restores in the
        background; levels map to DEBUG, INFO, WARNING and ERROR."""
        self._log.set(self._handle, logger)

    def send_pending_reports(self, cancel: Optional[CancelToken] = None) -> PendingReports:
        """Sends the backup and restore reports the Panel could not be given
        earlier (parked in ``<backup_directory>/.pending/``); returns
        :class:`PendingReports` (``sent``, ``pending``). A host calls it once at start, from a background
        thread: it blocks while the Panel is slow. Without a Panel it does
        nothing."""
        out = ctypes.c_void_p()
        err = ctypes.c_void_p()
        with self._handle.use() as engine, lend_token(cancel) as token:
            status = LIB.wb_engine_send_pending_reports(engine, token, ctypes.byref(out),
                                                        ctypes.byref(err))
        text = take_string(out.value)
        check(status, err)
        return PendingReports._from_json(_parse(text))

    def resend_parked_reports(self) -> None:
        """Starts sending again, on a thread of the engine's, the reports
        :meth:`send_pending_reports` would send, and logs through the
        engine's logger how many went and how many are still parked.
        :meth:`cancel_all` stops it; :meth:`wait_idle` and :meth:`close`
        wait for it. Without a Panel it does nothing. A host calls it once
        when it starts."""
        err = ctypes.c_void_p()
        with self._handle.use() as engine:
            check(LIB.wb_engine_resend_parked_reports(engine, ctypes.byref(err)), err)

    def cancel_all(self) -> None:
        """Cancels every backup and restore in progress (queued, running, or
        still telling the Panel, whose report is then parked) and makes new
        ones raise :class:`CancelledError` ("The node is shutting down.");
        deletes still work. For a host shutting down. After :meth:`close`
        it does nothing."""
        try:
            with self._handle.use() as engine:
                LIB.wb_engine_cancel_all(engine)
        except ValueError:  # closed
            pass

    def check_create(self, server_uuid: str, request: JsonArg) -> None:
        """Validates a create request without starting it (raises on a bad
        body, unknown server, existing or running backup uuid, busy server).
        It reserves nothing."""
        args = [_text_arg(server_uuid, "server_uuid"), _json_arg(request, "request")]
        err = ctypes.c_void_p()
        with self._handle.use() as engine:
            status = LIB.wb_backup_create_check(engine, *args, ctypes.byref(err))
        check(status, err)

    def create_backup(self, server_uuid: str, request: JsonArg,
                      progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelToken] = None) -> Details:
        """Backs up a server (``request``: ``{"adapter","uuid","ignore"}``);
        blocks until the archive is written (and reported, with a Panel).
        Returns :class:`Details`: ``checksum``, ``checksum_type``, ``size``,
        ``successful``, ``parts``, ``files``, ``changed``, ``skipped``,
        ``panel_report``. The first progress report (phase STARTED) means the
        request was accepted. When the backup directory cannot hold the
        archive by the estimate (measured before any file is read), it
        raises :class:`QuotaError` (the Panel is told of the failure). A
        request with ``"dry_run": true`` is refused: see :meth:`dry_run`."""
        args = [_text_arg(server_uuid, "server_uuid"), _json_arg(request, "request")]
        out = ctypes.c_void_p()
        with self._handle.use() as engine:
            text = _long_call(LIB.wb_backup_create, [engine, *args], progress, cancel, out)
        return Details._from_json(_parse(text))

    def dry_run(self, server_uuid: str, request: JsonArg,
                cancel: Optional[CancelToken] = None) -> DryRunReport:
        """What :meth:`create_backup` with ``request`` (the same body; its
        ``dry_run`` need not be given) would hold, without making it: the
        walk of a backup with the same ignore rules, reading no file data.
        Nothing is written, the Panel is not called, and the call neither
        holds the server nor waits for a backup slot. Returns
        :class:`DryRunReport`. ``cancel`` stops the walk
        (:class:`CancelledError`)."""
        args = [_text_arg(server_uuid, "server_uuid"), _json_arg(request, "request")]
        out = ctypes.c_void_p()
        err = ctypes.c_void_p()
        with self._handle.use() as engine, lend_token(cancel) as token, CALLS.track():
            status = LIB.wb_backup_dry_run(engine, *args, token, ctypes.byref(out),
                                           ctypes.byref(err))
        text = take_string(out.value)
        check(status, err)
        return DryRunReport._from_json(_parse(text))

    def check_restore(self, server_uuid: str, backup_uuid: str, request: JsonArg,
                      paths: Optional[Sequence[str]] = None) -> None:
        """Validates a restore request without starting it (``paths`` as
        :meth:`restore_backup` takes it)."""
        args = [
            _text_arg(server_uuid, "server_uuid"),
            _text_arg(backup_uuid, "backup_uuid"),
            _json_arg(_with_paths(request, paths, "request"), "request"),
        ]
        err = ctypes.c_void_p()
        with self._handle.use() as engine:
            status = LIB.wb_backup_restore_check(engine, *args, ctypes.byref(err))
        check(status, err)

    def restore_backup(self, server_uuid: str, backup_uuid: str, request: JsonArg,
                       progress: Optional[ProgressCallback] = None,
                       cancel: Optional[CancelToken] = None,
                       paths: Optional[Sequence[str]] = None) -> None:
        """Restores a backup into a server (``request``:
        ``{"adapter","truncate_directory","download_url","paths"}``); blocks
        until the files are in place. On failure the server's files are as
        they were. ``paths`` (the request's ``paths``, which it replaces)
        limits the restore to those entries of the backup, a directory with
        everything under it; with ``truncate_directory`` each is replaced
        whole and nothing else changes. A path the backup does not hold
        raises :class:`NotFoundError` before anything changes. With a Panel,
        the result is reported in the background by the engine's reporter
        thread (retried, else parked in ``.pending``)."""
        args = [
            _text_arg(server_uuid, "server_uuid"),
            _text_arg(backup_uuid, "backup_uuid"),
            _json_arg(_with_paths(request, paths, "request"), "request"),
        ]
        with self._handle.use() as engine:
            _long_call(LIB.wb_backup_restore, [engine, *args], progress, cancel, None)

    def list_files(self, server_uuid: str, backup_uuid: str, path: str = "") -> FileListing:
        """The entries directly under directory ``path`` of a backup (``""``
        or ``"/"``: the top level; ``world``, ``world/`` and ``/world``
        alike), from its index (an archive without one is read once and
        indexed). :class:`NotFoundError` for a path the archive does not hold
        or that is not a directory; :class:`InvalidArgumentError` for
        ``..``."""
        return FileListing._from_json(self._text(
            LIB.wb_backup_files, _text_arg(server_uuid, "server_uuid"),
            _text_arg(backup_uuid, "backup_uuid"), _text_arg(path, "path")))

    def verify_backup(self, server_uuid: str, backup_uuid: str,
                      progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelToken] = None) -> VerifyReport:
        """Reads the backup's local archive once and checks every gzip
        member, the tar structure and (with an index) every entry against
        the index. Damage is in the report (``ok`` False), not raised."""
        args = [_text_arg(server_uuid, "server_uuid"), _text_arg(backup_uuid, "backup_uuid")]
        with self._handle.use() as engine:
            text = _long_call(LIB.wb_backup_verify, [engine, *args], progress, cancel,
                              ctypes.c_void_p())
        return VerifyReport._from_json(_parse(text))

    def delete_backup(self, server_uuid: str, backup_uuid: str) -> None:
        """Deletes a local archive (:class:`NotFoundError` if there is none);
        a backup of that uuid still running is cancelled first. It never
        waits for the Panel (a backup whose report is still going out is
        deleted at once)."""
        args = [_text_arg(server_uuid, "server_uuid"), _text_arg(backup_uuid, "backup_uuid")]
        err = ctypes.c_void_p()
        with self._handle.use() as engine:
            status = LIB.wb_backup_delete(engine, *args, ctypes.byref(err))
        check(status, err)

    # -- started calls and their state --------------------------------------

    def _simple(self, fn: Any, *args: Any) -> None:
        err = ctypes.c_void_p()
        with self._handle.use() as engine:
            status = fn(engine, *args, ctypes.byref(err))
        check(status, err)

    def _text(self, fn: Any, *args: Any) -> Any:
        out = ctypes.c_void_p()
        err = ctypes.c_void_p()
        with self._handle.use() as engine:
            status = fn(engine, *args, ctypes.byref(out), ctypes.byref(err))
        text = take_string(out.value)
        check(status, err)
        return json.loads(text) if text else None

    def start_backup(self, server_uuid: str, request: JsonArg) -> None:
        """Starts a backup like :meth:`create_backup`, on a thread of the
        library's, and returns once it is accepted (then :meth:`backup_status`
        knows it), or raises what :meth:`create_backup` would have before
        that. Its progress and end are read with :meth:`backup_status` and
        :meth:`wait_backup`; :meth:`cancel_backup` stops it."""
        self._simple(LIB.wb_backup_start, _text_arg(server_uuid, "server_uuid"),
                     _json_arg(request, "request"))

    def start_restore(self, server_uuid: str, backup_uuid: str, request: JsonArg,
                      paths: Optional[Sequence[str]] = None) -> None:
        """Starts a restore like :meth:`restore_backup`, on a thread of the
        library's, as :meth:`start_backup` does; its outcome is the ended
        state :meth:`wait_backup` returns (:meth:`state_error`)."""
        self._simple(LIB.wb_restore_start, _text_arg(server_uuid, "server_uuid"),
                     _text_arg(backup_uuid, "backup_uuid"),
                     _json_arg(_with_paths(request, paths, "request"), "request"))

    def backup_status(self, server_uuid: str, backup_uuid: str) -> BackupState:
        """The state of a backup (:class:`BackupState`); :class:`NotFoundError`
        when the engine knows neither an operation nor a local archive of it."""
        return BackupState._from_json(self._text(
            LIB.wb_backup_status, _text_arg(server_uuid, "server_uuid"),
            _text_arg(backup_uuid, "backup_uuid")))

    def wait_backup(self, server_uuid: str, backup_uuid: str, after_seq: int = 0,
                    timeout: Optional[float] = None) -> BackupState:
        """Waits until the backup's state changes past ``after_seq`` (its
        ``seq``), its operation ends, or ``timeout`` seconds pass (None: no
        limit), and returns the state. Progress wakes it at most 4 times a
        second; a backup with no operation in flight answers at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        args = [_text_arg(server_uuid, "server_uuid"), _text_arg(backup_uuid, "backup_uuid")]
        while True:
            # Slices of at most 0.5 s, so that close() is never held up long.
            left = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
            state = BackupState._from_json(self._text(
                LIB.wb_backup_wait, *args, after_seq, int(left * 1000)))
            if state.seq > after_seq or state.finished:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                return state

    @staticmethod
    def state_error(state: BackupState) -> Optional[WingsBackupError]:
        """The exception a failed or cancelled operation ended with, else None."""
        if state.error_status is None:
            return None
        return error_for(state.error_status, state.error or "")

    def list_backups(self, server_uuid: str) -> List[BackupState]:
        """The server's backups the engine knows (operations in flight, and
        finished ones whose archives are there), newest first."""
        items = self._text(LIB.wb_backup_list, _text_arg(server_uuid, "server_uuid"))
        return [BackupState._from_json(item) for item in items or []]

    def cancel_backup(self, server_uuid: str, backup_uuid: str) -> None:
        """Cancels the queued or running create or restore of a backup
        without waiting (it stops within a second); :class:`ConflictError`
        when it has already ended or is a restore putting its files in place
        (phase ``commit``), :class:`NotFoundError` when unknown."""
        self._simple(LIB.wb_backup_cancel, _text_arg(server_uuid, "server_uuid"),
                     _text_arg(backup_uuid, "backup_uuid"))

    def delete_all_backups(self, server_uuid: str) -> int:
        """Removes every local archive of the server and cancels its queued
        or running creates; returns how many backups went."""
        result = self._text(LIB.wb_backups_delete_all, _text_arg(server_uuid, "server_uuid"))
        return int((result or {}).get("deleted", 0))

    def handle_http(self, method: str, path: str, body: bytes = b"", query: str = "", *,
                    async_restore: bool = False, body_error: Optional[str] = None) -> HttpResponse:
        """Answers one request of the node's HTTP API (after the host's
        authentication): routing, 404/405, Wings' messages, the engine call
        and the rendered answer are the library's. ``path`` is decoded,
        without the query. ``body_error`` is ``"too_large"``,
        ``"unreadable"`` or ``"timed_out"`` when the host could not read the
        body within its limits. Blocks as long as the answer needs (a create
        with ``"wait": true``, a synchronous restore)."""
        flags = (_native.HTTP_ASYNC_RESTORE if async_restore else 0) | _HTTP_BODY_ERRORS[body_error]
        data = bytes(body)
        return HttpResponse._from_json(self._text(
            # A NUL byte (%00) matches no route; as U+FFFD it is answered so.
            LIB.wb_http_handle, _text_arg(method, "method"), _text_arg(path.replace("\0", "\ufffd"), "path"),
            _text_arg(query.replace("\0", "\ufffd"), "query"), data, len(data), flags))

    def next_http_event(self, server_uuid: str, backup_uuid: str, after_seq: int,
                        timeout: float) -> HttpEvent:
        """The next event of a stream :meth:`handle_http` began, waiting up
        to ``timeout`` seconds for the backup's state to move past
        ``after_seq``; :class:`NotFoundError` once the backup is gone."""
        raw = self._text(LIB.wb_http_next_event, _text_arg(server_uuid, "server_uuid"),
                         _text_arg(backup_uuid, "backup_uuid"), after_seq, max(0, int(timeout * 1000)))
        chunk = raw["chunk"]
        return HttpEvent(chunk=None if chunk is None else chunk.encode("utf-8"), seq=raw["seq"], done=raw["done"])

    def http_operation_end(self, started: Mapping[str, str], timeout: float) -> Optional[Dict[str, Any]]:
        """Waits up to ``timeout`` seconds for the create or restore a
        request started (:attr:`HttpResponse.started`) to end: None while it
        runs, else ``{"level", "message", "fields"}`` for the host's log
        (``level`` a :mod:`logging` level, ``fields`` ``[name, value]`` pairs
        in order)."""
        end = self._text(LIB.wb_http_operation_end, _text_arg(started["kind"], "kind"),
                         _text_arg(started["server"], "server_uuid"), _text_arg(started["backup"], "backup_uuid"),
                         max(0, int(timeout * 1000)))
        if not end["ended"]:
            return None
        return {"level": _LOG_LEVELS.get(end["level"], logging.ERROR), "message": end["message"],
                "fields": [tuple(f) for f in end["fields"]]}

    def wait_idle(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for every started call to end (a
        host shutting down, after :meth:`cancel_all`); True if they all have."""
        try:
            with self._handle.use() as engine:
                return bool(LIB.wb_engine_wait_idle(engine, max(0, int(timeout * 1000))))
        except ValueError:  # closed
            return True


def archive_create(src_dir: PathArg, archive_path: PathArg,
                   options: Optional[JsonArg] = None,
                   progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None) -> ArchiveSummary:
    """Archives any directory into a ``.tar.gz`` (written under a temporary
    name, then renamed; an existing file is replaced). ``options``:
    ``ignore`` (gitignore text), ``compression_level``, ``threads``,
    ``write_limit``. When the archive lies inside ``src_dir``, neither it
    nor its temporary file is archived. Returns :class:`ArchiveSummary`:
    ``checksum``, ``checksum_type``, ``size``, ``entries``, ``files``,
    ``source_bytes``, ``changed``, ``changed_count``, ``skipped``,
    ``skipped_count``."""
    args = [_path_arg(src_dir, "src_dir"), _path_arg(archive_path, "archive_path"),
            _json_arg(options, "options", optional=True)]
    return ArchiveSummary._from_json(
        _parse(_long_call(LIB.wb_archive_create, args, progress, cancel, ctypes.c_void_p())))


def archive_dry_run(src_dir: PathArg, archive_path: Optional[PathArg] = None,
                    options: Optional[JsonArg] = None,
                    cancel: Optional[CancelToken] = None) -> DryRunReport:
    """What :func:`archive_create` of ``src_dir`` would hold, from the same
    walk and ignore rules, reading no file data and writing nothing. The
    file at ``archive_path`` (when given) is left out as a create into it
    would leave it out. ``options``: ``ignore`` (the others of
    :func:`archive_create` are accepted and change nothing). Returns
    :class:`DryRunReport`; its ``estimated_size`` is the worst case (the
    tar stream stored uncompressed)."""
    args = [_path_arg(src_dir, "src_dir"),
            None if archive_path is None else _path_arg(archive_path, "archive_path"),
            _json_arg(options, "options", optional=True)]
    out = ctypes.c_void_p()
    err = ctypes.c_void_p()
    with lend_token(cancel) as token, CALLS.track():
        status = LIB.wb_archive_dry_run(*args, token, ctypes.byref(out), ctypes.byref(err))
    text = take_string(out.value)
    check(status, err)
    return DryRunReport._from_json(_parse(text))


def archive_extract(archive_path: PathArg, dest_dir: PathArg,
                    options: Optional[JsonArg] = None,
                    progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None,
                    paths: Optional[Sequence[str]] = None) -> ExtractSummary:
    """Extracts a ``.tar.gz`` into an existing directory with the restore
    safety rules (nothing escapes ``dest_dir``; on failure it is unchanged).
    ``options``: ``truncate``, ``threads``, ``disk_limit``, ``owner``,
    ``write_limit``, ``paths``. ``paths`` (the option, which it replaces)
    extracts only those entries, a directory with everything under it;
    with the archive's index beside it only their part of the archive is
    read. Returns :class:`ExtractSummary`: ``entries``, ``files``,
    ``directories``, ``symlinks``, ``hard_links``, ``bytes``, ``skipped``."""
    args = [_path_arg(archive_path, "archive_path"), _path_arg(dest_dir, "dest_dir"),
            _json_arg(_with_paths(options, paths, "options"), "options", optional=True)]
    return ExtractSummary._from_json(
        _parse(_long_call(LIB.wb_archive_extract, args, progress, cancel, ctypes.c_void_p())))


def archive_list(archive_path: PathArg, path: str = "") -> FileListing:
    """The entries directly under directory ``path`` of any ``.tar.gz``
    file: from the index beside it (``<archive>.index``) when it matches,
    else by reading the archive once (and writing that index when the
    directory allows)."""
    out = ctypes.c_void_p()
    err = ctypes.c_void_p()
    status = LIB.wb_archive_list(_path_arg(archive_path, "archive_path"), _text_arg(path, "path"),
                                 ctypes.byref(out), ctypes.byref(err))
    text = take_string(out.value)
    check(status, err)
    return FileListing._from_json(_parse(text))


def archive_verify(archive_path: PathArg, progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None) -> VerifyReport:
    """Verifies any ``.tar.gz`` file as :meth:`Engine.verify_backup` does a
    backup, against the index beside it when there is one."""
    args = [_path_arg(archive_path, "archive_path")]
    return VerifyReport._from_json(
        _parse(_long_call(LIB.wb_archive_verify, args, progress, cancel, ctypes.c_void_p())))
