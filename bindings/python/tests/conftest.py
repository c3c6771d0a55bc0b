"""Shared fixtures: a node (data and backup directories), servers with files,
and an engine over them. Everything lives under pytest's tmp_path."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import pytest

import wings_backup as wb

Files = Dict[str, Union[str, bytes]]


def new_uuid() -> str:
    return str(uuid.uuid4())


def write_tree(root: Path, files: Files) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)


def read_tree(root: Path) -> Dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def create_request(backup: str, ignore: str = "") -> Dict[str, str]:
    return {"adapter": "wings", "uuid": backup, "ignore": ignore}


def restore_request(truncate: bool = False) -> Dict[str, object]:
    return {"adapter": "wings", "truncate_directory": truncate}


@dataclass
class Node:
    data: Path
    backups: Path

    def config(self, **extra: object) -> Dict[str, object]:
        return {"data_directory": self.data, "backup_directory": self.backups, "threads": 2, **extra}

    def server(self, files: Optional[Files] = None) -> str:
        """A new server directory holding `files`; returns its uuid."""
        server = new_uuid()
        root = self.data / server
        root.mkdir()
        write_tree(root, files or {"server.properties": "motd=hello\n", "world/level.dat": b"\x00" * 4096})
        return server

    def root(self, server: str) -> Path:
        return self.data / server

    def archive(self, backup: str) -> Path:
        return self.backups / f"{backup}.tar.gz"


@pytest.fixture
def node(tmp_path: Path) -> Node:
    data, backups = tmp_path / "volumes", tmp_path / "backups"
    data.mkdir()
    backups.mkdir()
    return Node(data, backups)


@pytest.fixture
def engine(node: Node) -> Iterator[wb.Engine]:
    with wb.Engine(node.config()) as e:
        yield e
