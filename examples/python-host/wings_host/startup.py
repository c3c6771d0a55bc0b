"""Start-up: the settings line, ignored --config keys, and the directories."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from .options import MAX_RUNNING_BACKUPS, READ_HEADER_TIMEOUT_S, READ_TIMEOUT_S, Settings, reason

log = logging.getLogger("python-host")


def logfmt(value: Any) -> str:
    """A log value as Go's log/slog text handler writes it: quoted when
    empty or holding spaces, quotes, '=' or unprintable characters."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if not text or any(c.isspace() or c in '"=' or not c.isprintable() for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it (15s, 500ms, 1m30s)."""
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    sec = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{h}h{m}m{sec}" if h else f"{m}m{sec}" if m else sec


def redact_url(raw: Optional[str]) -> str:
    """A URL fit for a log: user information and query replaced by
    REDACTED, fragment dropped."""
    from urllib.parse import urlsplit, urlunsplit
    if not raw:
        return "none"
    try:
        u = urlsplit(raw)
    except ValueError:
        return "REDACTED"
    netloc = "REDACTED@" + u.netloc.rsplit("@", 1)[1] if "@" in u.netloc else u.netloc
    return urlunsplit((u.scheme, netloc, u.path, "REDACTED" if u.query or raw.endswith("?") else "", ""))


def log_startup(s: Settings) -> None:
    """Logs, once at start, what --config holds that the host does not use,
    and the settings in effect with where each came from. The node and Panel
    tokens are never logged, and the Panel URL is logged without its
    credentials or query."""
    config = s.args.config
    for key in s.ignored_keys:
        log.warning("ignored --config key key=%s config=%s", logfmt(key), logfmt(config))
    for warning in s.warnings:
        log.warning("%s config=%s", warning, logfmt(config))
    e = s.engine
    owner = e.get("owner")
    fields: List[Tuple[str, Any]] = [
        ("listen", s.listen),
        ("data_dir", e["data_directory"]),
        ("backup_dir", e["backup_directory"]),
        ("compression_level", e["compression_level"]),
        ("write_limit_mib", e["write_limit"]),
        ("disk_limit_bytes", e["disk_limit"]),
        ("max_running_backups", e.get("max_running_backups", MAX_RUNNING_BACKUPS)),
        ("owner", f"{owner['uid']}:{owner['gid']}" if owner else "none"),
        ("panel_url", redact_url(e.get("panel", {}).get("url"))),
        ("restore_host_allowlist", ",".join(e.get("restore_host_allowlist", [])) or "none"),
        ("async_restore", bool(s.args.async_restore)),
        ("read_header_timeout", go_duration(s.args.read_header_timeout or READ_HEADER_TIMEOUT_S)),
        ("read_timeout", go_duration(s.args.read_timeout or READ_TIMEOUT_S)),
        ("config", config or "none"),
    ]
    for source in ("flag", "env", "config"):
        names = sorted(n for n, src in s.sources.items() if src == source)
        fields.append((f"from_{source}", ",".join(names) or "none"))
    log.info("settings %s", " ".join(f"{k}={logfmt(v)}" for k, v in fields))


class StartError(Exception):
    pass


def prepare_directories(engine_config: Dict[str, Any]) -> None:
    """Creates the data and backup directories if they are missing (as
    Wings does) and checks that they are directories and that the backup
    directory is writable, so that a start-up error names its path."""
    for flag_name, path, mode in (("data-dir", engine_config["data_directory"], 0o755),
                                  ("backup-dir", engine_config["backup_directory"], 0o700)):
        try:
            if not os.path.isdir(path):
                os.stat(path)  # raises when missing, or when a parent is not a directory
                raise StartError(f"--{flag_name} {path}: not a directory")
        except FileNotFoundError:
            try:
                os.makedirs(path, 0o755)
                os.chmod(path, mode)
            except OSError as e:
                raise StartError(f"--{flag_name} {path}: cannot create it: {reason(e)}") from None
            log.info("created directory flag=--%s path=%s mode=%s", flag_name, logfmt(path),
                     oct(mode)[2:].rjust(4, "0"))
        except OSError as e:
            raise StartError(f"--{flag_name} {path}: {reason(e)}") from None
    backup_dir = engine_config["backup_directory"]
    if not os.access(backup_dir, os.W_OK | os.X_OK):
        raise StartError(f"--backup-dir {backup_dir}: not writable: permission denied")

