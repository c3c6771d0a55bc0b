"""wings_backup: Python bindings (ctypes) for libwings_backup, the backup
engine of a game-server node (Pterodactyl/Pelican Wings compatible).

The library is looked up in ``$WINGS_BACKUP_LIB``, then inside the installed
package (``pip install`` builds it in), then in ``target/release`` of the
source checkout this package sits in, then as the system's
``libwings_backup.so.0``; importing fails with :class:`ImportError` if none is
found or its ABI version is not the one this binding expects.
"""

from __future__ import annotations

from ._native import ABI_VERSION, LIB, LIBRARY_PATH
from .engine import Engine, archive_create, archive_dry_run, archive_extract, archive_list, archive_verify
from .errors import (
    BackupIOError,
    CancelledError,
    ConflictError,
    CorruptArchiveError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    QuotaError,
    RemoteError,
    Status,
    UnsafeEntryError,
    WingsBackupError,
)
from .progress import CancelToken, Phase, Progress, ProgressCallback
from .results import (
    ArchiveSummary,
    BackupState,
    Details,
    DryRunReport,
    ExtractSummary,
    FileEntry,
    FileListing,
    HttpEvent,
    HttpResponse,
    Part,
    PendingReports,
    Skipped,
    VerifyError,
    VerifyReport,
)

__version__ = "0.1.0"


def library_version() -> str:
    """The loaded library's version, e.g. ``"0.1.0"``."""
    return str(LIB.wb_version().decode())


def deflate_backend() -> str:
    """The deflate the loaded library was built with: ``"isal"`` (ISA-L, the
    default build) or ``"zlib-rs"`` (pure Rust, cargo ``--no-default-features``).
    Both read and write the same archives."""
    return str(LIB.wb_deflate_backend().decode())


__all__ = [
    "BackupState",
    "ABI_VERSION",
    "LIBRARY_PATH",
    "ArchiveSummary",
    "BackupIOError",
    "CancelToken",
    "HttpEvent",
    "HttpResponse",
    "CancelledError",
    "ConflictError",
    "CorruptArchiveError",
    "Details",
    "DryRunReport",
    "Engine",
    "ExtractSummary",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "Part",
    "PendingReports",
    "Phase",
    "Progress",
    "ProgressCallback",
    "QuotaError",
    "RemoteError",
    "Skipped",
    "Status",
    "UnsafeEntryError",
    "WingsBackupError",
    "archive_create",
    "archive_dry_run",
    "archive_extract",
    "deflate_backend",
    "library_version",
]
