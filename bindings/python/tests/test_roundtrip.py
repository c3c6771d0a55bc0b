"""Backups, restores and archives that work, and what they report."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import List

import pytest

import wings_backup as wb
from conftest import Node, create_request, new_uuid, read_tree, restore_request, write_tree


def test_library_is_loaded() -> None:
    assert wb.LIBRARY_PATH.is_file()
    assert wb.library_version().count(".") == 2
    assert wb.ABI_VERSION == 1


def test_deflate_backend_names_the_build() -> None:
    """One of the two builds; with WB_EXPECT_DEFLATE set (when testing the
    pure-Rust build, say), exactly that one."""
    backend = wb.deflate_backend()
    assert backend in ("isal", "zlib-rs")
    want = os.environ.get("WB_EXPECT_DEFLATE")
    if want:
        assert backend == want


def test_backup_restore_delete_round_trip(node: Node, engine: wb.Engine) -> None:
    files = {"a.txt": "alpha", "plugins/p.jar": os.urandom(100_000), "world/region/r.0.0.mca": b"\x01" * 70_000}
    server = node.server(files)
    backup = new_uuid()

    engine.check_create(server, create_request(backup))
    details = engine.create_backup(server, create_request(backup))

    archive = node.archive(backup)
    data = archive.read_bytes()
    assert details["successful"] is True
    assert details["checksum_type"] == "sha1"
    assert details["checksum"] == hashlib.sha1(data).hexdigest()
    assert details["size"] == len(data)
    assert details["parts"] is None
    assert details["files"] == 3
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"a.txt", "plugins", "plugins/p.jar", "world/region/r.0.0.mca"} <= names

    root = node.root(server)
    (root / "a.txt").write_text("changed")
    (root / "new.txt").write_text("made after the backup")
    engine.check_restore(server, backup, restore_request(truncate=True))
    engine.restore_backup(server, backup, restore_request(truncate=True))
    assert read_tree(root) == {k: (v.encode() if isinstance(v, str) else v) for k, v in files.items()}

    engine.delete_backup(server, backup)
    assert not archive.exists()
    with pytest.raises(wb.NotFoundError) as e:
        engine.delete_backup(server, backup)
    assert e.value.message == "The requested backup was not found on this server."


def test_restore_without_truncate_merges(node: Node, engine: wb.Engine) -> None:
    server = node.server({"keep.txt": "old", "a.txt": "from the backup"})
    backup = new_uuid()
    engine.create_backup(server, create_request(backup))
    root = node.root(server)
    (root / "a.txt").write_text("overwritten by the restore")
    (root / "extra.txt").write_text("stays")
    engine.restore_backup(server, backup, restore_request(truncate=False))
    assert (root / "a.txt").read_text() == "from the backup"
    assert (root / "extra.txt").read_text() == "stays"


@pytest.mark.parametrize("kind", ["dict", "str", "bytes"])
def test_requests_and_config_in_every_form(node: Node, kind: str) -> None:
    def form(doc: dict) -> object:
        text = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in doc.items()})
        return {"dict": doc, "str": text, "bytes": text.encode()}[kind]

    with wb.Engine(form(node.config())) as engine:  # type: ignore[arg-type]
        server = node.server()
        backup = new_uuid()
        details = engine.create_backup(server, form(create_request(backup)))  # type: ignore[arg-type]
        assert details["successful"]
        engine.restore_backup(server, backup, form(restore_request()))  # type: ignore[arg-type]


def test_engine_constructors(node: Node) -> None:
    config = {k: str(v) for k, v in node.config().items() if k != "threads"}
    with wb.Engine.from_dict(config) as a, wb.Engine.from_json(json.dumps(config)) as b:
        assert not a.closed and not b.closed
    assert a.closed and b.closed


def test_ignore_rules_leave_files_out(node: Node, engine: wb.Engine) -> None:
    server = node.server({"keep.txt": "k", "logs/latest.log": "l", "cache/x.bin": "c", "a.tmp": "t"})
    backup = new_uuid()
    engine.create_backup(server, create_request(backup, ignore="logs/\n*.tmp\n/cache"))
    with tarfile.open(node.archive(backup)) as tar:
        names = set(tar.getnames())
    assert "keep.txt" in names
    assert not names & {"logs", "logs/latest.log", "cache", "cache/x.bin", "a.tmp"}


def test_progress_reports(node: Node, engine: wb.Engine) -> None:
    server = node.server({f"dir{i}/file{j}.bin": os.urandom(20_000) for i in range(5) for j in range(20)})
    backup = new_uuid()
    reports: List[wb.Progress] = []
    engine.create_backup(server, create_request(backup), progress=reports.append)
    assert reports[0].phase == wb.Phase.STARTED
    assert reports[-1].phase == wb.Phase.DONE
    assert reports[-1].entries_done >= 100
    assert_monotonic(reports)

    reports.clear()
    engine.restore_backup(server, backup, restore_request(truncate=True), progress=reports.append)
    assert [reports[0].phase, reports[-1].phase] == [wb.Phase.STARTED, wb.Phase.DONE]
    assert wb.Phase.EXTRACT in {r.phase for r in reports}
    assert_monotonic(reports)


def assert_monotonic(reports: List[wb.Progress]) -> None:
    for prev, cur in zip(reports, reports[1:]):
        assert isinstance(cur.phase, wb.Phase) and isinstance(cur.phase, int)
        assert cur.phase >= prev.phase, f"phase went back: {prev} -> {cur}"
        if cur.phase == prev.phase:
            assert cur.bytes_done >= prev.bytes_done, f"{prev} -> {cur}"
            assert cur.entries_done >= prev.entries_done, f"{prev} -> {cur}"
        if cur.bytes_total:
            assert cur.fraction is not None and 0.0 <= cur.fraction <= 1.0


def test_progress_dataclass() -> None:
    p = wb.Progress(wb.Phase.ARCHIVE, 50, 200, 3)
    assert p.fraction == 0.25
    assert wb.Progress(wb.Phase.ARCHIVE, 5, 0, 0).fraction is None
    assert p.phase.name == "ARCHIVE" and p.phase == 1
    with pytest.raises(AttributeError):
        p.bytes_done = 1  # type: ignore[misc]
    # A phase from a newer library is kept as a number, not an error.
    future = wb.Phase(42)
    assert future == 42 and future.name == "PHASE_42"


def test_archive_round_trip(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, {"a.txt": "a", "sub/b.bin": os.urandom(50_000), "skip.log": "no"})
    (src / "empty").mkdir()
    os.symlink("a.txt", src / "link")
    archive = tmp_path / "out.tar.gz"
    reports: List[wb.Progress] = []

    summary = wb.archive_create(src, archive, {"ignore": "*.log", "compression_level": "best_compression"},
                                progress=reports.append)
    assert summary["checksum"] == hashlib.sha1(archive.read_bytes()).hexdigest()
    assert summary["size"] == archive.stat().st_size
    assert summary["files"] == 2
    assert summary["changed_count"] == 0 and summary["skipped_count"] == 0
    assert_monotonic(reports)

    dst.mkdir()
    result = wb.archive_extract(str(archive), str(dst), None)
    assert result["files"] == 2 and result["symlinks"] == 1 and result["directories"] >= 2
    assert (dst / "a.txt").read_text() == "a"
    assert (dst / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert (dst / "empty").is_dir()
    assert os.readlink(dst / "link") == "a.txt"
    assert not (dst / "skip.log").exists()


def test_archive_extract_truncate_replaces(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, {"new.txt": "n"})
    write_tree(dst, {"old.txt": "o"})
    wb.archive_create(src, tmp_path / "a.tar.gz")
    wb.archive_extract(tmp_path / "a.tar.gz", dst, {"truncate": True})
    assert read_tree(dst) == {"new.txt": b"n"}


def test_archive_create_replaces_an_existing_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a": "1"})
    out = tmp_path / "a.tar.gz"
    out.write_bytes(b"old")
    wb.archive_create(src, out)
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["a"]


def test_send_pending_reports_without_a_panel(engine: wb.Engine) -> None:
    assert engine.send_pending_reports() == wb.PendingReports(sent=0, pending=0, raw={})
    with wb.CancelToken() as token:
        assert engine.send_pending_reports(cancel=token)["sent"] == 0


def test_a_second_backup_reuses_the_first(node: Node, engine: wb.Engine) -> None:
    """The second backup of an unchanged server copies the first one's
    members (``reused_members``, ``reused_bytes``); ``"reuse": false`` reads
    everything again, and both hold the same tar stream."""
    import gzip

    # A file of 1 MiB or more is cut into members of its own (two here).
    files = {"plugins/p.jar": os.urandom(1_500_000), "a.txt": "alpha", "world/level.dat": b"\x02" * 9000}
    server = node.server(files)
    first, second, third = new_uuid(), new_uuid(), new_uuid()
    d1 = engine.create_backup(server, create_request(first))
    assert (d1.reused_members, d1.reused_bytes) == (0, 0)
    d2 = engine.create_backup(server, create_request(second))
    assert d2.reused_members >= 2 and 0 < d2.reused_bytes <= d2.size
    d3 = engine.create_backup(server, dict(create_request(third), reuse=False))
    assert (d3.reused_members, d3.reused_bytes) == (0, 0)
    tars = [gzip.decompress(node.archive(b).read_bytes()) for b in (first, second, third)]
    assert tars[0] == tars[1] == tars[2]
