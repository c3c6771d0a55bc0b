"""The node's HTTP API through the binding (Engine.handle_http): the answer
is the library's, status, headers and body, ready to send."""

from __future__ import annotations

import json
import logging
import time

import wings_backup as wb

from conftest import Node, create_request, new_uuid


def test_handle_http_answers_routes_and_streams_events(node: Node, engine: wb.Engine) -> None:
    server, backup = node.server(), new_uuid()
    base = f"/api/servers/{server}"
    r = engine.handle_http("GET", f"{base}/nothing")
    assert (r.status, r.body) == (404, b'{"error":"The requested resource does not exist on this instance."}\n')
    assert r.headers == [["Content-Type", "application/json"]]
    r = engine.handle_http("PUT", f"{base}/backups")
    assert r.status == 405 and ["Allow", "DELETE, GET"] in r.headers
    r = engine.handle_http("POST", f"{base}/backup", body_error="too_large")
    assert r.status == 413

    r = engine.handle_http("POST", f"{base}/backup", json.dumps(create_request(backup)).encode())
    assert (r.status, r.body, r.headers) == (202, b"", [])
    assert r.started == {"kind": "backup", "server": server, "backup": backup}
    end = None
    deadline = time.monotonic() + 30
    while end is None:
        assert time.monotonic() < deadline
        end = engine.http_operation_end(r.started, timeout=1)
    assert (end["level"], end["message"]) == (logging.INFO, "backup finished")
    assert end["fields"][:2] == [("server", server), ("backup", backup)] and end["fields"][-1] == ("outcome", "ok")
    r = engine.handle_http("GET", f"{base}/backup/{backup}/events")
    assert r.status == 200 and ["Content-Type", "text/event-stream"] in r.headers
    chunks, stream = [r.body], r.stream
    deadline = time.monotonic() + 30
    while stream is not None:
        assert time.monotonic() < deadline, chunks
        event = engine.next_http_event(stream["server"], stream["backup"], stream["seq"], timeout=1)
        if event.chunk is not None:
            chunks.append(event.chunk)
            stream = None if event.done else {**stream, "seq": event.seq}
    assert chunks[-1].startswith(b"event: done\ndata: {") and chunks[-1].endswith(b"}\n\n")
    assert json.loads(chunks[-1].split(b"data: ", 1)[1])["state"] == "succeeded"

    r = engine.handle_http("GET", f"{base}/backup/{backup}")
    assert r.status == 200 and json.loads(r.body)["uuid"] == backup and r.body.endswith(b"}\n")
    r = engine.handle_http("POST", f"{base}/backup/{backup}/restore", b'{"adapter":"wings","truncate_directory":true}',
                           async_restore=True)
    assert r.status == 202 and r.started and r.started["kind"] == "restore"
    deadline = time.monotonic() + 30
    while engine.handle_http("DELETE", f"{base}/backup/{backup}").status != 204:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert engine.handle_http("DELETE", f"{base}/backups").body == b'{"deleted":0}\n'
