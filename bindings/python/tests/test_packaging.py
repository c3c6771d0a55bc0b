"""The package as a user installs it: a wheel that carries libwings_backup,
installed with pip into a fresh virtualenv, used with no WINGS_BACKUP_LIB and
from a directory outside the checkout.

The wheel is the one `make wheel` built when WINGS_BACKUP_WHEEL names it
(`make test-wheel` does), otherwise this module builds one with pip. A second
virtualenv gets `pip install ./bindings/python` from source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # bindings/python
CHECKOUT = PACKAGE_DIR.parent.parent

# Building takes seconds when target/release is up to date, and several
# minutes when cargo starts from nothing (ISA-L is built from source).
BUILD_TIMEOUT = 1800
RUN_TIMEOUT = 120

pytestmark = pytest.mark.skipif(
    shutil.which("cargo") is None and not os.environ.get("WINGS_BACKUP_WHEEL"),
    reason="building the wheel needs cargo on PATH (or WINGS_BACKUP_WHEEL naming a built wheel)",
)


def clean_env() -> Dict[str, str]:
    """The environment of a user who only installed the package."""
    drop = {"WINGS_BACKUP_LIB", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def run(args: List[object], cwd: Path, timeout: int = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def new_venv(path: Path) -> Path:
    r = run([sys.executable, "-m", "venv", path], cwd=path.parent)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("WINGS_BACKUP_WHEEL")
    if given:
        path = Path(given)
        assert path.is_file(), f"WINGS_BACKUP_WHEEL={given} does not exist"
        return path
    out = tmp_path_factory.mktemp("wheels")
    r = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, PACKAGE_DIR],
            cwd=out, timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    built = sorted(out.glob("wings_backup-*.whl"))
    assert len(built) == 1, built
    return built[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = new_venv(tmp_path_factory.mktemp("wheel-venv") / "venv")
    # The package has no dependencies, so nothing may come from an index.
    r = run([env_dir / "bin" / "python", "-m", "pip", "install", "--no-index", wheel],
            cwd=env_dir.parent, timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    return env_dir


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A working directory with no checkout above it."""
    assert CHECKOUT not in tmp_path.parents
    yield tmp_path


def make_tree(root: Path) -> Dict[str, bytes]:
    files = {
        "server.properties": b"motd=hello\n",
        "world/level.dat": os.urandom(20_000),
        "world/region/r.0.0.mca": b"\x00" * 70_000,
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_the_wheel_is_platform_tagged_and_carries_the_library(wheel: Path) -> None:
    assert not wheel.name.endswith("-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        libs = [n for n in names if n.startswith("wings_backup/libwings_backup") and n.endswith(".so")]
        assert len(libs) == 1, names
        assert z.read(libs[0])[:4] == b"\x7fELF"
        tag = z.read(f"wings_backup-{wheel.name.split('-')[1]}.dist-info/WHEEL").decode()
        assert "Root-Is-Purelib: false" in tag
        entry_points = z.read(f"wings_backup-{wheel.name.split('-')[1]}.dist-info/entry_points.txt")
        assert b"wings-backup = wings_backup.cli:main" in entry_points


def test_import_uses_the_library_inside_the_venv(venv: Path, outside: Path) -> None:
    code = ("import wings_backup as wb; "
            "print(wb.__version__); print(wb.library_version()); print(wb.LIBRARY_PATH)")
    r = run([venv / "bin" / "python", "-c", code], cwd=outside)
    assert r.returncode == 0, r.stderr
    version, library_version, library_path = r.stdout.splitlines()
    assert version == library_version == "0.1.0"
    loaded = Path(library_path)
    assert venv.resolve() in loaded.parents, loaded
    assert loaded.parent.name == "wings_backup" and loaded.is_file()


def test_console_script_help(venv: Path, outside: Path) -> None:
    r = run([venv / "bin" / "wings-backup", "--help"], cwd=outside)
    assert r.returncode == 0, r.stderr
    assert "create" in r.stdout and "restore" in r.stdout


def test_console_script_backs_up_and_restores(venv: Path, outside: Path) -> None:
    files = make_tree(outside / "src")
    r = run([venv / "bin" / "wings-backup", "create", "src", "out.tar.gz"], cwd=outside)
    assert r.returncode == 0, r.stderr
    archive = outside / "out.tar.gz"
    data = archive.read_bytes()
    assert r.stdout == f"sha1 {hashlib.sha1(data).hexdigest()}\nsize {len(data)}\n"

    # Real tar lists what was backed up.
    listing = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT, check=True).stdout.split()
    listed = {name.rstrip("/") for name in listing}
    assert set(files) <= listed, listing
    with tarfile.open(archive) as t:
        for name, content in files.items():
            extracted = t.extractfile(name)
            assert extracted is not None and extracted.read() == content

    (outside / "dest").mkdir()
    r = run([venv / "bin" / "wings-backup", "restore", "out.tar.gz", "dest"], cwd=outside)
    assert r.returncode == 0, r.stderr
    for name, content in files.items():
        assert (outside / "dest" / name).read_bytes() == content


def test_pip_install_from_source(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`pip install ./bindings/python` builds the library into the package
    (pip fetches setuptools-rust for the build; cargo reuses target/)."""
    if shutil.which("cargo") is None:
        pytest.skip("building from source needs cargo on PATH")
    env_dir = new_venv(tmp_path_factory.mktemp("source-venv") / "venv")
    r = run([env_dir / "bin" / "python", "-m", "pip", "install", PACKAGE_DIR], cwd=env_dir.parent,
            timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    r = run([env_dir / "bin" / "python", "-c", "import wings_backup as wb; print(wb.LIBRARY_PATH)"],
            cwd=env_dir.parent)
    assert r.returncode == 0, r.stderr
    assert env_dir.resolve() in Path(r.stdout.strip()).parents, r.stdout
    r = run([env_dir / "bin" / "wings-backup", "--help"], cwd=env_dir.parent)
    assert r.returncode == 0 and "create" in r.stdout, r.stderr
