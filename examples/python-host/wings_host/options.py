"""The host's settings: flags (argparse, taking Go's -name and --name alike),
over WINGS_TOKEN, over an existing Wings config.yml given with --config. The
library holds the table of settings and resolves them; this module builds
the parser from the table and hands it the flags the user set."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from wings_backup.host import host_settings, resolve_host_settings

from . import wb

TABLE = host_settings()


class ConfigError(Exception):
    pass


class HelpFormatter(argparse.HelpFormatter):
    """--help lists each flag as --name, as the README documents them (the
    -name spelling Go's flag package takes is accepted, not listed)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [o for o in action.option_strings if o.startswith("--") or len(o) == 2]
        if len(shown) == len(action.option_strings):
            return super()._format_action_invocation(action)
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
    types = {"uint": non_negative, "duration": parse_duration, "string": str}
    for s in TABLE:
        # Go's flag package takes -name and --name alike; so does this host.
        names = (f"--{s['flag']}", f"-{s['flag']}")
        if s["type"] == "bool":
            p.add_argument(*names, action="store_true", default=None, help=s["usage"])
        else:
            p.add_argument(*names, type=types[s["type"]], metavar=s["metavar"], default=None, help=s["usage"])
    p.add_argument("--version", "-version", action="version", version=version_line(),
                   help="print the host's name and the library's version, and exit")
    return p.parse_args(go_bool_flags(list(sys.argv[1:] if argv is None else argv), p))


def non_negative(text: str) -> int:
    """An unsigned integer flag, as Go's flag.Uint64 takes it
    (strconv.ParseUint with base 0): decimal, 0x hex, 0o or leading-0
    octal, 0b binary; no sign, no spaces, at most 2^64 - 1."""
    value = -1
    if re.fullmatch(r"[0-9A-Za-z_]+", text):
        octal = re.fullmatch(r"0([0-7_]+)", text)
        try:
            value = int("0o" + octal.group(1), 0) if octal else int(text, 0)
        except ValueError:
            value = -1
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {text!r}")
    return value


def go_bool_flags(argv: List[str], parser: argparse.ArgumentParser) -> List[str]:
    """Go's flag package takes a boolean flag as -async-restore=false too;
    so does this host."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        m = re.fullmatch(r"--?async-restore=(.*)", arg)
        if m is None:
            out.append(arg)
        elif m.group(1) in ("1", "t", "T", "true", "TRUE", "True"):
            out.append("--async-restore")
        elif m.group(1) not in ("0", "f", "F", "false", "FALSE", "False"):
            parser.error(f"invalid boolean value {m.group(1)!r} for -async-restore")
    return out


def parse_duration(text: str) -> float:
    """Seconds from a duration written as Go's flag package takes it ("15s",
    "500ms", "2m", "1h30m"), so that both hosts take the same flags."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (want e.g. 15s, 500ms, 2m)")
    seconds = sum(float(n) * units[u] for n, u in parts)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive, not {text!r}")
    return seconds


class Settings:
    """What the flags, WINGS_TOKEN and --config add up to (the library's
    resolution): the engine configuration, the host's own settings, the
    start-up log line's fields and the warnings about --config."""

    def __init__(self, resolved: Dict[str, Any]) -> None:
        host = resolved["host"]
        self.engine: Dict[str, Any] = resolved["engine"]
        self.listen: str = host["listen"]
        self.token: str = host["token"]
        self.async_restore: bool = host["async_restore"]
        self.read_header_timeout: float = host["read_header_timeout_s"]
        self.read_timeout: float = host["read_timeout_s"]
        self.config: str = host["config"]
        self.fields: List[List[str]] = resolved["settings"]
        self.warnings: List[Dict[str, str]] = resolved["warnings"]


def resolve_settings(args: argparse.Namespace) -> Settings:
    flags = {s["flag"]: getattr(args, s["flag"].replace("-", "_")) for s in TABLE}
    env = {s["env"]: os.environ[s["env"]] for s in TABLE if s["env"] and os.environ.get(s["env"])}
    try:
        return Settings(resolve_host_settings({k: v for k, v in flags.items() if v is not None}, env))
    except wb.InvalidArgumentError as e:
        raise ConfigError(e.message) from None


def build_settings(args: argparse.Namespace) -> Tuple[str, str, Dict[str, Any]]:
    """(listen address, node token, engine configuration)."""
    s = resolve_settings(args)
    return s.listen, s.token, s.engine
