"""Browse, verify and dry run over HTTP, on both hosts (docs/api.md sections
3.1 and 5.2): GET .../backup/:id/files against GNU tar's listing of the
archive in the host's backup directory, POST .../backup/:id/verify on a good
archive and on one with a flipped byte, and POST .../backup with
`"dry_run": true` against the real backup made right after it."""

from __future__ import annotations

import calendar
import gzip
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import quote

import pytest

from conftest import Host, PanelStub
from helpers import assert_error, create_body, leftovers, new_id

#: A directory whose name needs percent-encoding in a query.
ODD_DIR = "mods & co/näme ü"
#: mtimes set on the tree (whole seconds, distinct per entry).
BASE_MTIME = 1_600_000_000


def index_tree(root: Path) -> None:
    """A small nested tree: several levels, files of different modes, a
    symlink, a hard link, a FIFO, empty directories, names with spaces and
    non-ASCII letters, and logs/cache for ignore rules."""
    (root / "world" / "region" / "deep" / "er" / "est").mkdir(parents=True)
    (root / "world" / "empty").mkdir()
    (root / ODD_DIR).mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "cache" / "sub").mkdir(parents=True)
    files: Dict[str, Tuple[bytes, int]] = {
        "server.properties": (b"motd=index\n", 0o644),
        "start.sh": (b"#!/bin/sh\nexec java -jar server.jar\n", 0o755),
        "secret.key": (b"k" * 32, 0o600),
        "setgid.bin": (b"\x7fELF" * 10, 0o2750),
        "world/level.dat": (os.urandom(40_000), 0o640),
        "world/region/r.0.0.mca": (b"chunk" * 4000, 0o600),
        "world/region/deep/er/est/bottom.txt": (b"the bottom\n", 0o444),
        "world/debug.log": (b"debug\n" * 100, 0o644),
        f"{ODD_DIR}/config file.toml": (b"[x]\ny = 1\n", 0o664),
        "logs/latest.log": (b"log line\n" * 2000, 0o644),
        "cache/sub/blob.bin": (os.urandom(30_000), 0o644),
        "empty.txt": (b"", 0o644),
    }
    for rel, (data, mode) in files.items():
        (root / rel).write_bytes(data)
        os.chmod(root / rel, mode)
    os.chmod(root / "world" / "empty", 0o750)
    os.symlink("level.dat", root / "world" / "level.link")
    os.link(root / "world" / "level.dat", root / "world" / "level.hard")
    os.mkfifo(root / "world" / "console.pipe", 0o620)
    # Distinct whole-second mtimes, deepest first so directories keep theirs.
    paths = sorted((p for p in root.rglob("*")), key=lambda p: -len(p.parts))
    for i, p in enumerate(paths):
        os.utime(p, (BASE_MTIME + i * 7, BASE_MTIME + i * 7), follow_symlinks=False)


# --------------------------------------------------------------------------- the tar oracle

TAR_TYPES = {"-": "file", "d": "dir", "l": "symlink", "h": "hardlink", "p": "fifo"}


def perm_bits(sym: str) -> int:
    """`rwsr-x--T` -> the permission bits with setuid, setgid and sticky."""
    assert len(sym) == 9, sym
    mode = 0
    for i, (r, w, x) in enumerate((sym[0:3], sym[3:6], sym[6:9])):
        shift = 6 - 3 * i
        mode |= (r == "r") << (shift + 2) | (w == "w") << (shift + 1) | (x in "xst") << shift
        if x in "sS" and i < 2:
            mode |= 0o4000 if i == 0 else 0o2000
        if x in "tT" and i == 2:
            mode |= 0o1000
    return mode


def tar_listing(archive: Path) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """GNU tar's verbose listing of `archive`, by directory ("" the top):
    {dir: {name: {"type", "size", "mode", "mtime", "link"}}}."""
    out = subprocess.run(["tar", "--full-time", "--numeric-owner", "--quoting-style=literal", "-tvzf",
                          str(archive)], capture_output=True, text=True, check=True, timeout=60,
                         env=dict(os.environ, TZ="UTC", LC_ALL="C.UTF-8"))
    dirs: Dict[str, Dict[str, Dict[str, Any]]] = {"": {}}
    for line in out.stdout.splitlines():
        perms, _owner, size, day, clock, rest = line.split(None, 5)
        kind = TAR_TYPES[perms[0]]
        link = None
        if kind == "symlink":
            rest, link = rest.split(" -> ", 1)
        elif kind == "hardlink":
            rest, link = rest.split(" link to ", 1)
        path = rest.strip("/")
        if path.startswith("./"):
            path = path[2:]
        if path in ("", "."):
            continue
        parent, _, name = path.rpartition("/")
        mtime = calendar.timegm(time.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S"))
        dirs.setdefault(parent, {})[name] = {
            "type": kind, "size": int(size) if kind == "file" else 0, "mode": perm_bits(perms[1:10]),
            "mtime": mtime, "link": link}
        if kind == "dir":
            dirs.setdefault(path, {})
    return dirs


def tar_names(archive: Path) -> List[str]:
    out = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True, timeout=60)
    return [line for line in out.stdout.splitlines() if line.strip("./")]


# --------------------------------------------------------------------------- helpers


def backup_and_wait(host: Host, server: str, ignore: str = "") -> str:
    backup = new_id()
    body = dict(create_body(backup, ignore), wait=True)
    res = host.request("POST", f"/api/servers/{server}/backup", body=body)
    assert res.status_code == 200, res.text
    assert res.json()["state"] == "succeeded"
    assert host.archive(backup).is_file()
    return backup


def listing(host: Host, server: str, backup: str, query: str = "") -> Any:
    res = host.request("GET", f"/api/servers/{server}/backup/{backup}/files{query}")
    assert res.status_code == 200, f"{query}: {res.status_code} {res.text}"
    assert res.headers["Content-Type"].split(";")[0] == "application/json"
    return res.json()


def as_tar(entries: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out = {}
    for e in entries:
        assert set(e) == {"link", "mode", "mtime", "name", "size", "type"}, e
        out[e["name"]] = {k: e[k] for k in ("type", "size", "mode", "mtime", "link")}
    return out


# --------------------------------------------------------------------------- browse


def test_browse_lists_every_directory_as_tar_does(host: Host) -> None:
    server = host.server(index_tree)
    backup = backup_and_wait(host, server)
    oracle = tar_listing(host.archive(backup))
    # The oracle saw the tree's shape (else the comparison proves little).
    assert {"world", "world/region/deep/er/est", "world/empty", ODD_DIR} <= set(oracle)
    assert oracle["world"]["level.link"]["type"] == "symlink"
    assert {oracle["world"]["level.hard"]["type"], oracle["world"]["level.dat"]["type"]} == {"file", "hardlink"}
    assert oracle["world"]["console.pipe"]["type"] == "fifo"
    assert oracle[""]["setgid.bin"]["mode"] == 0o2750
    assert oracle["world/empty"] == {}

    top = listing(host, server, backup)
    assert top["path"] == "/"
    assert as_tar(top["entries"]) == oracle[""]
    for directory, children in oracle.items():
        if not directory:
            continue
        got = listing(host, server, backup, "?path=" + quote(directory, safe=""))
        assert got["path"] == "/" + directory
        assert as_tar(got["entries"]) == children, directory
        names = [e["name"] for e in got["entries"]]
        assert names == sorted(names, key=lambda n: n.encode()), directory

    # The same directory however it is spelled.
    want = listing(host, server, backup, "?path=world")
    for spelling in ("/world", "world/", "./world", "/world/", "world//"):
        assert listing(host, server, backup, "?path=" + quote(spelling, safe="/")) == want, spelling
    for spelling in ("", "?path=", "?path=/", "?path=."):
        assert listing(host, server, backup, spelling) == top, spelling
    # A fragment left on the request target is not part of the query (the Go
    # host's HTTP server keeps it, the Python host's drops it).
    url = f"/api/servers/{server}/backup/{backup}/files"
    for target in (f"{url}?path=world#frag", f"{url}?path=world#/region"):
        reply = host.raw("GET", target)
        assert (reply.status, reply.json()) == (200, want), target
    deep = listing(host, server, backup, "?path=%2Fworld%2Fregion%2Fdeep%2Fer%2Fest")
    assert deep["path"] == "/world/region/deep/er/est"
    assert [e["name"] for e in deep["entries"]] == ["bottom.txt"]


def test_browse_decodes_percent_encoding_and_plus(host: Host) -> None:
    server = host.server(index_tree)
    backup = backup_and_wait(host, server)
    oracle = tar_listing(host.archive(backup))
    want = oracle[ODD_DIR]
    assert "config file.toml" in want
    for query in ("?path=" + quote(ODD_DIR, safe=""),            # %20 for spaces
                  "?path=" + quote(ODD_DIR, safe="/").replace("%20", "+"),  # + for spaces
                  "?other=1&path=" + quote("/" + ODD_DIR + "/", safe="")):
        got = listing(host, server, backup, query)
        assert got["path"] == "/" + ODD_DIR, query
        assert as_tar(got["entries"]) == want, query


def test_browse_refuses_missing_paths_files_and_dot_dot(host: Host) -> None:
    server = host.server(index_tree)
    backup = backup_and_wait(host, server)
    url = f"/api/servers/{server}/backup/{backup}/files"
    for missing in ("nope", "world/nope", "world/empty/x", "mods", "world/lev", "WORLD"):
        assert_error(host, host.request("GET", f"{url}?path={quote(missing, safe='')}"), 404,
                     "The requested path was not found in the backup.")
    for not_dir in ("world/level.dat", "world/level.link", "world/console.pipe", "start.sh"):
        assert_error(host, host.request("GET", f"{url}?path={quote(not_dir, safe='')}"), 404,
                     "The requested path is not a directory in the backup.")
    for hostile in ("..", "../", "world/../world", "/..", "%2e%2e", "world/%2E%2E/%2e%2e/etc"):
        reply = host.raw("GET", f"{url}?path={hostile.replace('/', '%2F')}")
        assert_error(host, reply, 400)
        assert "`..`" in reply.json()["error"]
    # A NUL byte and bytes that are not UTF-8, once decoded.
    assert_error(host, host.raw("GET", f"{url}?path=world%00x"), 400)
    assert_error(host, host.raw("GET", f"{url}?path=%ff%fe"), 400)
    # An unknown backup, and a backup id that is not a UUID.
    assert_error(host, host.request("GET", f"/api/servers/{server}/backup/{new_id()}/files?path=world"), 404,
                 "The requested backup was not found on this server.")
    assert_error(host, host.request("GET", f"/api/servers/{server}/backup/not-a-uuid/files"), 400)
    # The route takes GET only.
    res = host.request("POST", url)
    assert_error(host, res, 405)
    assert res.headers["Allow"] == "GET"


def test_browse_of_an_archive_without_index_reads_it_and_indexes_it(host: Host) -> None:
    """Another tool's archive (GNU tar's, one gzip member, `./` names) in
    the backup directory: verify passes without an index, browse matches
    tar and writes the index beside the archive, which verify then uses;
    archives that cannot be read are 422 to browse, `ok: false` to verify,
    and get no index."""
    server = host.server(index_tree)
    backup = new_id()
    archive = host.archive(backup)
    subprocess.run(["tar", "-czf", str(archive), "-C", str(host.root(server)), "."], check=True, timeout=60)
    index = Path(f"{archive}.index")
    files, size = regular_files(host.root(server))
    first = verify(host, server, backup)
    assert (first["ok"], first["indexed"], first["files"], first["bytes"]) == (True, False, files, size), first
    assert not index.exists()
    oracle = tar_listing(archive)
    assert {"world", "world/region/deep/er/est", ODD_DIR} <= set(oracle)
    for directory, children in oracle.items():
        got = listing(host, server, backup, "?path=" + quote(directory, safe=""))
        assert as_tar(got["entries"]) == children, directory
    assert index.is_file()
    again = verify(host, server, backup)
    assert (again["ok"], again["indexed"], again["files"]) == (True, True, files), again

    for junk in (os.urandom(5000), gzip.compress(b"not a tar archive " * 100)):
        broken = new_id()
        host.archive(broken).write_bytes(junk)
        assert_error(host, host.request("GET", f"/api/servers/{server}/backup/{broken}/files"), 422)
        report = verify(host, server, broken)
        assert report["ok"] is False and report["error_count"] >= 1 and report["errors"][0]["message"], report
        assert not Path(f"{host.archive(broken)}.index").exists()


# --------------------------------------------------------------------------- verify


def regular_files(root: Path) -> Tuple[int, int]:
    """(files, bytes) of the regular files under root, each inode once."""
    seen = {}
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            st = (Path(dirpath) / name).lstat()
            if stat.S_ISREG(st.st_mode):
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return len(seen), sum(seen.values())


def verify(host: Host, server: str, backup: str) -> Dict[str, Any]:
    res = host.request("POST", f"/api/servers/{server}/backup/{backup}/verify")
    assert res.status_code == 200, res.text
    report = res.json()
    assert set(report) == {"bytes", "error_count", "errors", "files", "indexed", "members", "ok"}, report
    return report


def test_verify_passes_a_good_archive_and_names_a_flipped_byte(host: Host) -> None:
    server = host.server(index_tree)
    backup = backup_and_wait(host, server)
    archive = host.archive(backup)
    files, size = regular_files(host.root(server))
    good = verify(host, server, backup)
    assert good["ok"] is True and good["error_count"] == 0 and good["errors"] == [], good
    assert good["members"] >= 1 and good["indexed"] is True
    assert (good["files"], good["bytes"]) == (files, size)

    entries = set(tar_names(archive))
    length = archive.stat().st_size
    middle = length // 2
    with open(archive, "r+b") as f:
        f.seek(middle)
        byte = f.read(1)
        f.seek(middle)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert archive.stat().st_size == length
    bad = verify(host, server, backup)
    assert bad["ok"] is False, bad
    assert bad["error_count"] >= 1 and bad["errors"], bad
    first = bad["errors"][0]
    assert isinstance(first["member"], int) and first["member"] < bad["members"], first
    assert isinstance(first["offset"], int) and first["offset"] <= middle < length, first
    assert first["message"], first
    if first["path"] is None:
        # Damage inflated over: the suspects are named in the message.
        assert any(name in first["message"] for name in entries if not name.endswith("/")), first
    else:
        assert first["path"] in entries or first["path"] + "/" in entries, first

    # No local archive: 404; the route takes POST only.
    assert_error(host, host.request("POST", f"/api/servers/{server}/backup/{new_id()}/verify"), 404,
                 "The requested backup was not found on this server.")
    res = host.request("GET", f"/api/servers/{server}/backup/{backup}/verify")
    assert_error(host, res, 405)
    assert res.headers["Allow"] == "POST"


# --------------------------------------------------------------------------- dry run

IGNORE = "*.log\ncache/\n"


def test_dry_run_holds_what_the_backup_then_holds(host: Host, panel: PanelStub) -> None:
    server = host.server(index_tree)
    before = leftovers(host)
    dry = new_id()
    body = dict(create_body(dry, IGNORE), dry_run=True)
    res = host.request("POST", f"/api/servers/{server}/backup", body=body)
    assert res.status_code == 200, res.text
    report = res.json()
    assert set(report) == {"bytes", "entries", "estimated_size", "files", "ignored", "ignored_count",
                           "skipped", "skipped_count"}, report
    assert leftovers(host) == before
    assert not host.archive(dry).exists()

    real = backup_and_wait(host, server, IGNORE)
    archive = host.archive(real)
    names = tar_names(archive)
    oracle = tar_listing(archive)
    in_archive = [(d, n, e) for d, children in oracle.items() for n, e in children.items()]
    regular = [e for _, _, e in in_archive if e["type"] == "file"]
    assert report["entries"] == len(names) == len(in_archive)
    assert report["files"] == len(regular)
    assert report["bytes"] == sum(e["size"] for e in regular)
    assert report["estimated_size"] > 0
    # What the ignore rules left out: listed, and not in the archive.
    assert sorted(p.rstrip("/") for p in report["ignored"]) == ["cache", "logs/latest.log", "world/debug.log"]
    assert report["ignored_count"] == 3
    assert (report["skipped"], report["skipped_count"]) == ([], 0)
    archived = {f"{d}/{n}".lstrip("/") for d, n, _ in in_archive}
    assert not {"cache", "cache/sub/blob.bin", "logs/latest.log", "world/debug.log"} & archived
    assert {"logs", "world/level.dat", f"{ODD_DIR}/config file.toml"} <= archived

    # The Panel heard of the real backup, never of the dry run.
    assert panel.backup_reports(real), "the Panel stub recorded no report of the real backup"
    assert panel.calls(dry) == []
    assert sorted(set(leftovers(host)) - set(before)) == sorted(
        n for n in (f"{real}.tar.gz", f"{real}.tar.gz.index") if (host.backups / n).exists())
    assert f"{real}.tar.gz" in leftovers(host)


@pytest.mark.parametrize("value", ["yes", 1, 0, [], {}, "true"])
def test_dry_run_that_is_not_a_boolean_is_400_and_starts_nothing(host: Host, panel: PanelStub,
                                                                   value: Any) -> None:
    server = host.server(index_tree)
    before = leftovers(host)
    backup = new_id()
    body = dict(create_body(backup), dry_run=value)
    assert_error(host, host.request("POST", f"/api/servers/{server}/backup", body=body), 400,
                 "the field `dry_run` must be a boolean")
    assert leftovers(host) == before
    assert_error(host, host.request("GET", f"/api/servers/{server}/backup/{backup}"), 404)
    assert panel.calls(backup) == []
