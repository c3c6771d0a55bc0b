"""Helpers shared by the conformance tests: request bodies, server trees,
snapshots, waiting (always bounded) and error checks."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import requests

from conftest import Host, Reply, assert_no_leak

WAIT = 30.0  # bound for a background backup to finish
ARCHIVE_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tar\.gz(\.index)?$")

MSG_NO_AUTH = "The required authorization heads were not present in the request."
MSG_FORBIDDEN = "You are not authorized to access this endpoint."
MSG_BACKUP_NOT_FOUND = "The requested backup was not found on this server."


# --------------------------------------------------------------------------- helpers


def new_id() -> str:
    return str(uuid.uuid4())


def create_body(backup: str, ignore: str = "") -> Dict[str, Any]:
    return {"adapter": "wings", "uuid": backup, "ignore": ignore}


def restore_body(truncate: bool = True) -> Dict[str, Any]:
    return {"adapter": "wings", "truncate_directory": truncate, "download_url": ""}


def demo_tree(root: Path) -> None:
    """Files with several modes, nested and empty directories, symlinks."""
    (root / "world" / "region").mkdir(parents=True)
    (root / "logs" / "old").mkdir(parents=True)
    (root / "cache").mkdir()
    (root / "server.properties").write_text("motd=conformance\nmax-players=20\n")
    (root / "start.sh").write_text("#!/bin/sh\nexec java -jar server.jar\n")
    (root / "world" / "level.dat").write_bytes(os.urandom(50_000))
    (root / "world" / "region" / "r.0.0.mca").write_bytes(b"chunk" * 4000)
    (root / "secret.key").write_bytes(b"k" * 32)
    (root / "naïve name.txt").write_text("unicode and a space\n")
    os.chmod(root / "start.sh", 0o755)
    os.chmod(root / "secret.key", 0o600)
    os.chmod(root / "world" / "region" / "r.0.0.mca", 0o640)
    os.chmod(root / "cache", 0o700)
    os.symlink("world/level.dat", root / "level.link")
    os.symlink("/etc/hostname", root / "outside.link")
    os.symlink("missing/target", root / "dangling.link")


def big_tree(root: Path) -> None:
    """A tree whose backup takes seconds under the hosts' 1 MiB/s write limit."""
    demo_tree(root)
    (root / "big.bin").write_bytes(os.urandom(4 << 20))


def snapshot(root: Path) -> Dict[str, str]:
    """Type, permission bits and content of every entry, symlinks not followed."""
    out: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            perm = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link " + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"dir {perm}"
            else:
                out[rel] = f"file {perm} {hashlib.sha1(path.read_bytes()).hexdigest()}"
    return out


def sha1_of(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def assert_error(host: Host, res: Union[requests.Response, Reply], status: Union[int, Sequence[int]],
                 message: Optional[str] = None) -> str:
    """An error reply: the status (or one of them), a JSON {"error": "..."}
    body, no node paths or stack traces."""
    code = res.status_code if isinstance(res, requests.Response) else res.status
    wanted = [status] if isinstance(status, int) else list(status)
    assert code in wanted, f"want {status}, got {code} {res.text[:500]!r}"
    ctype = res.headers.get("Content-Type") or res.headers.get("content-type") or ""
    assert ctype.split(";")[0].strip() == "application/json", f"Content-Type {ctype!r} ({res.text[:200]!r})"
    body = res.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], res.text
    assert_no_leak(host.kind, code, res.text)
    for leak in (str(host.data), str(host.backups), "Traceback", "goroutine ", "panicked at"):
        assert leak not in res.text, f"error body leaks {leak!r}: {res.text!r}"
    if message is not None:
        assert body["error"] == message
    return body["error"]


def wait_archive(host: Host, backup: str, timeout: float = WAIT) -> Path:
    path = host.archive(backup)
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout}s"
        time.sleep(0.05)
    return path


def backup_now(host: Host, server: str) -> str:
    """Creates a backup of server and waits for its archive."""
    backup = new_id()
    res = host.request("POST", f"/api/servers/{server}/backup", body=create_body(backup))
    assert res.status_code == 202, res.text
    wait_archive(host, backup)
    return backup


def unless_busy(send: Callable[[], requests.Response], timeout: float = WAIT) -> requests.Response:
    """Sends a request again while it is answered 409: a backup whose archive
    just appeared may hold its server a moment longer (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        res = send()
        if res.status_code != 409 or time.monotonic() > deadline:
            return res
        time.sleep(0.05)


def wait_until(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Polls `pred`; a file vanishing under it (work still moving files, as
    a restore's commit does) counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except FileNotFoundError:
            pass
        assert time.monotonic() < deadline, f"{what} (waited {timeout}s)"
        time.sleep(0.05)


#: The directory of the indexes of s3 backups (their archives are in the bucket).
S3_INDEXES = ".s3-indexes"

#: The engine's catalog of operations in the backup directory (the database
#: and its companions: -wal, -shm, owner locks).
CATALOG_NAME = ".wings-backup.db"


def leftovers(host: Host) -> list:
    """The backup directory's entries, but parked reports and the catalog."""
    return sorted(p.name for p in host.backups.iterdir()
                  if p.name not in (".pending", S3_INDEXES) and not p.name.startswith(CATALOG_NAME))


def temporary_files(host: Host) -> list:
    """Entries of the backup directory other than finished <uuid>.tar.gz files."""
    return [n for n in leftovers(host) if not ARCHIVE_NAME.match(n)]
