"""The command line's view of a running node (``status``, ``list``,
``watch``): the node's HTTP API, read with the standard library."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import IO, Any, Dict, Iterator, List, Tuple

#: HTTP status of a node's error answer -> the command's exit status (the
#: same codes as the library's statuses, see ``cli.EXIT_CODES``).
HTTP_EXIT = {400: 2, 401: 2, 403: 2, 404: 4, 409: 5, 503: 10}


class NodeError(Exception):
    """An error answer of the node (or no answer at all)."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code, self.message = exit_code, message


class Node:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _open(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error") or e.reason
            except (ValueError, AttributeError):
                message = str(e.reason)
            raise NodeError(HTTP_EXIT.get(e.code, 1), f"{e.code}: {message}") from None
        except (urllib.error.URLError, OSError) as e:
            raise NodeError(1, f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from None

    def get(self, path: str) -> Any:
        with self._open(path) as res:
            return json.loads(res.read())

    def status(self, server: str, backup: str) -> Dict[str, Any]:
        return self.get(f"/api/servers/{server}/backup/{backup}")  # type: ignore[no-any-return]

    def list(self, server: str) -> List[Dict[str, Any]]:
        return self.get(f"/api/servers/{server}/backups")  # type: ignore[no-any-return]

    def events(self, server: str, backup: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """The backup's server-sent events, (event, state), until the stream ends."""
        with self._open(f"/api/servers/{server}/backup/{backup}/events") as res:
            event, data = "", ""
            for raw in res:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and event:
                    yield event, json.loads(data)
                    event, data = "", ""


def describe(state: Dict[str, Any]) -> str:
    """One line: uuid, state, phase, progress, size, checksum, error."""
    from .cli import human_bytes

    parts = [state.get("uuid", "?"), state.get("kind", "?"), state.get("state", "?"), state.get("phase", "?")]
    done, total = state.get("bytes_done", 0), state.get("bytes_total", 0)
    if state.get("state") in ("queued", "running"):
        parts.append(f"{human_bytes(done)}/{human_bytes(total) if total else '?'}")
    if state.get("size"):
        parts.append(f"size={state['size']}")
    if state.get("checksum"):
        parts.append(f"sha1={state['checksum']}")
    parts.append(f"started={state.get('started_at')}")
    if state.get("error"):
        parts.append(f"error={state['error']!r}")
    return " ".join(str(p) for p in parts)


def final_exit(state: Dict[str, Any]) -> int:
    """The exit status an ended state stands for."""
    from .cli import STATUS_EXIT

    if state.get("state") == "succeeded":
        return 0
    return STATUS_EXIT.get(state.get("error_status") or 0, 1) if state.get("error_status") else 1


def watch(node: Node, server: str, backup: str, out: IO[str], err: IO[str]) -> int:
    """Prints each progress event to `err` and the final state to `out`."""
    for event, state in node.events(server, backup):
        if event == "done":
            out.write(describe(state) + "\n")
            return final_exit(state)
        err.write(describe(state) + "\n")
        err.flush()
    raise NodeError(1, "the event stream ended without a done event")
