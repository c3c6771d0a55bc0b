"""Start-up: the warnings about --config, the settings line, and the
directories (the library resolves and checks them; this logs them)."""

from __future__ import annotations

import logging
from typing import Any

from wings_backup.host import prepare_host_directories

from . import wb
from .app import logfmt
from .options import Settings

log = logging.getLogger("python-host")


def log_startup(s: Settings) -> None:
    """Logs, once at start, what --config holds that the host does not use,
    and the settings in effect with where each came from (the library leaves
    the tokens out and redacts the Panel URL)."""
    for w in s.warnings:
        key = f" key={logfmt(w['key'])}" if "key" in w else ""
        log.warning("%s%s config=%s", w["message"], key, logfmt(s.config))
    log.info("settings %s", " ".join(f"{k}={logfmt(v)}" for k, v in s.fields))


class StartError(Exception):
    pass


def prepare_directories(engine_config: Any) -> None:
    """Creates the data and backup directories if they are missing and
    checks them (the library's errors name the flag and path)."""
    try:
        created = prepare_host_directories(engine_config["data_directory"], engine_config["backup_directory"])
    except wb.WingsBackupError as e:
        raise StartError(e.message) from None
    for d in created:
        log.info("created directory flag=%s path=%s mode=%s", d["flag"], logfmt(d["path"]), d["mode"])
