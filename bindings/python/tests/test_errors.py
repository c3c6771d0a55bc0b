"""Every error kind the library can be made to return, and the mapping from
status codes to exception classes and HTTP statuses."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import threading
from pathlib import Path

import pytest

import wings_backup as wb
from conftest import Node, create_request, new_uuid, read_tree, restore_request, write_tree

EXPECTED = [
    (wb.Status.INVALID_ARGUMENT, wb.InvalidArgumentError, 400),
    (wb.Status.NOT_FOUND, wb.NotFoundError, 404),
    (wb.Status.CONFLICT, wb.ConflictError, 409),
    (wb.Status.CORRUPT_ARCHIVE, wb.CorruptArchiveError, 422),
    (wb.Status.UNSAFE_ENTRY, wb.UnsafeEntryError, 422),
    (wb.Status.QUOTA, wb.QuotaError, 507),
    (wb.Status.REMOTE, wb.RemoteError, 502),
    (wb.Status.CANCELLED, wb.CancelledError, 503),
    (wb.Status.IO, wb.BackupIOError, 500),
    (wb.Status.INTERNAL, wb.InternalError, 500),
]


@pytest.mark.parametrize("status,cls,http", EXPECTED)
def test_status_mapping(status: wb.Status, cls: type, http: int) -> None:
    from wings_backup.errors import error_for

    e = error_for(status, "boom")
    assert type(e) is cls and isinstance(e, wb.WingsBackupError)
    assert e.status == status and e.message == "boom" and str(e) == "boom"
    assert e.http_status == http
    assert e.status_name == f"WB_{status.name}"
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is cls and again.message == "boom"


def test_unknown_status_is_the_base_class() -> None:
    from wings_backup.errors import error_for

    e = error_for(99, "from a newer library")
    assert type(e) is wb.WingsBackupError
    assert e.status == 99 and e.http_status == 500 and e.status_name == "WB_UNKNOWN"


def test_error_names_do_not_shadow_builtins() -> None:
    import builtins

    for _, cls, _ in EXPECTED:
        assert not hasattr(builtins, cls.__name__)


def test_invalid_argument(node: Node, engine: wb.Engine) -> None:
    server = node.server()
    cases = [
        "{",  # not JSON
        "[]",  # not an object
        {"adapter": "wings", "uuid": new_uuid()},  # missing field
        {"adapter": "ftp", "uuid": new_uuid(), "ignore": ""},  # unknown adapter
        {"adapter": "wings", "uuid": "../../etc/passwd", "ignore": ""},  # not a UUID
        {"adapter": "wings", "uuid": new_uuid(), "ignore": 5},  # wrong type
        b"\xff\xfe",  # not UTF-8
    ]
    for request in cases:
        with pytest.raises(wb.InvalidArgumentError) as e:
            engine.check_create(server, request)  # type: ignore[arg-type]
        assert e.value.http_status == 400
        with pytest.raises(wb.InvalidArgumentError):
            engine.create_backup(server, request)  # type: ignore[arg-type]
    with pytest.raises(wb.InvalidArgumentError):
        engine.check_restore(server, "not-a-uuid", restore_request())
    with pytest.raises(wb.InvalidArgumentError):
        engine.check_restore(server, new_uuid(), {"adapter": "wings", "truncate_directory": "yes"})
    with pytest.raises(wb.InvalidArgumentError):
        engine.delete_backup(server, "not-a-uuid")


def test_nul_bytes_are_refused_not_truncated(node: Node, engine: wb.Engine) -> None:
    server = node.server()
    valid = '{"adapter":"wings","uuid":"%s","ignore":""}' % new_uuid()
    with pytest.raises(wb.InvalidArgumentError, match="NUL"):
        engine.check_create(server, valid + "\0junk")
    with pytest.raises(wb.InvalidArgumentError, match="NUL"):
        engine.check_create(server + "\0", valid)


def test_bad_config(node: Node) -> None:
    with pytest.raises(wb.InvalidArgumentError, match="nope"):
        wb.Engine({"nope": 1})
    with pytest.raises(wb.InvalidArgumentError, match="compression_level"):
        wb.Engine(node.config(compression_level="fast"))
    with pytest.raises(wb.InvalidArgumentError):
        wb.Engine("not json")
    with pytest.raises(TypeError):
        wb.Engine(42)  # type: ignore[arg-type]


def test_wrong_types_are_type_errors(node: Node, engine: wb.Engine) -> None:
    # A required JSON argument given None is a wrong type, as 42 is: a
    # TypeError, never the library's InvalidArgumentError (a bad value).
    with pytest.raises(TypeError, match="config"):
        wb.Engine(None)  # type: ignore[arg-type]
    server = node.server()
    for call in (lambda: engine.check_create(server, None), lambda: engine.create_backup(server, None),
                 lambda: engine.check_restore(server, new_uuid(), None),
                 lambda: engine.restore_backup(server, new_uuid(), None)):
        with pytest.raises(TypeError, match="request") as e:
            call()  # type: ignore[arg-type]
        assert not isinstance(e.value, wb.WingsBackupError)
    with pytest.raises(TypeError, match="request"):
        engine.create_backup(server, 42)  # type: ignore[arg-type]


def test_not_found(node: Node, engine: wb.Engine, tmp_path: Path) -> None:
    server = node.server()
    for missing in [new_uuid(), "not-a-uuid", "../volumes"]:
        with pytest.raises(wb.NotFoundError) as e:
            engine.check_create(missing, create_request(new_uuid()))
        assert e.value.http_status == 404
    with pytest.raises(wb.NotFoundError):
        engine.check_restore(server, new_uuid(), restore_request())
    with pytest.raises(wb.NotFoundError):
        engine.restore_backup(server, new_uuid(), restore_request())
    with pytest.raises(wb.NotFoundError):
        engine.delete_backup(server, new_uuid())
    with pytest.raises(wb.NotFoundError):
        wb.archive_extract(tmp_path / "missing.tar.gz", tmp_path)
    with pytest.raises(wb.NotFoundError):
        wb.archive_create(tmp_path / "missing", tmp_path / "a.tar.gz")


def test_conflict_existing_uuid(node: Node, engine: wb.Engine) -> None:
    server = node.server()
    backup = new_uuid()
    engine.create_backup(server, create_request(backup))
    with pytest.raises(wb.ConflictError) as e:
        engine.check_create(server, create_request(backup))
    assert e.value.http_status == 409
    with pytest.raises(wb.ConflictError):
        engine.create_backup(node.server(), create_request(backup))


def test_conflict_busy_server(node: Node, engine: wb.Engine) -> None:
    """While one backup holds a server (parked in its STARTED callback),
    another backup or restore of that server is refused at once."""
    server = node.server()
    first, other = new_uuid(), new_uuid()
    engine.create_backup(server, create_request(other))
    holding, release = threading.Event(), threading.Event()

    def park(p: wb.Progress) -> None:
        if p.phase == wb.Phase.STARTED:
            holding.set()
            assert release.wait(30)

    worker = threading.Thread(target=engine.create_backup, args=(server, create_request(first), park))
    worker.start()
    try:
        assert holding.wait(30)
        with pytest.raises(wb.ConflictError):
            engine.check_create(server, create_request(new_uuid()))
        with pytest.raises(wb.ConflictError):
            engine.create_backup(server, create_request(new_uuid()))
        with pytest.raises(wb.ConflictError):
            engine.check_restore(server, other, restore_request())
        with pytest.raises(wb.ConflictError):
            engine.restore_backup(server, other, restore_request())
        with pytest.raises(wb.ConflictError):  # the same uuid, on another server
            engine.create_backup(node.server(), create_request(first))
    finally:
        release.set()
        worker.join(30)
    assert not worker.is_alive()
    assert node.archive(first).is_file()


def make_tar_gz(entries: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_corrupt_archive(node: Node, engine: wb.Engine, tmp_path: Path) -> None:
    server = node.server({"keep.txt": "precious"})
    good = make_tar_gz({"a.txt": b"x" * 100_000})
    for name, data in {
        "not-gzip": b"this is not an archive",
        "truncated": good[: len(good) // 2],
        "gzip-not-tar": gzip.compress(os.urandom(4096)),
    }.items():
        backup = new_uuid()
        node.archive(backup).write_bytes(data)
        with pytest.raises(wb.CorruptArchiveError) as e:
            engine.restore_backup(server, backup, restore_request(truncate=True))
        assert e.value.http_status == 422, name
        assert read_tree(node.root(server)) == {"keep.txt": b"precious"}, name
        path = tmp_path / f"{name}.tar.gz"
        path.write_bytes(data)
        with pytest.raises(wb.CorruptArchiveError):
            wb.archive_extract(path, node.root(server))


def test_unsafe_entry(node: Node, engine: wb.Engine, tmp_path: Path) -> None:
    server = node.server({"keep.txt": "precious"})
    backup = new_uuid()
    node.archive(backup).write_bytes(make_tar_gz({"ok.txt": b"ok", "../escaped.txt": b"evil"}))
    with pytest.raises(wb.UnsafeEntryError) as e:
        engine.restore_backup(server, backup, restore_request(truncate=True))
    assert e.value.http_status == 422
    assert "escaped.txt" in e.value.message
    assert not (node.data / "escaped.txt").exists()
    assert read_tree(node.root(server)) == {"keep.txt": b"precious"}


def test_quota(node: Node, tmp_path: Path) -> None:
    with wb.Engine(node.config(disk_limit=10_000)) as engine:
        server = node.server({"small.txt": "s"})
        backup = new_uuid()
        node.archive(backup).write_bytes(make_tar_gz({"big.bin": os.urandom(200_000)}))
        with pytest.raises(wb.QuotaError) as e:
            engine.restore_backup(server, backup, restore_request(truncate=True))
        assert e.value.http_status == 507
        assert read_tree(node.root(server)) == {"small.txt": b"s"}
    src = tmp_path / "src"
    write_tree(src, {"big.bin": os.urandom(200_000)})
    wb.archive_create(src, tmp_path / "a.tar.gz")
    (tmp_path / "dst").mkdir()
    with pytest.raises(wb.QuotaError):
        wb.archive_extract(tmp_path / "a.tar.gz", tmp_path / "dst", {"disk_limit": 1000})


def test_io_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a": "a"})
    (tmp_path / "file").write_text("a file, not a directory")
    # Under a file: an I/O error. An existing directory: refused up front.
    with pytest.raises(wb.BackupIOError) as e:
        wb.archive_create(src, tmp_path / "file" / "out.tar.gz")
    assert e.value.http_status == 500
    with pytest.raises(wb.InvalidArgumentError) as invalid:
        wb.archive_create(src, src)
    assert invalid.value.http_status == 400 and "is a directory" in str(invalid.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "src"]  # no temporary left
