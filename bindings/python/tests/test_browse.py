"""Browse and verify through the binding (Engine.list_files,
Engine.verify_backup, archive_list, archive_verify) and the command line
(``ls``, ``verify`` and their exit statuses), compared with Python's own
tarfile reading the same archives."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest

import wings_backup as wb
from conftest import Node, create_request, new_uuid, write_tree
from test_cli import cli


def tar_children(archive: Path, directory: str) -> Dict[str, tarfile.TarInfo]:
    """What tarfile says is directly under `directory`."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    out = {}
    for m in members:
        path = m.name.strip("/")
        if path.startswith("./"):
            path = path[2:]
        parent, _, name = path.rpartition("/")
        if path and parent == directory:
            out[name] = m
    return out


def kind_of(m: tarfile.TarInfo) -> str:
    return {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
            tarfile.LNKTYPE: "hardlink", tarfile.FIFOTYPE: "fifo"}[m.type]


def assert_same(listing: wb.FileListing, archive: Path, directory: str) -> None:
    want = tar_children(archive, directory)
    assert [e.name for e in listing.entries] == sorted(want)
    for e in listing.entries:
        m = want[e.name]
        assert (e.type, e.size, e.mode, e.mtime) == (kind_of(m), m.size if m.isfile() else 0,
                                                     m.mode, int(m.mtime)), e.name
        assert e.link == (m.linkname if m.issym() or m.islnk() else None)


FILES = {"server.properties": "motd=hi\n", "world/level.dat": b"\x00" * 5000,
         "world/region/r.0.0.mca": os.urandom(300_000), "plugins/a/b/c.yml": "c: 1\n"}


def test_list_files_of_nested_directories(node: Node, engine: wb.Engine) -> None:
    server = node.server(FILES)
    os.symlink("world/level.dat", node.root(server) / "link")
    backup = new_uuid()
    engine.create_backup(server, create_request(backup))
    archive = node.archive(backup)
    for directory in ("", "world", "world/region", "plugins", "plugins/a", "plugins/a/b"):
        listing = engine.list_files(server, backup, directory)
        assert listing.path == "/" + directory
        assert_same(listing, archive, directory)
    assert engine.list_files(server, backup, "/world/").entries == \
        engine.list_files(server, backup, "world").entries
    link = [e for e in engine.list_files(server, backup, "").entries if e.name == "link"][0]
    assert (link.type, link.link) == ("symlink", "world/level.dat")
    with pytest.raises(wb.NotFoundError) as e:
        engine.list_files(server, backup, "nope")
    assert e.value.message == "The requested path was not found in the backup."
    with pytest.raises(wb.InvalidArgumentError):
        engine.list_files(server, backup, "world/../..")


def test_verify_backup_passes_and_finds_a_flipped_byte(node: Node, engine: wb.Engine) -> None:
    server = node.server(FILES)
    backup = new_uuid()
    engine.create_backup(server, create_request(backup))
    phases: List[wb.Phase] = []
    report = engine.verify_backup(server, backup, progress=lambda p: phases.append(p.phase))
    assert report.ok and report.indexed and report.error_count == 0 and report.errors == []
    assert report.files == 4 and report.bytes == 5000 + 300_000 + len("motd=hi\n") + len("c: 1\n")
    assert report.members >= 1
    assert phases[0] == wb.Phase.STARTED and phases[-1] == wb.Phase.DONE

    archive = node.archive(backup)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    report = engine.verify_backup(server, backup)
    assert not report.ok and report.error_count >= 1
    assert report.errors[0].member is not None and report.errors[0].offset is not None
    assert report.raw["errors"][0]["message"] == report.errors[0].message

    with pytest.raises(wb.NotFoundError):
        engine.verify_backup(server, new_uuid())
    with wb.CancelToken() as token:
        token.cancel()
        with pytest.raises(wb.CancelledError):
            engine.verify_backup(server, backup, cancel=token)


def test_archive_list_and_verify_of_a_tarfile_archive(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", FILES)
    archive = tmp_path / "py.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname=".")
    assert not Path(str(archive) + ".index").exists()
    assert_same(wb.archive_list(archive, "world"), archive, "world")
    assert Path(str(archive) + ".index").exists()  # indexed on first use
    report = wb.archive_verify(archive)
    assert report.ok and report.indexed and report.members == 1 and report.files == 4


def test_cli_ls_and_verify(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", FILES)
    r = cli("create", "src", "out.tar.gz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("ls", "out.tar.gz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = [line.split()[-1] for line in r.stdout.splitlines()]
    assert names == ["plugins/", "server.properties", "world/"]
    r = cli("ls", "out.tar.gz", "world/region", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("-rw-") and r.stdout.split()[1] == "300000"
    assert r.stdout.rstrip().endswith(" r.0.0.mca")
    r = cli("ls", "out.tar.gz", "world", "--json", cwd=tmp_path)
    assert [e["name"] for e in json.loads(r.stdout)["entries"]] == ["level.dat", "region"]
    r = cli("ls", "out.tar.gz", "missing", cwd=tmp_path)
    assert r.returncode == 4 and "not found" in r.stderr
    r = cli("ls", "out.tar.gz", "../x", cwd=tmp_path)
    assert r.returncode == 2

    r = cli("verify", "out.tar.gz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ") and "against its index" in r.stdout
    archive = tmp_path / "out.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    r = cli("verify", "out.tar.gz", cwd=tmp_path)
    assert r.returncode == 6, r.stderr
    assert "damaged" in r.stderr and "member " in r.stderr
    r = cli("verify", "out.tar.gz", "--json", cwd=tmp_path)
    assert r.returncode == 6 and json.loads(r.stdout)["ok"] is False
    r = cli("verify", cwd=tmp_path)
    assert r.returncode == 2
    r = cli("verify", "nothing.tar.gz", cwd=tmp_path)
    assert r.returncode == 4
