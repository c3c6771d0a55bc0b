"""An empty path is refused as the C ABI and Go refuse it: it is never the
working directory (which an extract with ``truncate`` would empty)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pytest

import wings_backup as wb
from conftest import read_tree, write_tree
from wings_backup._native import LIB, PROGRESS_FN, take_string

PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def c_call(name: str, *args: Any) -> Tuple[int, str]:
    """The C function called directly, with no callback or cancel token: its
    status and error message."""
    fn = getattr(LIB, name)
    out, err = ctypes.c_void_p(), ctypes.c_void_p()
    tail: list = [PROGRESS_FN(), None, None] if name in ("wb_archive_create", "wb_archive_extract",
                                                         "wb_archive_verify") else []
    if name == "wb_archive_dry_run":
        tail = [None]
    status = fn(*args, *tail, ctypes.byref(out), ctypes.byref(err))
    take_string(out.value)
    message = ""
    if err.value:
        message = (LIB.wb_error_message(err.value) or b"").decode()
        LIB.wb_error_free(err.value)
    return status, message


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a source tree and an archive of it."""
    write_tree(tmp_path / "src", {"a.txt": "alpha"})
    wb.archive_create(tmp_path / "src", tmp_path / "a.tar.gz")
    write_tree(tmp_path / "keep", {"precious.txt": "do not lose"})
    monkeypatch.chdir(tmp_path / "keep")
    return tmp_path


CASES: Dict[str, Tuple[Callable[[Path], Any], str, Callable[[Path], Tuple[Any, ...]]]] = {
    "create source": (lambda w: wb.archive_create("", w / "x.tar.gz"),
                      "wb_archive_create", lambda w: (b"", os.fsencode(w / "x.tar.gz"), None)),
    "create archive": (lambda w: wb.archive_create(w / "src", ""),
                       "wb_archive_create", lambda w: (os.fsencode(w / "src"), b"", None)),
    "dry run source": (lambda w: wb.archive_dry_run(""),
                       "wb_archive_dry_run", lambda w: (b"", None, None)),
    "extract archive": (lambda w: wb.archive_extract("", w / "src", {"truncate": True}),
                        "wb_archive_extract", lambda w: (b"", os.fsencode(w / "src"), b'{"truncate":true}')),
    "extract destination": (lambda w: wb.archive_extract(w / "a.tar.gz", "", {"truncate": True}),
                            "wb_archive_extract", lambda w: (os.fsencode(w / "a.tar.gz"), b"",
                                                             b'{"truncate":true}')),
    "list": (lambda w: wb.archive_list(""), "wb_archive_list", lambda w: (b"", b"")),
    "verify": (lambda w: wb.archive_verify(""), "wb_archive_verify", lambda w: (b"",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_empty_path_fails_as_from_c(work: Path, case: str) -> None:
    call, c_name, c_args = CASES[case]
    status, message = c_call(c_name, *c_args(work))
    assert status != 0
    with pytest.raises(wb.WingsBackupError) as e:
        call(work)
    assert (e.value.status, e.value.message) == (status, message)
    assert read_tree(work / "keep") == {"precious.txt": b"do not lose"}
    assert read_tree(work / "src") == {"a.txt": b"alpha"}
    assert not (work / "x.tar.gz").exists()


def test_extract_into_an_empty_path_is_not_found(work: Path) -> None:
    with pytest.raises(wb.NotFoundError, match="destination is not an existing directory"):
        wb.archive_extract(work / "a.tar.gz", "", {"truncate": True})
    with pytest.raises(wb.InvalidArgumentError, match="no file name"):
        wb.archive_create(work / "src", "")
    assert read_tree(work / "keep") == {"precious.txt": b"do not lose"}


def test_dry_run_with_an_empty_archive_path_is_as_from_c(work: Path) -> None:
    # The source's own files are all reported: "" names no file to leave out.
    report = wb.archive_dry_run(work / "src", "")
    assert report.files == 1
    status, _ = c_call("wb_archive_dry_run", os.fsencode(work / "src"), b"", None)
    assert status == 0


def test_cli_restore_into_an_empty_path_refuses(work: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT), WINGS_BACKUP_LIB=str(wb.LIBRARY_PATH))
    r = subprocess.run([sys.executable, "-m", "wings_backup", "restore", str(work / "a.tar.gz"), "",
                        "--truncate"], cwd=work / "keep", env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 4, r.stderr  # not found
    assert "destination is not an existing directory" in r.stderr
    assert read_tree(work / "keep") == {"precious.txt": b"do not lose"}

    r = subprocess.run([sys.executable, "-m", "wings_backup", "create", str(work / "src"), ""],
                       cwd=work / "keep", env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "no file name" in r.stderr
    assert read_tree(work / "keep") == {"precious.txt": b"do not lose"}
