"""The settings of an HTTP host over the library, kept in the library once
for every host: the table of settings (to build a command-line parser
from), their resolution from flags, environment and a Wings config.yml, and
the directories prepared at start."""

from __future__ import annotations

import ctypes
import json
from typing import Any, Dict, List, Mapping, Optional

from ._native import LIB, take_string
from .errors import check

__all__ = ["host_settings", "resolve_host_settings", "prepare_host_directories"]


def host_settings() -> List[Dict[str, Any]]:
    """The table, in --help order: each setting's ``flag``, ``type``
    ("string", "uint", "bool", "duration"), ``default``, ``metavar``,
    ``help``, ``usage`` (help with the default), ``env``, ``config`` (dotted
    config.yml keys) and ``secret``."""
    return json.loads(LIB.wb_host_settings().decode("utf-8"))


def _call(fn: Any, a: str, b: str) -> Any:
    out, err = ctypes.c_void_p(), ctypes.c_void_p()
    check(fn(a.encode("utf-8"), b.encode("utf-8"), ctypes.byref(out), ctypes.byref(err)), err)
    return json.loads(take_string(out.value) or "null")


def resolve_host_settings(flags: Mapping[str, Any], env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Resolves the settings from the flags the user set (by flag name:
    str, int, bool, or seconds for a duration; or the text given on the
    command line, which the library reads as Go's flag package does: "0x10",
    "t", "1m30s") and the environment. Returns
    ``engine`` (the Engine configuration), ``host`` (listen, token,
    async_restore, read_header_timeout_s, read_timeout_s, config),
    ``settings`` (the start-up log line's [name, value] pairs, no secret),
    ``sources``, ``warnings`` ([{"message", "key"?}]) and ``log`` (the
    warnings and the settings line as text: [{"level", "line"}]). Raises
    InvalidArgumentError naming the flag (and the path, for --config)."""
    return _call(LIB.wb_host_settings_resolve, json.dumps(dict(flags)), json.dumps(dict(env or {})))


def prepare_host_directories(data_dir: str, backup_dir: str) -> List[Dict[str, str]]:
    """Creates the data and backup directories if missing (0755, 0700) and
    checks them; returns those created ([{"flag", "path", "mode", "line"}],
    ``line`` the log line as text). Raises
    BackupIOError (WB_IO) naming the flag and path."""
    return _call(LIB.wb_host_prepare_directories, data_dir, backup_dir)
