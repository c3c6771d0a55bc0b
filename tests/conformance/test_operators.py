"""What an operator sees of the hosts (issue 15, item 11), against each host:
the settings in effect logged at start (never a token), every key of a Wings
config.yml the host does not use logged as a warning with its dotted path,
--version, --help listing the flags as --name, start-up errors naming the
path they are about; and `make serve` (scripts/serve.sh) choosing a port
that works and printing it only once the host listens.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import requests

from conftest import LIBRARY, REPO, free_port, host_command, start_host, stop_host

RUN_TIMEOUT = 30.0

# Keys of the config file below that neither host uses, in file order: Wings
# settings the hosts do not implement, a misplaced block (`backups:` belongs
# under `system:`) and a typo (`compresion_level`).
IGNORED_KEYS = [
    "debug",
    "uuid",
    "api.upload_limit",
    "api.ssl.cert",
    "backups.compression_level",
    "backups.write_limit",
    "system.sftp.bind_port",
    "system.user.rootless.enabled",
    "system.backups.compresion_level",
    "docker",
    "allowed_mounts",
]
USED_KEYS = ["token_id", "token", "remote", "api.host", "api.port", "api.ssl.enabled", "system.data",
             "system.backup_directory", "system.user.uid", "system.user.gid",
             "system.backups.compression_level", "system.backups.restore_host_allowlist"]

CONFIG = """\
debug: true
uuid: 2b0c3a52-0000-4000-8000-000000000000
token_id: node-id
token: file-token-secret
remote: http://panel-user:pw-secret@127.0.0.1:9/panel?key=qs-secret
api:
  host: 127.0.0.1
  port: 8080
  upload_limit: 100
  ssl:
    enabled: false
    cert: /etc/ssl/node.pem
backups:
  compression_level: none
  write_limit: 5
system:
  data: /nonexistent/volumes
  backup_directory: /nonexistent/backups
  sftp:
    bind_port: 2022
  user:
    uid: {uid}
    gid: {gid}
    rootless:
      enabled: false
  backups:
    compression_level: best_compression
    compresion_level: none
    restore_host_allowlist: [minio.internal, 10.1.0.0/16]
docker: {{}}
allowed_mounts: []
"""


def host_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("WINGS_TOKEN", None)
    env.setdefault("WINGS_BACKUP_LIB", str(LIBRARY))
    env.update(extra)
    return env


def run_host(kind: str, args: List[str]) -> subprocess.CompletedProcess:
    """Runs a host that is expected to exit by itself (bounded)."""
    return subprocess.run(host_command(kind) + args, cwd=REPO, env=host_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


def library_version() -> str:
    m = re.search(r'(?m)^version = "([^"]+)"', (REPO / "Cargo.toml").read_text())
    assert m
    return m.group(1)


# --------------------------------------------------------------------------- start-up log


def test_start_log_names_settings_and_every_ignored_config_key(host_kind: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(CONFIG.format(uid=os.getuid(), gid=os.getgid()))
    # The flags start_host passes (--token, --listen, --data-dir, --backup-dir,
    # --write-limit 1) are over the file's values.
    host = start_host(host_kind, tmp_path / "node", None, ["--config", str(config)])
    try:
        log = host.log_path.read_text(errors="replace")
    finally:
        assert stop_host(host) == 0, host.log()

    ignored = re.findall(r"ignored --config key\"? key=(\S+)", log)
    assert ignored == IGNORED_KEYS, log
    for key in IGNORED_KEYS:
        line = next(ln for ln in log.splitlines() if re.search(rf"key={re.escape(key)}(\s|$)", ln))
        assert "WARN" in line and str(config) in line, line
    for key in USED_KEYS:
        assert not re.search(rf"key={re.escape(key)}(\s|$)", log), f"{key} is used, yet reported:\n{log}"

    settings = [ln for ln in log.splitlines() if re.search(r"\bsettings listen=|msg=settings ", ln)]
    assert len(settings) == 1, log
    fields = dict(re.findall(r"(\w+)=(\S+)", settings[0].split("settings", 1)[1]))
    assert fields["listen"] == f"127.0.0.1:{host.port}"
    assert fields["data_dir"] == str(host.data) and fields["backup_dir"] == str(host.backups)
    assert fields["compression_level"] == "best_compression"
    assert fields["write_limit_mib"] == "1" and fields["disk_limit_bytes"] == "0"
    assert fields["owner"] == f"{os.getuid()}:{os.getgid()}"
    assert fields["panel_url"] == "http://REDACTED@127.0.0.1:9/panel?REDACTED"
    assert fields["restore_host_allowlist"] == "minio.internal,10.1.0.0/16"
    assert fields["async_restore"] == "false"
    assert fields["read_header_timeout"] == "15s" and fields["read_timeout"] == "30s"
    assert fields["config"] == str(config)
    assert set(fields["from_flag"].split(",")) == {"listen", "token", "data-dir", "backup-dir", "write-limit",
                                                     "config"}
    assert fields["from_env"] == "none"
    assert set(fields["from_config"].split(",")) == {"compression-level", "owner", "panel-url", "panel-token-id",
                                                       "restore-host-allowlist"}
    # No token, no credential of the Panel URL.
    for secret in (host.token, "file-token-secret", "pw-secret", "qs-secret", "panel-user"):
        assert secret not in log, f"{host_kind} host logged {secret!r}:\n{log}"


def test_start_log_says_where_the_token_came_from(host_kind: str, tmp_path: Path) -> None:
    port = free_port()
    token = "env-token-" + os.urandom(8).hex()
    proc = subprocess.Popen(host_command(host_kind) + ["--listen", f"127.0.0.1:{port}", "--data-dir",
                                                       str(tmp_path / "v"), "--backup-dir", str(tmp_path / "b")],
                            cwd=REPO, env=host_env(WINGS_TOKEN=token), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, out
    assert re.search(r"from_env=token(\s|$)", out), out
    assert token not in out
    # Missing directories are created, and the log says so with their paths.
    for flag, path in (("--data-dir", tmp_path / "v"), ("--backup-dir", tmp_path / "b")):
        assert path.is_dir()
        assert re.search(rf"created directory\"? flag={flag} path={re.escape(str(path))}(\s|$)", out), out
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o700


# --------------------------------------------------------------------------- --version, --help


def test_version(host_kind: str, tmp_path: Path) -> None:
    res = run_host(host_kind, ["--version"])
    assert res.returncode == 0, res.stderr
    name = "go-host" if host_kind == "go" else "python-host"
    assert res.stdout.strip() == f"{name}, libwings_backup {library_version()}", res.stdout + res.stderr
    if host_kind == "go":
        # The Go host names itself as invoked: `make install` installs it as
        # wings-backup-host, and that is the name its --version prints.
        installed = tmp_path / "bin" / "wings-backup-host"
        installed.parent.mkdir()
        shutil.copy2(host_command("go")[0], installed)
        res = subprocess.run([str(installed), "--version"], cwd=tmp_path, env=host_env(), capture_output=True,
                             text=True, timeout=RUN_TIMEOUT)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"wings-backup-host, libwings_backup {library_version()}", res.stdout


HOST_FLAGS = {"--listen", "--token", "--data-dir", "--backup-dir", "--panel-url", "--panel-token-id",
              "--panel-token", "--compression-level", "--write-limit", "--disk-limit", "--owner",
              "--restore-host-allowlist", "--async-restore", "--config", "--read-header-timeout",
              "--read-timeout", "--version", "--max-running-backups", "--no-backup-reuse"}


def test_help_lists_the_flags_with_double_dashes(host_kind: str) -> None:
    res = run_host(host_kind, ["--help"])
    assert res.returncode == 0, res.stderr
    text = res.stdout + res.stderr
    listed = set(re.findall(r"(?m)^ {2}(?:-h, )?(--[a-z][a-z-]*)", text)) - {"--help"}
    assert listed == HOST_FLAGS, text
    single = re.findall(r"(?m)^\s+(-[a-z][a-z-]+)\b", text)
    assert not single, f"{host_kind} --help shows single-dash flags {single}:\n{text}"
    # Every flag the README documents is one the host lists.
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The hosts", 1)[1].split("```", 2)[1]
    documented = set(re.findall(r"--[a-z][a-z-]*", block))
    assert documented and documented <= HOST_FLAGS, documented - HOST_FLAGS
    # The single-dash spelling Go's flag package takes still works.
    assert run_host(host_kind, ["-version"]).returncode == 0


# --------------------------------------------------------------------------- start-up errors


def error_cases(tmp: Path) -> List[Tuple[str, List[str], int, str, str]]:
    """(name, flags, exit code, path the message must name, words it must hold)."""
    a_file = tmp / "a-file"
    a_file.write_text("not a directory\n")
    bad_yaml = tmp / "bad.yml"
    bad_yaml.write_text("token: t\napi: [\n")
    volumes, backups = tmp / "volumes", tmp / "backups"
    return [
        ("config missing", ["--config", str(tmp / "missing.yml")], 2, str(tmp / "missing.yml"), "cannot read"),
        ("config invalid YAML", ["--config", str(bad_yaml)], 2, str(bad_yaml), "invalid yaml"),
        ("data dir cannot be created", ["--data-dir", str(a_file / "volumes"), "--backup-dir", str(backups)],
         1, str(a_file / "volumes"), "not a directory"),
        ("data dir is a file", ["--data-dir", str(a_file), "--backup-dir", str(backups)],
         1, str(a_file), "not a directory"),
        ("backup dir cannot be created", ["--data-dir", str(volumes), "--backup-dir", str(a_file / "backups")],
         1, str(a_file / "backups"), "not a directory"),
        ("backup dir is a file", ["--data-dir", str(volumes), "--backup-dir", str(a_file)],
         1, str(a_file), "not a directory"),
    ]


@pytest.mark.parametrize("case", range(6), ids=["config missing", "config invalid YAML",
                                                "data dir cannot be created", "data dir is a file",
                                                "backup dir cannot be created", "backup dir is a file"])
def test_start_errors_name_their_path(host_kind: str, tmp_path: Path, case: int) -> None:
    name, flags, code, path, words = error_cases(tmp_path)[case]
    res = run_host(host_kind, ["--token", "t", "--listen", f"127.0.0.1:{free_port()}"] + flags)
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if "ERROR" in ln or ln.startswith("go-host:")]
    assert res.returncode == code, f"{name}: {res.returncode}\n{res.stderr}"
    assert len(errors) == 1, res.stderr
    flag = flags[flags.index(path) - 1]
    assert f"{flag} {path}: " in errors[0], f"{name}: the message does not name {flag} {path}: {errors[0]}"
    assert words in errors[0].lower(), errors[0]


@pytest.mark.parametrize("flags,named,words", [
    (["--compression-level", "fast"], "--compression-level", 'unknown level "fast"'),
    (["--write-limit", "2000000"], "--write-limit", "from 0 to 1048576"),
    (["--restore-host-allowlist", "bad host!"], "--restore-host-allowlist", '"bad host!"'),
    (["--panel-url", "ftp://panel.example", "--panel-token-id", "id"], "--panel-url", "http:// or https://"),
    ([], "system.backups.compression_level", 'unknown level "fast"'),
], ids=["flag level", "flag write limit", "flag allowlist", "flag panel url", "config level"])
def test_bad_values_are_bad_settings(host_kind: str, tmp_path: Path, flags: List[str], named: str,
                                     words: str) -> None:
    """A value the engine refuses exits 2 naming where it was written, before
    any directory is made."""
    config = tmp_path / "config.yml"
    config.write_text("system:\n  backups:\n    compression_level: fast\n")
    if not flags:
        flags = ["--config", str(config)]
        named = f"--config {config}: {named}"
    volumes = tmp_path / "volumes"
    res = run_host(host_kind, ["--token", "t", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(volumes),
                               "--backup-dir", str(tmp_path / "backups")] + flags)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if "ERROR" in ln or ln.startswith("go-host:")]
    assert len(errors) == 1, res.stderr
    assert named in errors[0] and words in errors[0], errors[0]
    assert "configuration key" not in errors[0], errors[0]
    assert not volumes.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to any directory")
def test_unwritable_backup_dir_is_named(host_kind: str, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o500)
    res = run_host(host_kind, ["--token", "t", "--data-dir", str(tmp_path / "v"), "--backup-dir", str(backups),
                               "--listen", f"127.0.0.1:{free_port()}"])
    assert res.returncode == 1, res.stderr
    assert f"--backup-dir {backups}: not writable" in res.stderr, res.stderr


# --------------------------------------------------------------------------- make serve

SERVE = REPO / "scripts" / "serve.sh"


class Serve:
    """scripts/serve.sh run as `make serve` runs it, in its own session (so
    that a SIGINT to its process group is the terminal's Ctrl-C)."""

    def __init__(self, var: Path, env: Dict[str, str]) -> None:
        full_env = dict(os.environ)
        for name in ("WINGS_TOKEN", "PORT", "LISTEN"):
            full_env.pop(name, None)
        full_env.update(env, VAR_DIR=str(var))
        self.proc = subprocess.Popen(["bash", str(SERVE)], cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stderr: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr or []), daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read_until(self, prefix: str, timeout: float = RUN_TIMEOUT) -> List[str]:
        """The lines printed up to and including the first one starting with prefix."""
        out: List[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"serve.sh printed no {prefix!r} line; stdout:\n{''.join(out)}\n"
                            f"stderr:\n{''.join(self.stderr)}")
            out.append(line)
            if line.startswith(prefix):
                return out

    def rest(self, timeout: float = RUN_TIMEOUT) -> str:
        """Everything still to be printed, until serve.sh closes its stdout (bounded)."""
        out: List[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            out.append(line)
        return "".join(out)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the process group; the exit status (bounded)."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
            pytest.fail("serve.sh did not stop on SIGINT")

    def kill(self) -> None:
        # The whole group, even once serve.sh has exited: a host it started
        # must not outlive the test.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)


def listening_port(lines: List[str]) -> int:
    m = re.fullmatch(r"Listening on http://127\.0\.0\.1:(\d+)\n", lines[-1])
    assert m, lines[-1]
    port = int(m.group(1))
    # Printed only once the host accepts connections.
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return port


@pytest.fixture
def go_host_built() -> None:
    host_command("go")


def test_serve_picks_a_free_port_when_8080_is_taken(go_host_built: None, tmp_path: Path) -> None:
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 8080))
        blocker.listen(1)
    except OSError:
        pass  # taken already, which is the case under test
    serve = Serve(tmp_path / "var", {})
    try:
        port = listening_port(serve.read_until("Listening on"))
        assert port != 8080
        lines = serve.read_until("Ctrl-C stops the host.")
        assert any(f"ADDR=127.0.0.1:{port}" in ln for ln in lines), "".join(lines)
        assert not any(":8080" in ln for ln in lines), "".join(lines)
        assert serve.interrupt() == 0, "".join(serve.stderr)
    finally:
        serve.kill()
        blocker.close()
    assert "port 8080 is taken" in "".join(serve.stderr)
    assert "msg=stopped" in "".join(serve.stderr), "".join(serve.stderr)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_serve_honours_port_and_its_printed_commands_work(go_host_built: None, tmp_path: Path) -> None:
    port = free_port()
    serve = Serve(tmp_path / "var", {"PORT": str(port)})
    try:
        assert listening_port(serve.read_until("Listening on")) == port
        lines = serve.read_until("Ctrl-C stops the host.")
        script = "".join(lines[lines.index("In another shell:\n") + 1:-1])  # up to "Ctrl-C stops..."
        create, rest = script.split("# restore it", 1)
        # The printed commands, run as printed: create (202) and wait for the
        # archive; once the host has logged the end of the backup (the archive
        # is in place a moment before the server is free), restore (204) and
        # delete (204).
        res = subprocess.run(["bash", "-c", create], cwd=REPO, capture_output=True, text=True, timeout=60)
        statuses = re.findall(r"(?m)^HTTP/1\.1 (\d{3})", res.stdout)
        deadline = time.monotonic() + RUN_TIMEOUT
        while 'msg="backup finished ' not in "".join(serve.stderr) and time.monotonic() < deadline:
            time.sleep(0.05)
        export = next(ln for ln in lines if ln.startswith("export "))
        res = subprocess.run(["bash", "-c", export + "# restore it" + rest], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        statuses += re.findall(r"(?m)^HTTP/1\.1 (\d{3})", res.stdout)
        assert statuses == ["202", "204", "204"], res.stdout + res.stderr + "".join(serve.stderr)
        token = next(ln for ln in lines if ln.startswith("Node token: ")).split(": ", 1)[1].strip()
        # Once more, so that the host is seen answering this token on that port.
        r = requests.delete(f"http://127.0.0.1:{port}/api/servers/8f0c3a52-6d1e-4b7a-9c2f-1e5d7a3b9c40/backup/"
                            f"{os.urandom(4).hex()}-0000-4000-8000-000000000000",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 404
        assert serve.interrupt() == 0, "".join(serve.stderr)
    finally:
        serve.kill()
    assert "msg=stopped" in "".join(serve.stderr)


def test_serve_reports_a_host_that_cannot_listen(go_host_built: None, tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    serve = Serve(tmp_path / "var", {"PORT": str(port)})
    try:
        code = serve.proc.wait(timeout=RUN_TIMEOUT)
        out = serve.rest()
    finally:
        serve.kill()
        blocker.close()
    assert code != 0
    assert "curl" not in out and "Listening on" not in out
    assert "exited before listening" in "".join(serve.stderr), "".join(serve.stderr)
