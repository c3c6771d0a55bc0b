"""Dry runs through the binding and the command line: what a backup would
hold, against what the real backup then holds (``tar -tzf``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import wings_backup as wb
from conftest import Node, create_request, new_uuid, write_tree
from test_cli import cli

FILES = {
    "server.properties": "motd=x\n",
    "world/level.dat": os.urandom(30_000),
    "logs/latest.log": "noise",
    "logs/old/1.log": "older",
    "cache/a.bin": b"\x00" * 5000,
    "cache/keep.txt": "keep",
}
RULES = "logs/\ncache/*\n!cache/keep.txt\n"


def tar_members(archive: Path) -> list:
    out = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True)
    return [line.rstrip("/") for line in out.stdout.splitlines()]


def test_engine_dry_run_matches_the_backup_and_writes_nothing(node: Node, engine: wb.Engine) -> None:
    server = node.server(FILES)
    backup = new_uuid()
    report = engine.dry_run(server, {**create_request(backup, RULES), "dry_run": True})
    assert isinstance(report, wb.DryRunReport)
    assert sorted(report.ignored) == ["cache/a.bin", "logs"]
    assert report.ignored_count == 2
    assert list(node.backups.glob("*.tar.gz")) == []

    details = engine.create_backup(server, create_request(backup, RULES))
    names = tar_members(node.archive(backup))
    assert report.entries == len(names)
    assert report.files == details.files == 3
    with tarfile.open(node.archive(backup)) as t:
        assert report.bytes == sum(m.size for m in t.getmembers() if m.isfile())
    assert report.estimated_size >= details.size
    assert report.raw["ignored_count"] == 2


def test_engine_dry_run_errors(node: Node, engine: wb.Engine) -> None:
    with pytest.raises(wb.NotFoundError):
        engine.dry_run(new_uuid(), create_request(new_uuid()))
    server = node.server()
    with pytest.raises(wb.InvalidArgumentError):
        engine.dry_run(server, {**create_request(new_uuid()), "dry_run": "yes"})
    # A create asked for a dry run makes no backup.
    with pytest.raises(wb.InvalidArgumentError):
        engine.create_backup(server, {**create_request(new_uuid()), "dry_run": True})
    with wb.CancelToken() as token:
        token.cancel()
        with pytest.raises(wb.CancelledError):
            engine.dry_run(server, create_request(new_uuid()), cancel=token)


def test_cli_create_dry_run(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", FILES)
    (tmp_path / "ignore").write_text(RULES)
    r = cli("create", "src", "out.tar.gz", "--ignore", "ignore", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "out.tar.gz").exists()
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert lines["files"] == "3" and lines["ignored_count"] == "2"
    assert "2 entries ignored" in r.stderr and "nothing written" in r.stderr

    r = cli("create", "src", "out.tar.gz", "--ignore", "ignore", "--dry-run", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    r = cli("create", "src", "out.tar.gz", "--ignore", "ignore", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (report["files"], report["entries"], report["bytes"]) == (
        summary["files"], summary["entries"], summary["source_bytes"])
    assert len(tar_members(tmp_path / "out.tar.gz")) == report["entries"]
    assert report["estimated_size"] >= summary["size"]

    # The usual exit statuses: a missing source is "not found".
    r = cli("create", "nowhere", "out.tar.gz", "--dry-run", cwd=tmp_path)
    assert r.returncode == 4, r.stderr


def test_cli_dry_run_that_would_skip_exits_3(tmp_path: Path) -> None:
    import socket

    write_tree(tmp_path / "src", {"a": "a"})
    path = tmp_path / "src" / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        r = cli("create", "src", "o.tar.gz", "--dry-run", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "s.sock" in r.stderr and "would be skipped" in r.stderr
    assert not (tmp_path / "o.tar.gz").exists()
    assert sys.executable
