"""Finding the library: WINGS_BACKUP_LIB, and the ImportError when it is
wrong. Each case imports the package in a fresh interpreter."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

import wings_backup as wb

PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def import_with(lib: Optional[str]) -> subprocess.CompletedProcess:
    env: Dict[str, str] = {k: v for k, v in os.environ.items() if k != "WINGS_BACKUP_LIB"}
    env["PYTHONPATH"] = str(PACKAGE_PARENT)
    if lib is not None:
        env["WINGS_BACKUP_LIB"] = lib
    code = "import wings_backup as wb; print(wb.LIBRARY_PATH, wb.library_version())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


def test_env_variable_selects_the_library() -> None:
    r = import_with(str(wb.LIBRARY_PATH))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(wb.LIBRARY_PATH)


def test_without_the_variable_the_checkout_build_is_used() -> None:
    checkout_build = PACKAGE_PARENT.parent.parent / "target" / "release" / "libwings_backup.so"
    if not checkout_build.is_file():
        pytest.skip("no target/release build in this checkout")
    r = import_with(None)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(checkout_build.resolve())


def test_missing_library_is_an_import_error_with_a_hint(tmp_path: Path) -> None:
    r = import_with(str(tmp_path / "nope.so"))
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "nope.so" in r.stderr and "WINGS_BACKUP_LIB" in r.stderr and "make build" in r.stderr


def test_a_file_that_is_not_a_library_is_an_import_error(tmp_path: Path) -> None:
    bogus = tmp_path / "libwings_backup.so"
    bogus.write_text("not an ELF file")
    r = import_with(str(bogus))
    assert r.returncode != 0 and "ImportError" in r.stderr and "make build" in r.stderr


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_another_abi_version_is_an_import_error(tmp_path: Path) -> None:
    src = tmp_path / "stub.c"
    src.write_text("#include <stdint.h>\nuint32_t wb_abi_version(void) { return 2; }\n")
    lib = tmp_path / "libwings_backup.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60)
    r = import_with(str(lib))
    assert r.returncode != 0 and "ImportError" in r.stderr
    assert "ABI version 2" in r.stderr and "needs 1" in r.stderr


def copy_package(root: Path) -> Path:
    """A copy of the package at root/bindings/python/wings_backup, laid out
    like the checkout, with no library anywhere; returns its parent."""
    parent = root / "bindings" / "python"
    shutil.copytree(PACKAGE_PARENT / "wings_backup", parent / "wings_backup",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return parent


def import_from(parent: Path, extra_env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WINGS_BACKUP_LIB", "LD_LIBRARY_PATH")}
    env["PYTHONPATH"] = str(parent)
    env.update(extra_env or {})
    code = "import wings_backup as wb; print(wb.LIBRARY_PATH, wb.library_version())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=parent, timeout=60)


def test_the_bundled_library_comes_before_the_checkout_build(tmp_path: Path) -> None:
    parent = copy_package(tmp_path)
    checkout_build = tmp_path / "target" / "release" / "libwings_backup.so"
    checkout_build.parent.mkdir(parents=True)
    shutil.copyfile(wb.LIBRARY_PATH, checkout_build)
    r = import_from(parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(checkout_build.resolve())

    # The name setuptools-rust gives the library inside an abi3 wheel.
    bundled = parent / "wings_backup" / "libwings_backup.abi3.so"
    shutil.copyfile(wb.LIBRARY_PATH, bundled)
    r = import_from(parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(bundled.resolve())


def test_the_system_library_is_loaded_by_soname_last(tmp_path: Path) -> None:
    parent = copy_package(tmp_path / "pkg")
    libdir = tmp_path / "lib"
    libdir.mkdir()
    shutil.copyfile(wb.LIBRARY_PATH, libdir / "libwings_backup.so.0")
    r = import_from(parent, {"LD_LIBRARY_PATH": str(libdir)})
    assert r.returncode == 0, r.stderr
    # The path the dynamic loader found, not just the name asked for.
    assert r.stdout.split()[0] == str((libdir / "libwings_backup.so.0").resolve())


def system_library_installed() -> bool:
    try:
        ctypes.CDLL("libwings_backup.so.0")
    except OSError:
        return False
    return True


@pytest.mark.skipif(system_library_installed(), reason="libwings_backup.so.0 is installed on this machine")
def test_nothing_found_names_every_place_tried(tmp_path: Path) -> None:
    parent = copy_package(tmp_path)
    r = import_from(parent, {"LD_LIBRARY_PATH": str(tmp_path)})
    assert r.returncode != 0 and "ImportError" in r.stderr
    for origin in ("bundled in the package", "source checkout", "system library"):
        assert origin in r.stderr
    assert "libwings_backup.so.0" in r.stderr
    assert "pip install" in r.stderr and "make build" in r.stderr and "WINGS_BACKUP_LIB" in r.stderr
