"""The host's settings: flags (argparse, taking Go's -name and --name alike),
over WINGS_TOKEN, over an existing Wings config.yml given with --config."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import wings_backup as wb

READ_HEADER_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 30.0
MAX_RUNNING_BACKUPS = 4  # the engine's default, shown in --help
WINGS_DATA_DIR = "/var/lib/pterodactyl/volumes"
WINGS_BACKUP_DIR = "/var/lib/pterodactyl/backups"


class ConfigError(Exception):
    pass


# The keys of a Wings config.yml this host uses, as dotted paths (the Go
# host has the same list). Every other key in the file is logged as ignored.
WINGS_CONFIG_KEYS = (
    "token_id", "token", "remote",
    "api.host", "api.port", "api.ssl.enabled",
    "system.data", "system.backup_directory", "system.user.uid", "system.user.gid",
    "system.backups.compression_level", "system.backups.write_limit", "system.backups.restore_host_allowlist",
    "system.backups.max_running_backups",
)


def ignored_config_keys(doc: Dict[Any, Any]) -> List[str]:
    """The dotted path of every key of the document that is not in
    WINGS_CONFIG_KEYS, in file order: a leaf (a value that is not a mapping,
    or an empty one) under an unknown key is named in full, so a misplaced
    block names each of its keys (backups.compression_level)."""
    known = set(WINGS_CONFIG_KEYS)
    sections = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}
    out: List[str] = []

    def walk(node: Dict[Any, Any], prefix: str) -> None:
        for key, value in node.items():
            path = prefix + str(key)
            if path in known:
                continue
            if path in sections and (isinstance(value, dict) or value is None):
                walk(value or {}, path + ".")
            elif isinstance(value, dict) and value:
                walk(value, path + ".")
            else:
                out.append(path)

    walk(doc, "")
    return out


def read_wings_config(path: str) -> Tuple[Dict[str, Any], List[str], List[str]]:
    """The settings this host understands from a Wings config.yml, as the
    names of our flags (absent keys are left out); the keys of the file it
    does not use; warnings about what it does not honour."""
    try:
        import yaml
    except ImportError:
        raise ConfigError("--config needs PyYAML (pip install PyYAML)") from None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read: {reason(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path}: cannot read: not UTF-8 ({e.reason})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"--config {path}: invalid YAML: {where}{getattr(e, 'problem', None) or e}") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise ConfigError(f"--config {path}: the document is not a mapping")

    def get(dotted: str, kind: type) -> Any:
        node: Any = doc
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        if node is None:
            return None
        if kind is int and isinstance(node, bool) or not isinstance(node, kind):
            raise ConfigError(f"--config {path}: `{dotted}` must be a {kind.__name__}")
        return node

    out: Dict[str, Any] = {
        "token": get("token", str),
        "panel_token_id": get("token_id", str),
        "panel_url": get("remote", str),
        "data_dir": get("system.data", str),
        "backup_dir": get("system.backup_directory", str),
        "compression_level": get("system.backups.compression_level", str),
        "write_limit": get("system.backups.write_limit", int),
        "max_running_backups": get("system.backups.max_running_backups", int),
    }
    allow = get("system.backups.restore_host_allowlist", list)
    if allow is not None:
        out["restore_host_allowlist"] = ",".join(str(a) for a in allow)
    host, port = get("api.host", str), get("api.port", int)
    if host or port:
        # Like the Go host: what the file leaves out comes from the default.
        host, port = host or "127.0.0.1", port or 8080
        out["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    warnings = []
    if get("api.ssl.enabled", bool):
        warnings.append("api.ssl in --config is ignored; this host serves plain HTTP (put a TLS proxy in front)")
    uid, gid = get("system.user.uid", int), get("system.user.gid", int)
    if uid is not None and gid is not None:
        out["owner"] = f"{uid}:{gid}"
    # As in the Go host, an empty value in the file means "not set".
    settings = {k: v for k, v in out.items() if v is not None and v != ""}
    return settings, ignored_config_keys(doc), warnings


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

    def flag(name: str, **kw: Any) -> None:
        # Go's flag package takes -name and --name alike; so does this host.
        p.add_argument(f"--{name}", f"-{name}", default=None, **kw)

    flag("listen", metavar="ADDR", help="address to listen on (default 127.0.0.1:8080)")
    flag("token", help="node token the Panel sends as a Bearer token (or env WINGS_TOKEN)")
    flag("data-dir", metavar="DIR", help=f"server data directory (default {WINGS_DATA_DIR})")
    flag("backup-dir", metavar="DIR", help=f"local backup directory (default {WINGS_BACKUP_DIR})")
    flag("panel-url", metavar="URL", help="Panel base URL; when set, results are reported to it")
    flag("panel-token-id", metavar="ID", help="token id for the Panel's remote API")
    flag("panel-token", metavar="TOKEN", help="token for the Panel's remote API (default: --token)")
    flag("compression-level", metavar="LEVEL", help="none, best_speed (default) or best_compression")
    flag("write-limit", type=non_negative, metavar="MIB", help="archive write limit in MiB/s (0 = none)")
    flag("disk-limit", type=non_negative, metavar="BYTES", help="disk limit for restores in bytes (0 = none)")
    flag("max-running-backups", type=non_negative, metavar="N",
         help=f"backups that run at once (default {MAX_RUNNING_BACKUPS}); more wait, accepted, for a slot")
    flag("owner", metavar="UID:GID", help="chown restored files to this owner")
    flag("restore-host-allowlist", metavar="LIST",
         help="comma-separated hosts, IPs or CIDRs that s3 download URLs may resolve to privately")
    p.add_argument("--async-restore", "-async-restore", action="store_true",
                   help="answer restores with 202 and run them in the background (Wings' behaviour)")
    flag("config", metavar="FILE", help="an existing Wings config.yml; flags override it")
    flag("read-header-timeout", type=parse_duration, metavar="DURATION",
         help=f"how long a client may take to send a request's headers (default {READ_HEADER_TIMEOUT_S:g}s)")
    flag("read-timeout", type=parse_duration, metavar="DURATION",
         help=f"how long a client may take to send a whole request, headers and body "
              f"(default {READ_TIMEOUT_S:g}s)")
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
    """What the flags, WINGS_TOKEN and --config add up to."""

    def __init__(self, args: argparse.Namespace, listen: str, token: str, engine: Dict[str, Any],
                 sources: Dict[str, str], ignored_keys: List[str], warnings: List[str]) -> None:
        self.args = args
        self.listen = listen
        self.token = token
        self.engine = engine
        self.sources = sources  # flag name -> "flag", "env" or "config"
        self.ignored_keys = ignored_keys
        self.warnings = warnings


def build_settings(args: argparse.Namespace) -> Tuple[str, str, Dict[str, Any]]:
    """(listen address, node token, engine configuration)."""
    s = resolve_settings(args)
    return s.listen, s.token, s.engine


def resolve_settings(args: argparse.Namespace) -> Settings:
    file_cfg, ignored, warnings = read_wings_config(args.config) if args.config else ({}, [], [])
    sources = {name.replace("_", "-"): "flag" for name, value in vars(args).items()
               if value is not None and value is not False}

    def pick(name: str, default: Any = None) -> Any:
        value = getattr(args, name)
        return value if value is not None else file_cfg.get(name, default)

    if args.token == "":
        raise ConfigError("--token must not be empty")
    token = args.token or os.environ.get("WINGS_TOKEN") or file_cfg.get("token")
    if not token:
        raise ConfigError("a node token is required: --token, WINGS_TOKEN or `token` in --config")
    engine: Dict[str, Any] = {
        "data_directory": pick("data_dir", WINGS_DATA_DIR),
        "backup_directory": pick("backup_dir", WINGS_BACKUP_DIR),
        "compression_level": pick("compression_level", "best_speed"),
        "write_limit": pick("write_limit", 0),
        "disk_limit": pick("disk_limit", 0),
    }
    max_backups = pick("max_running_backups")
    if max_backups is not None:  # else the engine's default
        if not 1 <= max_backups <= 1024:
            raise ConfigError("--max-running-backups must be from 1 to 1024")
        engine["max_running_backups"] = max_backups
    for name in ("listen", "data_dir", "backup_dir", "compression_level"):
        if pick(name) == "":
            raise ConfigError(f"--{name.replace('_', '-')} must not be empty")
    owner = pick("owner")
    if owner:
        m = re.fullmatch(r"(\d+):(\d+)", owner)
        if not m:
            raise ConfigError(f"--owner must be UID:GID, not {owner!r}")
        engine["owner"] = {"uid": int(m.group(1)), "gid": int(m.group(2))}
    allow = pick("restore_host_allowlist")
    if allow:
        engine["restore_host_allowlist"] = [a.strip() for a in allow.split(",") if a.strip()]
    panel_url = pick("panel_url")
    if panel_url:
        token_id = pick("panel_token_id")
        if not token_id:
            raise ConfigError("--panel-url needs --panel-token-id (or `token_id` in --config)")
        engine["panel"] = {"url": panel_url, "token_id": token_id,
                           "token": pick("panel_token") or token}
    for name in file_cfg:
        if getattr(args, name) is None and (name != "token" or not os.environ.get("WINGS_TOKEN")):
            sources[name.replace("_", "-")] = "config"
    if args.token is None and os.environ.get("WINGS_TOKEN"):
        sources["token"] = "env"
    return Settings(args, pick("listen", "127.0.0.1:8080"), token, engine, sources, ignored, warnings)


def reason(e: OSError) -> str:
    """An OSError without the path it carries, worded as Go's (the messages
    name the path themselves)."""
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]
