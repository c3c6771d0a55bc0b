"""docs/openapi.yaml against each host, with schemathesis (issue #7): every
response conforms to the document (status documented, JSON error schema,
headers, content type), no 5xx at all, invalid input rejected with a 4xx,
requests without the token refused, methods a route does not take 405 with
Allow, and no response carries a node path or a stack trace.

Bounded and deterministic: a fixed seed, a few examples per operation, one
worker. tests/conformance/schemathesis_hooks.py points valid server uuids at
real servers (and, for browse and verify, at real backups) and replaces every generated download_url with one the host
refuses before connecting (a fuzzer must not make the host fetch anything).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, PanelStub, started
from helpers import backup_now, demo_tree

OPENAPI = REPO / "docs" / "openapi.yaml"
HOOKS = Path(__file__).resolve().parent / "schemathesis_hooks.py"
MAX_EXAMPLES = 12
SEED = 20240607
RUN_TIMEOUT = 150


def test_the_document_is_openapi_3(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(OPENAPI.read_text())
    assert doc["openapi"].startswith("3.0")
    ops = {(path, method) for path, item in doc["paths"].items() for method in item if method != "parameters"}
    assert ops == {("/api/servers/{uuid}/backup", "post"),
                   ("/api/servers/{uuid}/backup/{id}/restore", "post"),
                   ("/api/servers/{uuid}/backup/{id}", "delete"),
                   ("/api/servers/{uuid}/backup/{id}", "get"),
                   ("/api/servers/{uuid}/backup/{id}/events", "get"),
                   ("/api/servers/{uuid}/backup/{id}/cancel", "post"),
                   ("/api/servers/{uuid}/backup/{id}/files", "get"),
                   ("/api/servers/{uuid}/backup/{id}/verify", "post"),
                   ("/api/servers/{uuid}/backups", "get"),
                   ("/api/servers/{uuid}/backups", "delete"),
                   ("/api/servers/{uuid}/deleteAllBackups", "delete")}
    for path, method in ops:
        responses = doc["paths"][path][method]["responses"]
        # Every error status of every operation has the {"error"} body.
        for status, response in responses.items():
            if int(status) >= 400:
                ref = response.get("$ref", "").rsplit("/", 1)[-1]
                schema = (doc["components"]["responses"][ref] if ref else response)["content"]["application/json"]
                assert schema["schema"] == {"$ref": "#/components/schemas/Error"}, (path, method, status)


@pytest.mark.parametrize("kind", ["go", "python"])
def test_schemathesis_finds_nothing(kind: str, tmp_path: Path, panel: PanelStub) -> None:
    if shutil.which("schemathesis") is None and subprocess.run(
            [sys.executable, "-c", "import schemathesis"], capture_output=True).returncode != 0:
        pytest.fail("schemathesis is not installed: pip install -r requirements-dev.txt")
    gen = started(kind, tmp_path / "node", panel)
    host = next(gen)
    try:
        servers = [host.server(demo_tree) for _ in range(6)]
        # Backups that browse and verify are pointed at (of servers of
        # their own, which no generated request deletes).
        archived = []
        for _ in range(2):
            server = host.server(demo_tree)
            backup = backup_now(host, server)
            archived.append(f"{server}/{backup}")
        leaks = [str(host.base), os.path.realpath(host.base), str(REPO), "Traceback", "goroutine", "panic"]
        env = dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS), WB_ST_SERVERS=",".join(servers),
                   WB_ST_BACKUPS=",".join(archived),
                   WB_ST_LEAKS=json.dumps(leaks), NO_COLOR="1")
        cmd = [sys.executable, "-m", "schemathesis.cli", "run", str(OPENAPI), "--url", host.url,
               "--header", f"Authorization: Bearer {host.token}",
               "--checks", "all",
               # Valid requests are often 404/409/400 here (random backup ids,
               # busy servers, download URLs that are refused on purpose).
               "--exclude-checks", "positive_data_acceptance",
               "--phases", "examples,coverage,fuzzing",
               "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--generation-deterministic",
               "--workers", "1", "--request-timeout", "30",
               "--no-color", "--output-truncate", "true"]
        # Run in tmp_path: no schemathesis.toml or report lands in the checkout.
        try:
            out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"schemathesis ran over {RUN_TIMEOUT}s:\n{(e.stdout or '')[-3000:]}")
        report = out.stdout + out.stderr
        assert out.returncode == 0, (f"schemathesis failed against the {kind} host:\n{report[-6000:]}\n"
                                     f"the host's log (its end):\n{host.log()}")
        assert " passed" in report and "generated" in report, report[-2000:]
    finally:
        next(gen, None)
