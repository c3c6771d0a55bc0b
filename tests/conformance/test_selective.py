"""Selective restore over HTTP, on both hosts: the restore body's `paths`
(docs/api.md section 4.1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import pytest

from conftest import Host
from helpers import assert_error, backup_now, demo_tree, snapshot, unless_busy


def inodes(root: Path) -> Dict[str, Any]:
    """(inode, mtime in ns) of every non-directory, symlinks not followed."""
    out: Dict[str, Any] = {}
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            st = (Path(dirpath) / name).lstat()
            out[str((Path(dirpath) / name).relative_to(root))] = (st.st_ino, st.st_mtime_ns)
    return out


def without(d: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if k != prefix and not k.startswith(prefix + "/")}


@pytest.mark.parametrize("truncate", [True, False])
def test_restore_paths_restores_only_them(host: Host, truncate: bool) -> None:
    server = host.server(demo_tree)
    root = host.root(server)
    backed_up = snapshot(root)
    backup = backup_now(host, server)
    (root / "world" / "level.dat").write_bytes(b"damaged")
    (root / "world" / "later.txt").write_text("made after the backup")
    (root / "server.properties").write_text("motd=changed\n")
    (root / "added.txt").write_text("not in the backup")
    before, before_inodes = snapshot(root), inodes(root)
    body = {"adapter": "wings", "truncate_directory": truncate, "paths": ["/world/"]}
    res = unless_busy(lambda: host.request("POST", f"/api/servers/{server}/backup/{backup}/restore", body=body))
    assert res.status_code == 204, res.text
    after = snapshot(root)
    want = {k: v for k, v in backed_up.items() if k == "world" or k.startswith("world/")}
    if not truncate:
        want["world/later.txt"] = before["world/later.txt"]
    assert {k: v for k, v in after.items() if k == "world" or k.startswith("world/")} == want
    assert without(after, "world") == without(before, "world")
    assert without(inodes(root), "world") == without(before_inodes, "world")


def test_restore_paths_not_in_the_backup_is_404_and_hostile_ones_400(host: Host) -> None:
    server = host.server(demo_tree)
    root = host.root(server)
    backup = backup_now(host, server)
    (root / "server.properties").write_text("motd=changed\n")
    before = snapshot(root)
    url = f"/api/servers/{server}/backup/{backup}/restore"
    for paths in (["nope.txt"], ["world", "nope/x"], ["/etc/passwd"]):
        res = unless_busy(lambda: host.request("POST", url, body={"adapter": "wings", "truncate_directory": True,
                                                                  "paths": paths}))
        assert_error(host, res, 404)
        assert snapshot(root) == before
    for bad in (["../x"], ["world/../../x"], "world", [1], ["/"]):
        res = host.request("POST", url, body={"adapter": "wings", "truncate_directory": True, "paths": bad})
        assert_error(host, res, 400)
        assert snapshot(root) == before


def test_names_in_messages_are_quoted_with_json_style_escapes(host: Host) -> None:
    """A NUL byte or an invisible character in a name the message quotes
    reads as JSON writes it (\\u0000, \\u2028), never as Rust's \\u{0}."""
    server = host.server(demo_tree)
    backup = backup_now(host, server)
    url = f"/api/servers/{server}/backup/{backup}/restore"
    res = host.request("POST", url, body={"adapter": "wings", "paths": ["world\0"]})
    message = assert_error(host, res, 400)
    assert '"world\\u0000"' in message, message
    res = host.request("POST", url, body={"adapter": "wings", "paths": ["nope\u2028x"]})
    message = assert_error(host, res, 404)
    assert '"nope\\u2028x"' in message, message
    res = host.request("POST", f"/api/servers/{server}/backup",
                       body={"adapter": "wings\u2028\t", "uuid": backup, "ignore": ""})
    message = assert_error(host, res, 400)
    assert message.startswith('provided adapter is not valid: "wings\\u2028\\t"'), message
    assert "u{" not in message
