"""The host's settings: flags (argparse, taking Go's -name and --name alike),
over WINGS_TOKEN, over an existing Wings config.yml given with --config. The
library holds the table of settings, reads each flag's text as Go's flag
package does, and resolves them; this module builds the parser from the
table, hands the library the flags the user set, and logs the start-up
lines (the warnings about --config, the settings, the directories made)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from types import SimpleNamespace
from typing import Any, List, Optional

from wings_backup.host import host_settings, prepare_host_directories, resolve_host_settings

from . import wb

TABLE = host_settings()
log = logging.getLogger("python-host")


class ConfigError(Exception):
    pass


class StartError(Exception):
    pass


class HelpFormatter(argparse.HelpFormatter):
    """--help lists each flag as --name (and a boolean without a value), as
    the README documents them; the -name spelling is accepted, not listed."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [o for o in action.option_strings if o.startswith("--") or len(o) == 2]
        if action.metavar == "":
            return ", ".join(shown)
        return super()._format_action_invocation(argparse.Action(shown, action.dest, nargs=action.nargs,
                                                                 metavar=action.metavar))


def version_line() -> str:
    """What --version prints."""
    return f"python-host, libwings_backup {wb.library_version()}"


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python-host",
        description="Wings-compatible backup HTTP host (Python, over libwings_backup). "
                    "Flags are written --name VALUE or --name=VALUE; -name is taken too.",
        formatter_class=HelpFormatter,
        allow_abbrev=False)  # Go's flag package takes no abbreviations either
    bools = set()
    for s in TABLE:
        # Go's flag package takes -name and --name alike; so does this host.
        names = (f"--{s['flag']}", f"-{s['flag']}")
        if s["type"] == "bool":
            bools.update(names)  # --name, or --name=VALUE (true, false, 1, 0, ...)
        p.add_argument(*names, metavar=s["metavar"], help=s["usage"])
    p.add_argument("--version", "-version", action="version", version=version_line(),
                   help="print the host's name and the library's version, and exit")
    argv = list(sys.argv[1:] if argv is None else argv)
    return p.parse_args([a + "=true" if a in bools else a for a in argv])


def resolve_settings(args: argparse.Namespace) -> SimpleNamespace:
    """What the flags, WINGS_TOKEN and --config add up to (the library's
    resolution): ``engine`` (the engine configuration), the host's own
    settings (listen, token, async_restore, read_header_timeout_s,
    read_timeout_s, config), ``settings`` (the start-up line's fields) and
    ``warnings`` about --config."""
    flags = {s["flag"]: getattr(args, s["flag"].replace("-", "_")) for s in TABLE}
    env = {s["env"]: os.environ[s["env"]] for s in TABLE if s["env"] and os.environ.get(s["env"])}
    try:
        r = resolve_host_settings({k: v for k, v in flags.items() if v is not None}, env)
    except wb.InvalidArgumentError as e:
        raise ConfigError(e.message) from None
    return SimpleNamespace(**r["host"], engine=r["engine"], settings=r["settings"], warnings=r["warnings"])


def build_settings(args: argparse.Namespace) -> Any:
    """(listen address, node token, engine configuration)."""
    s = resolve_settings(args)
    return s.listen, s.token, s.engine


def logfmt(value: Any) -> str:
    """A log value as Go's log/slog text handler writes it: quoted when
    empty or holding spaces, quotes, '=' or unprintable characters."""
    text = str(value)
    if not text or any(c.isspace() or c in '"=' or not c.isprintable() for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def log_startup(s: SimpleNamespace) -> None:
    """Logs, once at start, what --config holds that the host does not use,
    and the settings in effect with where each came from (the library leaves
    the tokens out and redacts the Panel URL)."""
    for w in s.warnings:
        key = f" key={logfmt(w['key'])}" if "key" in w else ""
        log.warning("%s%s config=%s", w["message"], key, logfmt(s.config))
    log.info("settings %s", " ".join(f"{k}={logfmt(v)}" for k, v in s.settings))


def prepare_directories(engine_config: Any) -> None:
    """Creates the data and backup directories if they are missing and
    checks them (the library's errors name the flag and path)."""
    try:
        created = prepare_host_directories(engine_config["data_directory"], engine_config["backup_directory"])
    except wb.WingsBackupError as e:
        raise StartError(e.message) from None
    for d in created:
        log.info("created directory flag=%s path=%s mode=%s", d["flag"], logfmt(d["path"]), d["mode"])
