"""The Python host's own logic, in process (werkzeug's test client, no sockets):
settings from flags and a Wings config.yml as the host hands them to the
library (which resolves them: tested in src/host_settings), and error bodies (the backup
queue and its 409s are the engine's, tested through both hosts in
tests/conformance/test_queue.py). The HTTP behaviour shared with the Go host is checked by
tests/conformance against the running host."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from werkzeug.test import Client

MAIN = Path(__file__).resolve().parent.parent / "main.py"
_spec = importlib.util.spec_from_file_location("python_host_main", MAIN)
assert _spec and _spec.loader
host_main: Any = importlib.util.module_from_spec(_spec)
sys.modules["python_host_main"] = host_main
_spec.loader.exec_module(host_main)
wb = host_main.wb

TOKEN = "test-token"


def settings(argv: List[str]) -> Any:
    """(listen address, node token, engine configuration)."""
    s = host_main.resolve_settings(host_main.parse_args(argv))
    return s.listen, s.token, s.engine


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINGS_TOKEN", raising=False)
    listen, token, engine = settings(["--token", "t"])
    assert listen == "127.0.0.1:8080" and token == "t"
    assert engine == {"data_directory": "/var/lib/pterodactyl/volumes",
                      "backup_directory": "/var/lib/pterodactyl/backups",
                      "compression_level": "best_speed", "write_limit": 0, "disk_limit": 0}


def test_every_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINGS_TOKEN", raising=False)
    listen, token, engine = settings([
        "--listen", "127.0.0.1:9", "--token", "t", "--data-dir", "/d", "--backup-dir", "/b",
        "--panel-url", "http://panel", "--panel-token-id", "id", "--panel-token", "pt",
        "--compression-level", "none", "--write-limit", "5", "--disk-limit", "1000",
        "--owner", "1000:1001", "--restore-host-allowlist", "minio.local, 10.0.0.0/8,,",
        "--async-restore", "--max-running-backups", "2"])
    assert listen == "127.0.0.1:9"
    assert engine == {"data_directory": "/d", "backup_directory": "/b", "compression_level": "none",
                      "write_limit": 5, "disk_limit": 1000, "max_running_backups": 2,
                      "owner": {"uid": 1000, "gid": 1001},
                      "restore_host_allowlist": ["minio.local", "10.0.0.0/8"],
                      "panel": {"url": "http://panel", "token_id": "id", "token": "pt"}}
    # Go's single-dash spelling works too.
    assert settings(["-token", "t", "-listen", ":7"])[0] == ":7"
    assert host_main.waitress_listen(":7") == "*:7"


WINGS_CONFIG = """
debug: false
uuid: 5b8b4a8e-0000-4000-8000-000000000000
token_id: abcdEFGH
token: node-secret
api:
  host: 0.0.0.0
  port: 8443
  ssl:
    enabled: false
system:
  data: /srv/volumes
  backup_directory: /srv/backups
  user:
    uid: 988
    gid: 988
  backups:
    write_limit: 20
    compression_level: best_compression
    restore_host_allowlist: [minio.internal, 10.1.0.0/16]
remote: https://panel.example.com
"""


def test_wings_config_file_with_flags_over_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINGS_TOKEN", raising=False)
    cfg = tmp_path / "config.yml"
    cfg.write_text(WINGS_CONFIG)
    listen, token, engine = settings(["--config", str(cfg)])
    assert listen == "0.0.0.0:8443" and token == "node-secret"
    assert engine == {
        "data_directory": "/srv/volumes", "backup_directory": "/srv/backups",
        "compression_level": "best_compression", "write_limit": 20, "disk_limit": 0,
        "owner": {"uid": 988, "gid": 988},
        "restore_host_allowlist": ["minio.internal", "10.1.0.0/16"],
        "panel": {"url": "https://panel.example.com", "token_id": "abcdEFGH", "token": "node-secret"},
    }
    listen, token, engine = settings(["--config", str(cfg), "--listen", "127.0.0.1:1", "--token", "flag",
                                      "--write-limit", "0", "--data-dir", "/x"])
    assert listen == "127.0.0.1:1" and token == "flag"
    assert engine["write_limit"] == 0 and engine["data_directory"] == "/x"
    assert engine["panel"]["token"] == "flag"  # one token, as in Wings: the one in effect
    monkeypatch.setenv("WINGS_TOKEN", "from-env")
    assert settings(["--config", str(cfg)])[1] == "from-env"


def test_only_a_port_in_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text("token: t\napi:\n  port: 9000\n")
    assert settings(["--config", str(cfg)])[0] == "127.0.0.1:9000"


@pytest.mark.parametrize("argv,message", [
    ([], "token is required"),
    (["--token", "t", "--owner", "root"], "UID:GID"),
    (["--token", "t", "--panel-url", "http://p"], "panel-token-id"),
    (["--token", "t", "--config", "/nonexistent/config.yml"], "cannot read"),
    (["--token", ""], "token must not be empty"),
    (["--token", "t", "--data-dir", ""], "data-dir must not be empty"),
    (["--token", "t", "--backup-dir", ""], "backup-dir must not be empty"),
    (["--token", "t", "--compression-level", ""], "compression-level must not be empty"),
    (["--token", "t", "--listen", ""], "listen must not be empty"),
])
def test_bad_settings(argv: List[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINGS_TOKEN", raising=False)
    with pytest.raises(host_main.ConfigError, match=message):
        settings(argv)


def test_flags_go_refuses(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as e:
        host_main.parse_args(["--tok", "t"])  # no abbreviations, as in Go
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        host_main.parse_args(["--async-restore", "false"])  # as Go: an unexpected argument
    assert e.value.code == 2
    # The library reads the values (tested in src/host_settings): main exits 2.
    for argv in (["--token", "t", "--write-limit", "-1"], ["--token", "t", "--disk-limit", "-5"],
                 ["--token", "t", "--async-restore=maybe"]):
        assert host_main.main(argv) == 2, argv
    capsys.readouterr()


def test_integer_flags_as_go_takes_them() -> None:
    # strconv.ParseUint with base 0, as Go's flag.Uint64.
    for text, value in [("010", 8), ("0x10", 16), ("0b101", 5), ("1_000", 1000), ("0", 0)]:
        assert settings(["--token", "t", "--write-limit", text])[2]["write_limit"] == value
    for text in ["+5", " 5", "08", str(1 << 64)]:
        with pytest.raises(host_main.ConfigError, match="--write-limit: want a non-negative integer"):
            settings(["--token", "t", "--write-limit", text])


def test_boolean_flag_values_as_go_takes_them() -> None:
    def async_restore(*argv: str) -> bool:
        return bool(host_main.resolve_settings(host_main.parse_args(["--token", "t", *argv])).async_restore)

    assert async_restore("--async-restore")
    assert async_restore("-async-restore=true")
    assert not async_restore("--async-restore=false")
    assert not async_restore()


@pytest.mark.parametrize("text,seconds", [("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), ("1h30m", 5400.0),
                                          ("1.5s", 1.5), ("2m0.5s", 120.5)])
def test_durations(text: str, seconds: float) -> None:
    s = host_main.resolve_settings(host_main.parse_args(["--token", "t", "--read-header-timeout", text,
                                                         "--read-timeout", text]))
    assert s.read_header_timeout_s == s.read_timeout_s == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "0s", "-1s", "fast", "15 s", "s", "1d", "15sx", "30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(host_main.ConfigError, match="--read-timeout"):
        settings(["--token", "t", f"--read-timeout={text}"])


# ---------------------------------------------------------------------------- in process


class Node:
    def __init__(self, tmp: Path) -> None:
        self.data, self.backups = tmp / "volumes", tmp / "backups"
        self.data.mkdir()
        self.backups.mkdir()
        self.engine = wb.Engine({"data_directory": str(self.data), "backup_directory": str(self.backups),
                                 "threads": 1})
        self.host = host_main.Host(self.engine, TOKEN, async_restore=False)
        self.client = Client(self.host.app)

    def server(self) -> str:
        sid = str(uuid.uuid4())
        (self.data / sid).mkdir()
        (self.data / sid / "file.txt").write_text("data")
        return sid

    def post(self, path: str, body: Dict[str, Any]) -> Any:
        return self.client.post(path, data=json.dumps(body), headers={"Authorization": f"Bearer {TOKEN}"})

    def create(self, server: str, backup: str) -> Any:
        return self.post(f"/api/servers/{server}/backup", {"adapter": "wings", "uuid": backup, "ignore": ""})

    def delete(self, server: str, backup: str) -> Any:
        return self.client.delete(f"/api/servers/{server}/backup/{backup}",
                                  headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    assert n.host.shut_down(time.monotonic() + 30)
    n.engine.close()


def test_a_backup_failing_before_it_starts_answers_its_status(node: Node,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise wb.QuotaError(wb.Status.QUOTA, "the disk is full")

    monkeypatch.setattr(node.engine, "handle_http", fail)
    server = node.server()
    r = node.create(server, str(uuid.uuid4()))
    assert r.status_code == 507 and r.json == {"error": "the disk is full"}
    assert r.headers["Content-Type"] == "application/json"
    node.engine.check_create(server, {"adapter": "wings", "uuid": str(uuid.uuid4()), "ignore": ""})  # free


def test_unexpected_errors_are_generic_json(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"secret detail at {node.data}")

    monkeypatch.setattr(node.engine, "handle_http", boom)
    r = node.create(node.server(), str(uuid.uuid4()))
    assert r.status_code == 500
    assert r.json == {"error": host_main.MSG_UNEXPECTED}
    assert str(node.data) not in r.get_data(as_text=True)


def test_shutdown_refuses_new_work(node: Node) -> None:
    node.host.shut_down(time.monotonic() + 5)
    r = node.create(node.server(), str(uuid.uuid4()))
    assert r.status_code == 503 and r.json == {"error": "The node is shutting down."}


def test_405_names_the_allowed_method(node: Node) -> None:
    r = node.client.get(f"/api/servers/{node.server()}/backup", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert r.json == {"error": "The requested method is not allowed on this endpoint."}


def test_shutdown_parks_a_report_the_panel_has_not_taken(tmp_path: Path) -> None:
    """The Panel answers 502 to every report: the engine keeps retrying
    after the server was given back (phase REPORT). Shutdown must still
    cancel that backup, so that its report is parked for the next start
    instead of being lost with the process."""
    import http.server

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    panel = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=panel.serve_forever, daemon=True).start()
    data, backups = tmp_path / "volumes", tmp_path / "backups"
    data.mkdir()
    backups.mkdir()
    engine = wb.Engine({"data_directory": str(data), "backup_directory": str(backups), "threads": 1,
                        "panel": {"url": f"http://127.0.0.1:{panel.server_address[1]}",
                                  "token_id": "id", "token": "t"}})
    try:
        host = host_main.Host(engine, TOKEN, async_restore=False)
        server, backup = str(uuid.uuid4()), str(uuid.uuid4())
        (data / server).mkdir()
        (data / server / "file.txt").write_text("data")
        r = Client(host.app).post(f"/api/servers/{server}/backup",
                                        data=json.dumps({"adapter": "wings", "uuid": backup, "ignore": ""}),
                                        headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 202
        def server_free() -> bool:
            try:
                engine.check_create(server, {"adapter": "wings", "uuid": str(uuid.uuid4()), "ignore": ""})
                return True
            except wb.ConflictError:
                return False

        for _ in range(200):
            if (backups / f"{backup}.tar.gz").exists() and server_free():
                break
            time.sleep(0.05)
        assert server_free(), "the server was not given back at the report phase"
        assert not engine.wait_idle(0), "the reporting backup's call has ended"
        assert host.shut_down(time.monotonic() + 20), "shutdown did not end the reporting backup"
        parked = list((backups / ".pending").glob("*.json"))
        assert [p.name for p in parked] == [f"{backup}.json"]
        assert json.loads(parked[0].read_text())["body"]["successful"] is True
    finally:
        engine.close()
        panel.shutdown()


# ---------------------------------------------------------------------------- start-up


def test_startup_log_never_holds_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("WINGS_TOKEN", raising=False)
    cfg = tmp_path / "config.yml"
    cfg.write_text("token: file-secret\ntoken_id: id\nremote: https://u:pw@panel/\ndebug: true\n")
    s = host_main.resolve_settings(host_main.parse_args(["--config", str(cfg), "--panel-token", "panel-secret"]))
    with caplog.at_level("INFO", logger="python-host"):
        host_main.log_startup(s)
    text = caplog.text
    for secret in ("file-secret", "panel-secret", "pw"):
        assert secret not in text
    for want in (f"ignored --config key key=debug config={cfg}", "panel_url=https://REDACTED@panel/", "from_config=panel-token-id,panel-url,token",
                 "from_flag=config,panel-token"):
        assert want in text


def test_help_shows_double_dashes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        host_main.parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "  --data-dir DIR" in out
    assert not [ln for ln in out.splitlines() if ln.startswith("  -") and not ln.startswith(("  --", "  -h, --"))]
    with pytest.raises(SystemExit) as e:
        host_main.parse_args(["-version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("python-host, libwings_backup ")


def test_prepare_directories_logs_what_it_creates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(host_main.StartError) as e:
        host_main.prepare_directories({"data_directory": str(tmp_path / "v"), "backup_directory": str(a_file)})
    assert str(e.value) == f"--backup-dir {a_file}: not a directory"
    with caplog.at_level("INFO", logger="python-host"):
        host_main.prepare_directories({"data_directory": str(tmp_path / "a" / "v"),
                                       "backup_directory": str(tmp_path / "a" / "b")})
    assert f"created directory flag=--backup-dir path={tmp_path / 'a' / 'b'} mode=0700" in caplog.text
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700
