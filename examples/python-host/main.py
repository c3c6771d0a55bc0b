#!/usr/bin/env python3
"""A Wings-compatible backup HTTP host in Python, over bindings/python.

    python3 examples/python-host/main.py --token SECRET --data-dir ./var/volumes \
        --backup-dir ./var/backups [--listen 127.0.0.1:8080] [flags]

It serves the three backup endpoints of CONTRACT section 1 with Flask on
waitress (one process, many threads: the engine's one-operation-per-server
guard lives in this process). The engine does the work and the validation;
this file does HTTP: authentication, the request-size limit, mapping errors
to statuses, running backups in the background, logging and shutdown. It has
the same flags as examples/go-host.

Decisions worth knowing:
- POST .../backup answers 202 once the engine reports phase STARTED (so an
  error found at the start is still the request's status), or at once when
  the backup has to queue behind the MAX_RUNNING_BACKUPS running ones. The
  host keeps queued and running operations in a table, so a duplicate backup
  uuid or a busy server is 409 even before the engine has seen the backup.
- Bodies over 1 MiB are 413 with a JSON error. waitress itself refuses bodies
  over WAITRESS_BODY_LIMIT (a plain-text 413) so that it never buffers more.
- SIGINT/SIGTERM: stop accepting connections, cancel running work, wait up to
  SHUTDOWN_WAIT_S for it and for in-flight requests, exit 0.
- Slow clients: waitress reads a whole request before a worker thread sees
  it, so a client sending byte by byte holds no worker, but it would hold its
  connection for as long as it keeps trickling (waitress' channel_timeout
  only counts silence). The host drops a connection whose request headers are
  not in after --read-header-timeout, or whose whole request is not in after
  --read-timeout (the Go host's net/http timeouts of the same names), and a
  new connection that sends nothing within --read-header-timeout.
- Errors waitress answers itself (a body over WAITRESS_BODY_LIMIT, a request
  it cannot parse) get a JSON {"error"} body too.
- The Panel is told of results by the engine itself when --panel-url is set.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

_CHECKOUT_BINDING = Path(__file__).resolve().parent.parent.parent / "bindings" / "python"
if (_CHECKOUT_BINDING / "wings_backup" / "__init__.py").is_file():
    # Run from a source checkout: use the binding that sits beside this host.
    sys.path.insert(0, str(_CHECKOUT_BINDING))

from flask import Flask, Response, jsonify, request  # noqa: E402
from werkzeug.exceptions import HTTPException  # noqa: E402

import wings_backup as wb  # noqa: E402

log = logging.getLogger("python-host")

BODY_LIMIT = 1 << 20
WAITRESS_BODY_LIMIT = 16 << 20
MAX_RUNNING_BACKUPS = 4
HTTP_THREADS = 64  # a synchronous restore holds one for its whole length
READ_HEADER_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 30.0
ACCEPT_WAIT_S = 30.0
SHUTDOWN_WAIT_S = 30.0

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

MSG_NO_AUTH = "The required authorization heads were not present in the request."
MSG_FORBIDDEN = "You are not authorized to access this endpoint."
MSG_NO_SERVER = "The requested resource does not exist on this instance."
MSG_NOT_ALLOWED = "The requested method is not allowed on this endpoint."
MSG_TOO_LARGE = "The request body is larger than the 1 MiB allowed."
MSG_UNEXPECTED = "An unexpected error was encountered while processing this request."
MSG_SHUTTING_DOWN = "The node is shutting down."
MSG_UUID_RUNNING = "A backup with this uuid is already running."
MSG_SERVER_BUSY = "Another {} is already running for this server."
MSG_STUCK = "The running backup did not stop in time."
MSG_BAD_REQUEST = "The request could not be parsed."
MSG_HEADERS_TOO_LARGE = "The request headers are too large."

WINGS_DATA_DIR = "/var/lib/pterodactyl/volumes"
WINGS_BACKUP_DIR = "/var/lib/pterodactyl/backups"


# --------------------------------------------------------------------------
# Configuration: flags over an optional Wings config.yml over defaults.

class ConfigError(Exception):
    pass


# The keys of a Wings config.yml this host uses, as dotted paths (the Go
# host has the same list). Every other key in the file is logged as ignored.
WINGS_CONFIG_KEYS = (
    "token_id", "token", "remote",
    "api.host", "api.port", "api.ssl.enabled",
    "system.data", "system.backup_directory", "system.user.uid", "system.user.gid",
    "system.backups.compression_level", "system.backups.write_limit", "system.backups.restore_host_allowlist",
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


# --------------------------------------------------------------------------
# Operations: what runs or waits, so that duplicates and busy servers are 409.

class Job:
    """One backup or restore, from acceptance to its end."""

    def __init__(self, kind: str, server: str, backup: str) -> None:
        self.kind = kind
        self.server = server
        self.backup = backup  # lower case
        self.token = wb.CancelToken()
        self.cond = threading.Condition()
        self.queued = False  # waiting for a backup slot
        self.started = False  # the engine reported phase STARTED
        self.done = False
        self.error: Optional[wb.WingsBackupError] = None
        self.bytes = 0  # archive bytes: written by a backup, read by a restore
        self.began = time.monotonic()

    def on_progress(self, p: wb.Progress) -> None:
        if p.phase == wb.Phase.STARTED:
            self._update(started=True)
        elif p.phase == wb.Phase.EXTRACT:
            self.bytes = p.bytes_done

    def _update(self, **fields: Any) -> None:
        with self.cond:
            for k, v in fields.items():
                setattr(self, k, v)
            self.cond.notify_all()

    def mark_queued(self) -> None:
        self._update(queued=True)

    def finish(self, error: Optional[wb.WingsBackupError]) -> None:
        self._update(error=error, done=True)

    def wait_accepted(self, timeout: float) -> Optional[wb.WingsBackupError]:
        """Waits until the job has started, is queued, or has ended; returns
        its error if it failed before it started."""
        with self.cond:
            self.cond.wait_for(lambda: self.started or self.queued or self.done, timeout)
            return self.error if self.done and not self.started else None

    def wait_done(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.done, timeout)


class Operations:
    """The backups and restores this host has accepted and not finished. The
    engine guards what it runs, but a backup waiting for a slot is invisible
    to it, so the host answers 409 for those itself."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_server: Dict[str, Job] = {}
        self.by_backup: Dict[str, Job] = {}
        # Every job from reserve to release, including one whose server was
        # given back at its report phase: shutdown cancels them all, so that
        # an engine still retrying a Panel report parks it and returns.
        self.all_jobs: Set[Job] = set()
        self.shutting_down = False

    def reserve(self, kind: str, server: str, backup: str) -> Job:
        with self.lock:
            if self.shutting_down:
                raise wb.CancelledError(wb.Status.CANCELLED, MSG_SHUTTING_DOWN)
            if kind == "backup" and backup in self.by_backup:
                raise wb.ConflictError(wb.Status.CONFLICT, MSG_UUID_RUNNING)
            current = self.by_server.get(server)
            if current is not None:
                raise wb.ConflictError(wb.Status.CONFLICT, MSG_SERVER_BUSY.format(current.kind))
            job = Job(kind, server, backup)
            self.by_server[server] = job
            self.all_jobs.add(job)
            if kind == "backup":
                self.by_backup[backup] = job
            return job

    def free_server(self, job: Job) -> None:
        with self.lock:
            if self.by_server.get(job.server) is job:
                del self.by_server[job.server]

    def release(self, job: Job) -> None:
        with self.lock:
            if self.by_server.get(job.server) is job:
                del self.by_server[job.server]
            if self.by_backup.get(job.backup) is job:
                del self.by_backup[job.backup]
            self.all_jobs.discard(job)

    def backup_job(self, backup: str) -> Optional[Job]:
        with self.lock:
            return self.by_backup.get(backup)

    def shut_down(self) -> List[Job]:
        """Refuses new work and cancels what runs or waits; returns it."""
        with self.lock:
            self.shutting_down = True
            jobs = list(self.all_jobs)
        for job in jobs:
            job.token.cancel()
        return jobs


# --------------------------------------------------------------------------
# The HTTP application.

def json_error(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def empty(status: int) -> Response:
    resp = Response(status=status)
    del resp.headers["Content-Type"]
    return resp


class Host:
    def __init__(self, engine: wb.Engine, token: str, data_dir: str, async_restore: bool) -> None:
        self.engine = engine
        self.token = token.encode("utf-8")
        self.data_dir = data_dir
        self.async_restore = async_restore
        self.ops = Operations()
        self.backup_slots = threading.BoundedSemaphore(MAX_RUNNING_BACKUPS)
        self.threads: List[threading.Thread] = []
        self.threads_lock = threading.Lock()
        self.background_token = wb.CancelToken()  # for work that is not a Job
        self.app = self._make_app()

    # -- request plumbing ---------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask("wings_backup_python_host")
        app.config["MAX_CONTENT_LENGTH"] = BODY_LIMIT
        # "//" in a path is a 404 as in the Go host, not a redirect to the
        # merged path.
        app.url_map.merge_slashes = False
        app.before_request(self.authenticate)
        app.before_request(self.refuse_leading_slashes)
        # No automatic OPTIONS answer: a method the endpoint does not take is
        # 405, whatever it is (as in the Go host).
        app.add_url_rule("/api/servers/<server>/backup", "create", self.create, methods=["POST"],
                         provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>/restore", "restore", self.restore,
                         methods=["POST"], provide_automatic_options=False)
        app.add_url_rule("/api/servers/<server>/backup/<backup>", "delete", self.delete,
                         methods=["DELETE"], provide_automatic_options=False)
        app.register_error_handler(wb.WingsBackupError, self.engine_error)
        app.register_error_handler(HTTPException, self.http_error)
        app.register_error_handler(Exception, self.unexpected_error)
        return app

    def authenticate(self) -> Optional[Response]:
        # As Wings: split on the first space; the scheme is "Bearer", exactly.
        parts = request.headers.get("Authorization", "").split(" ", 1)
        if len(parts) != 2 or parts[0] != "Bearer":
            return json_error(401, MSG_NO_AUTH, {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(parts[1].encode("latin-1", "replace"), self.token):
            return json_error(403, MSG_FORBIDDEN)
        return None

    @staticmethod
    def refuse_leading_slashes() -> Optional[Response]:
        # waitress turns "//api/..." into "/api/..."; the Go host (and Wings)
        # have no such route.
        if request.environ.get("REQUEST_URI", "").startswith("//"):
            return json_error(404, MSG_NO_SERVER)
        return None

    def engine_error(self, e: wb.WingsBackupError) -> Response:
        return json_error(e.http_status, e.message)

    def http_error(self, e: HTTPException) -> Response:
        messages = {404: MSG_NO_SERVER, 405: MSG_NOT_ALLOWED, 413: MSG_TOO_LARGE}
        status = e.code or 500
        resp = json_error(status, messages.get(status, e.name))
        allowed = [m for m in getattr(e, "valid_methods", None) or [] if m not in ("HEAD", "OPTIONS")]
        if allowed:
            resp.headers["Allow"] = ", ".join(allowed)
        return resp

    def unexpected_error(self, e: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, MSG_UNEXPECTED)

    def require_server(self, server: str) -> None:
        """Wings' ServerExists: a canonical UUID naming a server directory, else 404."""
        if not UUID_RE.fullmatch(server) or not os.path.isdir(os.path.join(self.data_dir, server)):
            raise wb.NotFoundError(wb.Status.NOT_FOUND, MSG_NO_SERVER)

    @staticmethod
    def body() -> bytes:
        return request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH

    # -- endpoints ------------------------------------------------------------

    def create(self, server: str) -> Response:
        self.require_server(server)
        body = self.body()
        self.engine.check_create(server, body)
        backup = str(json.loads(body)["uuid"]).lower()  # the engine checked it is there
        job = self.ops.reserve("backup", server, backup)
        self._spawn(self._run_backup, job, body)
        error = job.wait_accepted(ACCEPT_WAIT_S)
        if error is not None:
            raise error
        return empty(202)

    def restore(self, server: str, backup: str) -> Response:
        self.require_server(server)
        body = self.body()
        self.engine.check_restore(server, backup, body)
        job = self.ops.reserve("restore", server, backup.lower())
        if self.async_restore:
            self._spawn(self._run_restore, job, body)
            error = job.wait_accepted(ACCEPT_WAIT_S)
            if error is not None:
                raise error
            return empty(202)
        # Synchronous, on this request's thread. A client that gives up does
        # not stop it halfway: only shutdown cancels it.
        self._run_restore(job, body)
        if job.error is not None:
            raise job.error
        return empty(204)

    def delete(self, server: str, backup: str) -> Response:
        """A backup still running or waiting for a slot is cancelled first,
        and counts as deleted."""
        self.require_server(server)
        job = self.ops.backup_job(backup.lower())
        if job is None:
            self.engine.delete_backup(server, backup)
        else:
            job.token.cancel()
            if not job.wait_done(60):
                raise wb.InternalError(wb.Status.INTERNAL, MSG_STUCK)
            try:
                self.engine.delete_backup(server, backup)
            except wb.NotFoundError:
                pass
        log.info("backup deleted backup=%s server=%s", backup.lower(), server)
        return empty(204)

    # -- background work ------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name=target.__name__)
        with self.threads_lock:
            self.threads = [x for x in self.threads if x.is_alive()] + [t]
        t.start()

    def _freeing_at_report(self, job: Job, slot: List[bool]) -> Callable[[wb.Progress], None]:
        """The progress callback of job's engine call: at phase REPORT the
        server (and the backup slot) are given back. The engine lets go of
        the server before it tells the Panel, and so does the host: a slow or
        unreachable Panel (reports are retried for minutes) must not keep a
        server busy. The backup uuid stays taken until the call ends."""

        def progress(p: wb.Progress) -> None:
            job.on_progress(p)
            if p.phase == wb.Phase.REPORT:
                self._free(job, slot)

        return progress

    def _free(self, job: Job, slot: List[bool]) -> None:
        self.ops.free_server(job)
        if slot[0]:
            slot[0] = False
            self.backup_slots.release()

    def _run_backup(self, job: Job, body: bytes) -> None:
        details: Dict[str, Any] = {}
        error: Optional[wb.WingsBackupError] = None
        # slot[0]: this job holds one of backup_slots (runs on this thread
        # only, the progress callback included).
        slot = [self.backup_slots.acquire(blocking=False)]
        try:
            if not slot[0]:
                job.mark_queued()
                while not job.token.cancelled:
                    if self.backup_slots.acquire(timeout=0.25):
                        slot[0] = True
                        break
            # Cancelled while queued, the call still runs and fails at once
            # (its token is triggered), so that the engine reports the end
            # of the backup to the Panel.
            details = self.engine.create_backup(job.server, body, progress=self._freeing_at_report(job, slot),
                                                cancel=job.token)
            job.bytes = int(details.get("size", 0))
        except wb.WingsBackupError as e:
            error = e
        except Exception as e:  # a bug here must not leave the server held
            log.exception("backup %s", job.backup)
            error = wb.InternalError(wb.Status.INTERNAL, f"internal error: {e}")
        finally:
            self._free(job, slot)
            self._finish(job, error, details)

    def _run_restore(self, job: Job, body: bytes) -> None:
        error: Optional[wb.WingsBackupError] = None
        try:
            self.engine.restore_backup(job.server, job.backup, body,
                                       progress=self._freeing_at_report(job, [False]), cancel=job.token)
        except wb.WingsBackupError as e:
            error = e
        except Exception as e:
            log.exception("restore %s", job.backup)
            error = wb.InternalError(wb.Status.INTERNAL, f"internal error: {e}")
        finally:
            self._finish(job, error, {})

    def _finish(self, job: Job, error: Optional[wb.WingsBackupError], details: Dict[str, Any]) -> None:
        self.ops.release(job)
        took = time.monotonic() - job.began
        if error is None:
            sha1 = f" sha1={details['checksum']}" if details.get("checksum") else ""
            log.info("%s finished backup=%s server=%s outcome=ok bytes=%d%s duration=%.3fs",
                     job.kind, job.backup, job.server, job.bytes, sha1, took)
        else:
            log.warning("%s finished backup=%s server=%s outcome=%s bytes=%d duration=%.3fs error=%r",
                        job.kind, job.backup, job.server, error.status_name, job.bytes, took,
                        error.message)
        job.finish(error)
        job.token.close()

    def send_pending_reports(self) -> None:
        try:
            summary = self.engine.send_pending_reports(cancel=self.background_token)
            if summary.get("sent") or summary.get("pending"):
                log.info("pending Panel reports sent=%s still_pending=%s",
                         summary.get("sent"), summary.get("pending"))
        except wb.WingsBackupError as e:
            log.warning("sending pending Panel reports: %s", e.message)

    # -- shutdown -------------------------------------------------------------

    def shut_down(self, deadline: float) -> bool:
        """Cancels all work and waits for it until `deadline`; True if it all ended."""
        self.background_token.cancel()
        jobs = self.ops.shut_down()
        for job in jobs:
            job.wait_done(max(0.0, deadline - time.monotonic()))
        with self.threads_lock:
            threads = list(self.threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


class RequestLog:
    """WSGI middleware: one log line per request, and a count of requests in
    flight (shutdown waits for them)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.in_flight = 0

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        began = time.monotonic()
        status: List[str] = ["-"]

        def capture(s: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = s.split(" ", 1)[0]
            return start_response(s, headers, exc_info)

        with self.lock:
            self.in_flight += 1
        try:
            yield from self.app(environ, capture)
        finally:
            with self.lock:
                self.in_flight -= 1
            log.info('%s "%s %s" %s %.1fms', environ.get("REMOTE_ADDR", "-"),
                     environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), status[0],
                     (time.monotonic() - began) * 1000)

    def wait_idle(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    return
            time.sleep(0.05)


# --------------------------------------------------------------------------

def waitress_listen(addr: str) -> str:
    # Go's ":8080" means every interface.
    return "*" + addr if addr.startswith(":") else addr


def serve(host: Host, listen: str, read_header_timeout: float = READ_HEADER_TIMEOUT_S,
          read_timeout: float = READ_TIMEOUT_S) -> None:
    from waitress import create_server, wasyncore
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.server import BaseWSGIServer
    from waitress.task import ErrorTask

    class TimedParser(HTTPRequestParser):
        """A request being read, stamped with when its first byte came."""

        def __init__(self, adj: Any) -> None:
            super().__init__(adj)
            self.began = time.time()

    class JsonErrorTask(ErrorTask):
        """waitress' own error replies, as {"error": ...} like every other."""

        def execute(self) -> None:
            e = self.request.error
            message = {400: MSG_BAD_REQUEST, 413: MSG_TOO_LARGE, 431: MSG_HEADERS_TOO_LARGE}.get(
                e.code, MSG_UNEXPECTED)
            body = json.dumps({"error": message}).encode()
            self.status = f"{e.code} {e.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class Channel(HTTPChannel):
        parser_class = TimedParser
        error_task_class = JsonErrorTask

    wsgi = RequestLog(host.app)
    socket_map: Dict[int, Any] = {}
    # cleanup_interval: how often maintenance() below looks for slow clients.
    server = create_server(wsgi, map=socket_map, listen=waitress_listen(listen),
                           threads=HTTP_THREADS, max_request_body_size=WAITRESS_BODY_LIMIT,
                           ident="wings-backup", cleanup_interval=1)
    listeners = [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]

    def drop_slow_clients(listener: BaseWSGIServer) -> None:
        idle_maintenance = listener.maintenance

        def maintenance(now: float) -> None:
            idle_maintenance(now)
            for channel in list(listener.active_channels.values()):
                if channel.will_close or channel.requests:
                    continue  # closing already, or a request is being served
                request = channel.request
                if request is not None:
                    began = request.began
                    limit = read_timeout if request.headers_finished else read_header_timeout
                elif channel.last_activity == channel.creation_time:
                    began, limit = channel.creation_time, read_header_timeout  # never sent a byte
                else:
                    continue  # idle between requests: waitress' channel_timeout
                if now - began > limit:
                    channel.will_close = True

        listener.maintenance = maintenance

    for listener in listeners:
        listener.channel_class = Channel
        drop_slow_clients(listener)
        log.info("listening on http://%s:%s", listener.effective_host, listener.effective_port)
    # The wasyncore loop is not thread-safe: other threads hand it work
    # through a trigger.
    trigger = listeners[0].trigger
    stopping = threading.Event()

    def stop_accepting() -> None:
        for listener in listeners:
            wasyncore.dispatcher.close(listener)  # the listening socket only

    def drain() -> None:
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        trigger.pull_trigger(stop_accepting)
        if not host.shut_down(deadline):
            log.warning("some operations did not stop within %.0fs", SHUTDOWN_WAIT_S)
        wsgi.wait_idle(deadline)
        # Let waitress write the last responses out, then end its loop.
        while time.monotonic() < deadline and any(
                isinstance(c, HTTPChannel) and c.total_outbufs_len for c in list(socket_map.values())):
            time.sleep(0.05)
        trigger.pull_trigger(lambda: wasyncore.close_all(socket_map))

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.info("%s: shutting down", signal.Signals(signum).name)
        threading.Thread(target=drain, name="drain", daemon=True).start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.run()
    listeners[0].task_dispatcher.shutdown(timeout=5)


# --------------------------------------------------------------------------
# Start-up: what is logged, and the directories.

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


def reason(e: OSError) -> str:
    """An OSError without the path it carries, worded as Go's (the messages
    name the path themselves)."""
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


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


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        settings = resolve_settings(args)
        listen, token, engine_config = settings.listen, settings.token, settings.engine
        log_startup(settings)
        prepare_directories(engine_config)
        engine = wb.Engine(engine_config)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    except StartError as e:
        log.error("%s", e)
        return 1
    except wb.WingsBackupError as e:
        log.error("starting the engine: %s", e.message)
        return 1
    log.info("engine started library=%s deflate=%s", wb.library_version(), wb.deflate_backend())
    host = Host(engine, token, engine_config["data_directory"], bool(args.async_restore))
    if "panel" in engine_config:
        host._spawn(host.send_pending_reports)
    try:
        serve(host, listen,
              args.read_header_timeout if args.read_header_timeout is not None else READ_HEADER_TIMEOUT_S,
              args.read_timeout if args.read_timeout is not None else READ_TIMEOUT_S)
    except OSError as e:
        log.error("cannot listen on %s: %s", listen, e)
        return 1
    if any(t.is_alive() for t in host.threads):
        logging.shutdown()
        os._exit(0)  # a call is still running in a daemon thread: do not wait
    engine.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
