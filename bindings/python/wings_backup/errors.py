"""Status codes and the exceptions they become.

Every failed call raises a subclass of :class:`WingsBackupError`, chosen by
the ``WB_*`` status the library returned; ``.http_status`` is the status an
HTTP host answers with (docs/api.md section 2), straight from the library.
"""

from __future__ import annotations

import ctypes
import enum
from typing import Dict, Optional, Type

from ._native import LIB


class Status(enum.IntEnum):
    """``WB_*`` status codes (never renumbered)."""

    OK = 0
    INVALID_ARGUMENT = 1
    NOT_FOUND = 2
    CONFLICT = 3
    CORRUPT_ARCHIVE = 4
    UNSAFE_ENTRY = 5
    QUOTA = 6
    REMOTE = 7
    CANCELLED = 8
    IO = 9
    INTERNAL = 10


class WingsBackupError(Exception):
    """A failed call: ``status`` (a :class:`Status`, or a plain int from a newer
    library), ``message`` (meant for people), ``http_status``."""

    status: int
    message: str
    http_status: int

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = _status(status)
        self.message = message
        self.http_status = int(LIB.wb_status_http(int(status)))

    @property
    def status_name(self) -> str:
        """The C name of the status, e.g. ``"WB_NOT_FOUND"``."""
        return (LIB.wb_status_name(int(self.status)) or b"WB_UNKNOWN").decode()

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_name}, {self.message!r})"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Exceptions cross process boundaries (multiprocessing) by pickling.
        return (error_for, (int(self.status), self.message))


class InvalidArgumentError(WingsBackupError):
    """Bad JSON or field, a bad UUID, an unknown adapter or a bad URL (400)."""


class NotFoundError(WingsBackupError):
    """The server directory or the backup archive does not exist (404)."""


class ConflictError(WingsBackupError):
    """The backup uuid exists or is running, or the server is busy (409)."""


class CorruptArchiveError(WingsBackupError):
    """The archive is not gzip, not tar, damaged or truncated (422)."""


class UnsafeEntryError(WingsBackupError):
    """An archive entry would escape the destination directory (422)."""


class QuotaError(WingsBackupError):
    """The disk limit was exceeded, or the disk is full (507)."""


class RemoteError(WingsBackupError):
    """S3, the Panel or a download failed (502)."""


class CancelledError(WingsBackupError):
    """The call was stopped by its cancel token or progress callback (503)."""


class BackupIOError(WingsBackupError):
    """Any other I/O failure (500). Not named IOError, which is a builtin."""


class InternalError(WingsBackupError):
    """A bug in the library, including a caught panic (500)."""


_CLASSES: Dict[int, Type[WingsBackupError]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.NOT_FOUND: NotFoundError,
    Status.CONFLICT: ConflictError,
    Status.CORRUPT_ARCHIVE: CorruptArchiveError,
    Status.UNSAFE_ENTRY: UnsafeEntryError,
    Status.QUOTA: QuotaError,
    Status.REMOTE: RemoteError,
    Status.CANCELLED: CancelledError,
    Status.IO: BackupIOError,
    Status.INTERNAL: InternalError,
}


def _status(code: int) -> int:
    try:
        return Status(code)
    except ValueError:
        return int(code)


def error_for(status: int, message: str) -> WingsBackupError:
    """The exception for a status; an unknown status gives the base class."""
    return _CLASSES.get(status, WingsBackupError)(status, message)


def take_error(status: int, err: Optional[int]) -> WingsBackupError:
    """Builds the exception from an owned ``wb_error *`` and frees it."""
    if not err:
        return error_for(status, f"{_name(status)} (the library gave no message)")
    try:
        code = LIB.wb_error_status(err)
        message = (LIB.wb_error_message(err) or b"").decode("utf-8", "replace")
    finally:
        LIB.wb_error_free(err)
    return error_for(code, message)


def check(status: int, err: "ctypes.c_void_p") -> None:
    """Raises the error of a call that returned ``status`` (frees ``err``)."""
    if status != Status.OK:
        raise take_error(status, err.value)
    if err.value:  # a library bug, but never leak it
        LIB.wb_error_free(err.value)


def _name(status: int) -> str:
    return (LIB.wb_status_name(int(status)) or b"WB_UNKNOWN").decode()
