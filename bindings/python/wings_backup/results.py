"""Typed results of the long calls, the same types as the Go binding's
(``Details``, ``ArchiveSummary``, ``ExtractSummary``, ``PendingReports``,
``BackupState``, ``DryRunReport``, ``Skipped``, ``Part``, ``FileEntry``, ``FileListing``,
``VerifyError``, ``VerifyReport``, ``HttpResponse``, ``HttpEvent``).

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
class DryRunReport(_Result):
    """The result of :meth:`Engine.dry_run`: what a backup with the same
    ignore rules would hold, from a walk that reads no file data. An
    ignored directory is one path of ``ignored`` (its contents are not
    walked); ``ignored`` lists the first 1,000, ``skipped`` the first 100;
    the counts are complete."""

    #: Entries the archive would hold (files, directories, links, FIFOs).
    entries: int
    #: Regular files whose data it would hold.
    files: int
    #: Bytes of file data.
    bytes: int
    #: The estimate of the archive's size (that of a create's space check).
    estimated_size: int
    ignored: List[str]
    ignored_count: int
    skipped: List[Skipped]
    skipped_count: int
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def _from_json(cls, raw: Any) -> "DryRunReport":
        raw = raw if isinstance(raw, dict) else {}
        return cls(
            entries=_int(raw, "entries"),
            files=_int(raw, "files"),
            bytes=_int(raw, "bytes"),
            estimated_size=_int(raw, "estimated_size"),
            ignored=_strings(raw, "ignored"),
            ignored_count=_int(raw, "ignored_count"),
            skipped=_skipped(raw),
            skipped_count=_int(raw, "skipped_count"),
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


@dataclass(frozen=True)
class HttpResponse:
    """The answer :meth:`Engine.handle_http` gives: send ``status``,
    ``headers`` and ``body`` as they are. ``started`` names a create or
    restore the request started (``kind``, ``server``, ``backup``); ``stream``
    (``server``, ``backup``, ``seq``) means an event stream goes on after
    ``body`` (:meth:`Engine.next_http_event`)."""

    status: int
    headers: List[List[str]]
    body: bytes
    started: Optional[Dict[str, str]]
    stream: Optional[Dict[str, Any]]

    @classmethod
    def _from_json(cls, raw: Any) -> "HttpResponse":
        return cls(status=raw["status"], headers=[list(h) for h in raw["headers"]],
                   body=raw["body"].encode("utf-8"), started=raw.get("started"), stream=raw.get("stream"))


@dataclass(frozen=True)
class HttpEvent:
    """An event of a stream (:meth:`Engine.next_http_event`): ``chunk`` is
    None when nothing changed in time; the stream ends after ``done``."""

    chunk: Optional[bytes]
    seq: int
    done: bool


@dataclass(frozen=True)
class FileEntry:
    """One entry of a directory listing (:meth:`Engine.list_files`):
    ``type`` is ``"file"``, ``"dir"``, ``"symlink"``, ``"hardlink"`` or
    ``"fifo"``; ``mode`` the permission bits; ``mtime`` seconds since the
    epoch; ``link`` the target of a link, else None."""

    name: str
    type: str
    size: int
    mode: int
    mtime: int
    link: Optional[str]

    @classmethod
    def _from_json(cls, raw: Any) -> "FileEntry":
        raw = raw if isinstance(raw, Mapping) else {}
        link = raw.get("link")
        return cls(_str(raw, "name"), _str(raw, "type"), _int(raw, "size"), _int(raw, "mode"),
                   _int(raw, "mtime"), link if isinstance(link, str) else None)


@dataclass(frozen=True)
class FileListing(_Result):
    """The entries directly under ``path`` (normalised: ``"/"``,
    ``"/world"``), sorted by name."""

    path: str
    entries: List[FileEntry]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def _from_json(cls, raw: Any) -> "FileListing":
        raw = raw if isinstance(raw, dict) else {}
        entries = raw.get("entries")
        return cls(_str(raw, "path"),
                   [FileEntry._from_json(e) for e in entries] if isinstance(entries, list) else [],
                   raw=raw)


@dataclass(frozen=True)
class VerifyError:
    """One problem a verify found: the gzip ``member`` it is in (from 0)
    and where that member starts in the file (``offset``), both None for a
    problem outside the members; ``path`` the entry it is in, when known."""

    member: Optional[int]
    offset: Optional[int]
    path: Optional[str]
    message: str

    @classmethod
    def _from_json(cls, raw: Any) -> "VerifyError":
        raw = raw if isinstance(raw, Mapping) else {}

        def opt_int(key: str) -> Optional[int]:
            v = raw.get(key)
            return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

        path = raw.get("path")
        return cls(opt_int("member"), opt_int("offset"), path if isinstance(path, str) else None,
                   _str(raw, "message"))


@dataclass(frozen=True)
class VerifyReport(_Result):
    """The result of :meth:`Engine.verify_backup` and :func:`archive_verify`:
    ``ok`` when nothing was found; ``errors`` lists at most 100 problems,
    ``error_count`` counts them all; ``indexed`` whether the archive was
    checked against its index."""

    ok: bool
    members: int
    files: int
    bytes: int
    indexed: bool
    error_count: int
    errors: List[VerifyError]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def _from_json(cls, raw: Any) -> "VerifyReport":
        raw = raw if isinstance(raw, dict) else {}
        errors = raw.get("errors")
        return cls(raw.get("ok") is True, _int(raw, "members"), _int(raw, "files"),
                   _int(raw, "bytes"), raw.get("indexed") is True, _int(raw, "error_count"),
                   [VerifyError._from_json(e) for e in errors] if isinstance(errors, list) else [],
                   raw=raw)
