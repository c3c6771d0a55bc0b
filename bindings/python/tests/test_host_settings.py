"""wings_backup.host: the hosts' settings through the binding (the rules
themselves are tested in src/host_settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

import wings_backup as wb
from wings_backup.host import host_settings, prepare_host_directories, resolve_host_settings


def test_table_has_every_host_flag() -> None:
    table = {s["flag"]: s for s in host_settings()}
    assert table["listen"]["usage"] == "address to serve on (default 127.0.0.1:8080)"
    assert table["token"]["env"] == "WINGS_TOKEN" and table["token"]["secret"]
    assert table["write-limit"]["type"] == "uint" and table["read-timeout"]["type"] == "duration"


def test_resolve_reads_the_config_under_the_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text("token: file\nsystem:\n  data: /srv\n  backups: {write_limit: 9}\ndebug: true\n")
    r = resolve_host_settings({"config": str(cfg), "write-limit": 3, "read-timeout": 1.5}, {"WINGS_TOKEN": "env"})
    assert r["engine"]["data_directory"] == "/srv" and r["engine"]["write_limit"] == 3
    assert r["host"]["token"] == "env" and r["host"]["read_timeout_s"] == 1.5
    assert r["sources"]["token"] == "env" and r["sources"]["data-dir"] == "config"
    assert r["warnings"] == [{"message": "ignored --config key", "key": "debug"}]
    assert ["read_timeout", "1.5s"] in r["settings"]
    with pytest.raises(wb.InvalidArgumentError, match=f"--config {tmp_path / 'no.yml'}: cannot read"):
        resolve_host_settings({"config": str(tmp_path / "no.yml")})


def test_prepare_directories(tmp_path: Path) -> None:
    created = prepare_host_directories(str(tmp_path / "v"), str(tmp_path / "b"))
    assert [(d["flag"], d["mode"]) for d in created] == [("--data-dir", "0755"), ("--backup-dir", "0700")]
    (tmp_path / "f").write_text("")
    with pytest.raises(wb.BackupIOError, match=f"--backup-dir {tmp_path / 'f'}: not a directory"):
        prepare_host_directories(str(tmp_path / "v"), str(tmp_path / "f"))
