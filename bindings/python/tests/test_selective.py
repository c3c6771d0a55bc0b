"""Selective restore: ``paths=`` on the engine and archive calls, and the
CLI's ``restore --path``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import wings_backup as wb
from conftest import Node, create_request, new_uuid, read_tree, restore_request, write_tree
from test_cli import cli


def test_restore_backup_takes_paths(node: Node, engine: wb.Engine) -> None:
    files = {"ops.json": "[]", "world/level.dat": os.urandom(40_000), "world/region/r.0.0.mca": b"\x02" * 9000,
             "plugins/p.jar": "jar"}
    server = node.server(files)
    backup = new_uuid()
    engine.create_backup(server, create_request(backup))
    root = node.root(server)
    (root / "world/level.dat").write_bytes(b"damaged")
    (root / "world/later.txt").write_text("made after the backup")
    (root / "ops.json").write_text("changed")
    keep = os.stat(root / "ops.json")

    engine.check_restore(server, backup, restore_request(truncate=True), paths=["/world/"])
    engine.restore_backup(server, backup, restore_request(truncate=True), paths=["/world/"])
    tree = read_tree(root)
    assert tree["world/level.dat"] == files["world/level.dat"]
    assert "world/later.txt" not in tree
    assert tree["ops.json"] == b"changed"
    after = os.stat(root / "ops.json")
    assert (after.st_ino, after.st_mtime_ns) == (keep.st_ino, keep.st_mtime_ns)

    # The request's own `paths` (JSON text), merging: later.txt stays.
    (root / "world/later.txt").write_text("made after the backup")
    (root / "world/level.dat").write_bytes(b"damaged")
    body = json.dumps({"adapter": "wings", "paths": ["world/level.dat"]})
    engine.restore_backup(server, backup, body)
    assert (root / "world/level.dat").read_bytes() == files["world/level.dat"]
    assert (root / "world/later.txt").read_text() == "made after the backup"

    before = read_tree(root)
    with pytest.raises(wb.NotFoundError):
        engine.restore_backup(server, backup, restore_request(), paths=["not-in-backup"])
    with pytest.raises(wb.InvalidArgumentError):
        engine.restore_backup(server, backup, restore_request(), paths=["../x"])
    with pytest.raises(wb.InvalidArgumentError):
        engine.restore_backup(server, backup, restore_request(), paths="world")  # type: ignore[arg-type]
    assert read_tree(root) == before


def test_archive_extract_takes_paths(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", {"a.txt": "alpha", "world/level.dat": "level", "world/r/x.mca": "x"})
    archive = tmp_path / "a.tar.gz"
    wb.archive_create(tmp_path / "src", archive)
    dest = tmp_path / "dest"
    write_tree(dest, {"world/mine.txt": "mine", "b.txt": "b"})
    summary = wb.archive_extract(archive, dest, {"truncate": True}, paths=["world"])
    assert summary.files == 2
    assert read_tree(dest) == {"b.txt": b"b", "world/level.dat": b"level", "world/r/x.mca": b"x"}


def test_cli_restore_path(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", {"a.txt": "alpha", "ops.json": "[]", "world/level.dat": "level"})
    r = cli("create", "src", "out.tar.gz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.tar.gz.index").is_file()
    dest = tmp_path / "dest"
    write_tree(dest, {"a.txt": "mine", "world/level.dat": "damaged", "world/new.txt": "new"})
    r = cli("restore", "out.tar.gz", "dest", "--truncate", "--path", "world", "--path", "/ops.json",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 files" in r.stdout
    assert read_tree(dest) == {"a.txt": b"mine", "ops.json": b"[]", "world/level.dat": b"level"}
    r = cli("restore", "out.tar.gz", "dest", "--path", "nope", cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    r = cli("restore", "out.tar.gz", "dest", "--path", "../x", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert read_tree(dest) == {"a.txt": b"mine", "ops.json": b"[]", "world/level.dat": b"level"}
