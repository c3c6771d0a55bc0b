"""The host's settings: flags (argparse, taking Go's -name and --name alike),
over WINGS_TOKEN, over an existing Wings config.yml given with --config. The
library holds the table of settings, reads each flag's text as Go's flag
package does, and resolves them; this module builds the parser from the
table, hands the library the flags the user set, and logs the start-up
lines (the warnings about --config, the settings, the directories made)."""

from __future__ import annotations

import argparse
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
    read_timeout_s, config) and ``log`` (the start-up lines)."""
    flags = {s["flag"]: getattr(args, s["flag"].replace("-", "_")) for s in TABLE}
    env = {s["env"]: os.environ[s["env"]] for s in TABLE if s["env"] and os.environ.get(s["env"])}
    try:
        r = resolve_host_settings({k: v for k, v in flags.items() if v is not None}, env)
    except wb.InvalidArgumentError as e:
        raise ConfigError(e.message) from None
    return SimpleNamespace(**r["host"], engine=r["engine"], log=r["log"])


def log_startup(s: SimpleNamespace) -> None:
    """Logs, once at start, what --config holds that the host does not use,
    and the settings in effect with where each came from, as the library
    words them (it leaves the tokens out and redacts the Panel URL)."""
    for entry in s.log:
        log.log(logging.getLevelName(entry["level"]), "%s", entry["line"])


def prepare_directories(engine_config: Any) -> None:
    """Creates the data and backup directories if they are missing and
    checks them (the library's errors name the flag and path)."""
    try:
        created = prepare_host_directories(engine_config["data_directory"], engine_config["backup_directory"])
    except wb.WingsBackupError as e:
        raise StartError(e.message) from None
    for d in created:
        log.info("%s", d["line"])
