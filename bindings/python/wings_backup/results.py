"""Typed results of the long calls, the same types as the Go binding's
(``Details``, ``ArchiveSummary``, ``ExtractSummary``, ``PendingReports``,
``BackupState``, ``Skipped``, ``Part``).

Each result keeps the JSON the library returned in ``.raw`` (a dict, with
any field this binding does not know yet), and still answers ``result["key"]``,
``result.get("key")`` and ``"key" in result`` from it, as the plain dicts of
earlier versions did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Type, TypeVar

T = TypeVar("T", bound="_Result")


def _int(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


def _strings(raw: Mapping[str, Any], key: str) -> List[str]:
    value = raw.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Skipped:
    """An entry a backup left out, and why (a socket, a device node, a file
    that could not be read)."""

    path: str
    reason: str

    @classmethod
    def _from_json(cls, raw: Any) -> "Skipped":
        raw = raw if isinstance(raw, Mapping) else {}
        return cls(_str(raw, "path"), _str(raw, "reason"))


@dataclass(frozen=True)
class Part:
    """One uploaded S3 part."""

    etag: str
    part_number: int

    @classmethod
    def _from_json(cls, raw: Any) -> "Part":
        raw = raw if isinstance(raw, Mapping) else {}
        return cls(_str(raw, "etag"), _int(raw, "part_number"))


def _skipped(raw: Mapping[str, Any]) -> List[Skipped]:
    value = raw.get("skipped")
    return [Skipped._from_json(s) for s in value] if isinstance(value, list) else []


class _Result:
    """Read access to ``.raw`` by key, as the earlier plain-dict results had."""

    raw: Dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.raw

    def keys(self) -> Iterator[str]:
        return iter(self.raw.keys())

    @classmethod
    def _from_json(cls: Type[T], raw: Any) -> T:
        raise NotImplementedError


@dataclass(frozen=True)
class Details(_Result):
    """The result of :meth:`Engine.create_backup`: the Panel's status body
    plus what the archive saw change or left out."""

    checksum: str
    checksum_type: str
    size: int
    successful: bool
    #: The uploaded S3 parts; None for a local backup.
    parts: Optional[List[Part]]
    #: Regular files archived.
    files: int
    #: Files that changed while they were read.
    changed: List[str]
    #: Entries left out (sockets, devices, unreadable files).
    skipped: List[Skipped]
    #: Gzip members, and their bytes, copied unchanged from the server's
    #: previous local archive.
    reused_members: int
    reused_bytes: int
    #: What became of the report to the Panel, when one is configured:
    #: ``"sent"``, ``"rejected: ..."`` or ``"pending: ..."``; else "".
    panel_report: str
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def _from_json(cls, raw: Any) -> "Details":
        raw = raw if isinstance(raw, dict) else {}
        parts = raw.get("parts")
        return cls(
            checksum=_str(raw, "checksum"),
            checksum_type=_str(raw, "checksum_type"),
            size=_int(raw, "size"),
            successful=raw.get("successful") is True,
            parts=[Part._from_json(p) for p in parts] if isinstance(parts, list) else None,
            files=_int(raw, "files"),
            changed=_strings(raw, "changed"),
            skipped=_skipped(raw),
            reused_members=_int(raw, "reused_members"),
            reused_bytes=_int(raw, "reused_bytes"),
            panel_report=_str(raw, "panel_report"),
            raw=raw,
        )


@dataclass(frozen=True)
class ArchiveSummary(_Result):
    """The result of :func:`archive_create`. ``changed`` and ``skipped`` list
    at most the first 100; the counts are complete."""

    checksum: str
    checksum_type: str
    size: int
    entries: int
    files: int
    source_bytes: int
    changed: List[str]
    changed_count: int
    skipped: List[Skipped]
    skipped_count: int
    #: Members copied from an earlier archive, and their bytes.
    reused_members: int
    reused_bytes: int
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def _from_json(cls, raw: Any) -> "ArchiveSummary":
        raw = raw if isinstance(raw, dict) else {}
        return cls(
            checksum=_str(raw, "checksum"),
            checksum_type=_str(raw, "checksum_type"),
            size=_int(raw, "size"),
            entries=_int(raw, "entries"),
            files=_int(raw, "files"),
            source_bytes=_int(raw, "source_bytes"),
            changed=_strings(raw, "changed"),
            changed_count=_int(raw, "changed_count"),
            skipped=_skipped(raw),
            skipped_count=_int(raw, "skipped_count"),
            reused_members=_int(raw, "reused_members"),
            reused_bytes=_int(raw, "reused_bytes"),
            raw=raw,
        )


@dataclass(frozen=True)
class ExtractSummary(_Result):
    """The result of :func:`archive_extract`. ``skipped`` counts FIFOs,
    devices and unknown entry types left out."""

    entries: int
    files: int
    directories: int
    symlinks: int
    hard_links: int
    bytes: int
    skipped: int
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def _from_json(cls, raw: Any) -> "ExtractSummary":
        raw = raw if isinstance(raw, dict) else {}
        return cls(**{k: _int(raw, k) for k in ("entries", "files", "directories", "symlinks",
                                                 "hard_links", "bytes", "skipped")}, raw=raw)


@dataclass(frozen=True)
class PendingReports(_Result):
    """The result of :meth:`Engine.send_pending_reports`."""

    #: Reports delivered (or settled by a final Panel answer).
    sent: int
    #: Reports still parked.
    pending: int
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def _from_json(cls, raw: Any) -> "PendingReports":
        raw = raw if isinstance(raw, dict) else {}
        return cls(sent=_int(raw, "sent"), pending=_int(raw, "pending"), raw=raw)


_FINISHED = ("succeeded", "failed", "cancelled")


def _opt_str(raw: Mapping[str, Any], key: str) -> Optional[str]:
    value = raw.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class BackupState(_Result):
    """What the engine knows of a backup (:meth:`Engine.backup_status`,
    :meth:`Engine.wait_backup`, :meth:`Engine.list_backups`): its newest
    operation, a create or a restore of it, or else its local archive."""

    uuid: str
    server: str
    #: ``"create"`` or ``"restore"``.
    kind: str
    adapter: str
    #: ``"queued"``, ``"running"``, ``"succeeded"``, ``"failed"`` or ``"cancelled"``.
    state: str
    #: The last progress phase: ``"started"``, ``"archive"``, ..., ``"done"``.
    phase: str
    bytes_done: int
    bytes_total: int
    files: int
    size: int
    checksum: str
    #: The message of a failed or cancelled operation, and its status.
    error: Optional[str]
    error_status: Optional[int]
    #: RFC 3339, UTC; ``finished_at`` is None until the operation ends.
    started_at: str
    finished_at: Optional[str]
    panel_report: Optional[str]
    #: Grows at each change (see :meth:`Engine.wait_backup`).
    seq: int
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED

    @classmethod
    def _from_json(cls, raw: Any) -> "BackupState":
        raw = raw if isinstance(raw, dict) else {}
        status = raw.get("error_status")
        return cls(
            uuid=_str(raw, "uuid"), server=_str(raw, "server"), kind=_str(raw, "kind"),
            adapter=_str(raw, "adapter"), state=_str(raw, "state"), phase=_str(raw, "phase"),
            bytes_done=_int(raw, "bytes_done"), bytes_total=_int(raw, "bytes_total"),
            files=_int(raw, "files"), size=_int(raw, "size"), checksum=_str(raw, "checksum"),
            error=_opt_str(raw, "error"),
            error_status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            started_at=_str(raw, "started_at"), finished_at=_opt_str(raw, "finished_at"),
            panel_report=_opt_str(raw, "panel_report"), seq=_int(raw, "seq"), raw=raw,
        )
