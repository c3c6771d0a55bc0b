"""Schemathesis hooks for tests/conformance/test_schema.py (loaded through
SCHEMATHESIS_HOOKS; settings come from the environment the test sets).

- A server uuid that schemathesis generated valid is replaced by one of the
  existing servers (WB_ST_SERVERS, comma-separated), so that valid requests
  reach the engine instead of all being 404; invalid ones are left alone
  (they must be rejected).
- For browse and verify (`.../backup/{id}/files`, `.../backup/{id}/verify`),
  a valid server uuid and backup id are replaced by a pair of an existing
  backup (WB_ST_BACKUPS, comma-separated `server/backup`), so that the
  generated `path` queries reach a real archive's index.
- Every generated `download_url` string is replaced by one of a few URLs the
  host refuses before connecting anywhere (loopback, not http, unparsable):
  a fuzzer must never make the host fetch from a generated address.
- A check that no response carries a node path or a stack trace.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import schemathesis

SERVERS = os.environ["WB_ST_SERVERS"].split(",")
LEAKS = json.loads(os.environ["WB_ST_LEAKS"])
SAFE_URLS = ["http://127.0.0.1:9/b.tar.gz", "http://localhost:9/b.tar.gz", "ftp://127.0.0.1/b.tar.gz",
             "", "http://[::1", "http://10.0.0.1/b.tar.gz"]
BACKUPS = [tuple(pair.split("/")) for pair in os.environ.get("WB_ST_BACKUPS", "").split(",") if pair]
READ_ONLY = ("/files", "/verify")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    params = case.path_parameters
    valid = (isinstance(params, dict) and isinstance(params.get("uuid"), str)
             and UUID.fullmatch(params["uuid"]) is not None)
    if valid and BACKUPS and case.operation.path.endswith(READ_ONLY) \
            and isinstance(params.get("id"), str) and UUID.fullmatch(params["id"]):
        params["uuid"], params["id"] = BACKUPS[int(params["id"].replace("-", ""), 16) % len(BACKUPS)]
    elif valid:
        params["uuid"] = SERVERS[int(params["uuid"].replace("-", ""), 16) % len(SERVERS)]
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("download_url"), str):
        body["download_url"] = SAFE_URLS[len(body["download_url"]) % len(SAFE_URLS)]
    return case


@schemathesis.check
def no_node_paths_or_traces(ctx: Any, response: Any, case: Any) -> None:
    text = response.text or ""
    for leak in LEAKS:
        if leak in text:
            raise AssertionError(f"the response leaks {leak!r}: {text[:300]!r}")
