"""Typed results (the Go binding's types, as dataclasses), the progress
callback contract shared with Go, and the reports of the archive calls."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from pathlib import Path
from typing import List

import pytest

import wings_backup as wb
from conftest import Node, create_request, new_uuid, read_tree, write_tree


def test_archive_create_and_extract_return_typed_results(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.txt": "alpha", "dir/b.bin": os.urandom(10_000)})
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(src / "game.sock"))
        summary = wb.archive_create(src, tmp_path / "a.tar.gz")
    finally:
        sock.close()
    data = (tmp_path / "a.tar.gz").read_bytes()
    assert isinstance(summary, wb.ArchiveSummary) and dataclasses.is_dataclass(summary)
    assert summary.checksum == hashlib.sha1(data).hexdigest()
    assert summary.checksum_type == "sha1"
    assert summary.size == len(data)
    assert (summary.files, summary.entries, summary.source_bytes) == (2, 3, 10_005)
    assert summary.changed == [] and summary.changed_count == 0
    assert summary.skipped == [wb.Skipped("game.sock", "a socket (not archived)")]
    assert summary.skipped_count == 1
    # The library's JSON stays available, and so does dict-style access.
    assert summary.raw["checksum"] == summary.checksum
    assert summary["size"] == len(data) and summary.get("nope", 7) == 7 and "files" in summary
    assert summary["skipped"] == [{"path": "game.sock", "reason": "a socket (not archived)"}]

    dest = tmp_path / "dest"
    dest.mkdir()
    result = wb.archive_extract(tmp_path / "a.tar.gz", dest)
    assert isinstance(result, wb.ExtractSummary)
    assert (result.entries, result.files, result.directories, result.bytes, result.skipped) == (3, 2, 1, 10_005, 0)
    assert (result.symlinks, result.hard_links) == (0, 0)
    assert result["files"] == 2 and result.raw["bytes"] == 10_005


def test_engine_results_are_typed(node: Node, engine: wb.Engine) -> None:
    server = node.server({"a.txt": "alpha"})
    details = engine.create_backup(server, create_request(new_uuid()))
    assert isinstance(details, wb.Details)
    assert details.successful is True and details.parts is None and details.files == 1
    assert details.checksum_type == "sha1" and len(details.checksum) == 40
    assert details.skipped == [] and details.changed == [] and details.panel_report == ""
    assert details["successful"] is True and details.raw["size"] == details.size
    pending = engine.send_pending_reports()
    assert isinstance(pending, wb.PendingReports) and (pending.sent, pending.pending) == (0, 0)
    assert pending["sent"] == 0
    engine.resend_parked_reports()  # no Panel: nothing to do, nothing left running
    assert engine.wait_idle(0)


def test_parts_and_skipped_from_json() -> None:
    raw = {"checksum": "c", "checksum_type": "sha1", "size": 9, "successful": True, "files": 1,
           "parts": [{"etag": "\"e1\"", "part_number": 1}], "changed": ["x"],
           "skipped": [{"path": "s", "reason": "r"}], "panel_report": "sent", "future_field": 1}
    d = wb.Details._from_json(raw)
    assert d.parts == [wb.Part('"e1"', 1)]
    assert d.skipped == [wb.Skipped("s", "r")] and d.changed == ["x"] and d.panel_report == "sent"
    assert d["future_field"] == 1


def test_a_callback_returning_false_stops_the_call_with_cancelled(tmp_path: Path) -> None:
    """The contract shared with Go's func(Progress) bool: False stops (the
    call raises CancelledError), None or True go on, raising stops and the
    exception is raised again."""
    write_tree(tmp_path / "src", {"a.txt": "a", "b.bin": os.urandom(1 << 20)})
    seen: List[wb.Phase] = []

    def stop_at_archive(p: wb.Progress) -> bool:
        seen.append(p.phase)
        return p.phase != wb.Phase.ARCHIVE

    with pytest.raises(wb.CancelledError):
        wb.archive_create(tmp_path / "src", tmp_path / "a.tar.gz", progress=stop_at_archive)
    assert seen[-1] == wb.Phase.ARCHIVE and wb.Phase.DONE not in seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    # None and True go on.
    assert wb.archive_create(tmp_path / "src", tmp_path / "n.tar.gz", progress=lambda p: None).files == 2
    assert wb.archive_create(tmp_path / "src", tmp_path / "t.tar.gz", progress=lambda p: True).files == 2

    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(wb.CancelledError):
        wb.archive_extract(tmp_path / "t.tar.gz", dest, progress=lambda p: p.phase != wb.Phase.EXTRACT)
    assert list(dest.iterdir()) == []


def test_archive_calls_report_started_first_and_archive_bytes(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", {"a.bin": os.urandom(2 << 20), "b.txt": "b"})
    reports: List[wb.Progress] = []
    summary = wb.archive_create(tmp_path / "src", tmp_path / "a.tar.gz", progress=reports.append)
    assert reports[0].phase == wb.Phase.STARTED and reports[-1].phase == wb.Phase.DONE
    last = [p for p in reports if p.phase == wb.Phase.ARCHIVE][-1]
    assert (last.bytes_done, last.bytes_total) == (summary.source_bytes, summary.source_bytes)
    assert last.archive_bytes == summary.size == reports[-1].archive_bytes

    reports.clear()
    dest = tmp_path / "dest"
    dest.mkdir()
    wb.archive_extract(tmp_path / "a.tar.gz", dest, progress=reports.append)
    assert reports[0].phase == wb.Phase.STARTED and reports[-1].phase == wb.Phase.DONE
    last = [p for p in reports if p.phase == wb.Phase.EXTRACT][-1]
    assert last.archive_bytes == summary.size
    assert read_tree(dest)["b.txt"] == b"b"
