"""The command line's view of a running node (``status``, ``list``,
``watch``): the node's HTTP API, read with the standard library."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any, Dict, Iterator, List, Tuple

#: HTTP status of a node's error answer -> the command's exit status (the
#: same codes as the library's statuses, see ``cli.EXIT_CODES``).
HTTP_EXIT = {400: 2, 401: 2, 403: 2, 404: 4, 409: 5, 503: 10}

#: Bad input (a URL, token, server or backup the command refuses): a usage error.
EXIT_USAGE = 2
#: No answer, or not one of the node's API: a remote failure (as WB_REMOTE).
EXIT_UNREACHABLE = 9

_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def check_uuid(what: str, value: str) -> str:
    """``value`` if it is a UUID as the hosts take one (36 characters,
    hyphenated hex), else a usage error naming ``what``."""
    if not _UUID.fullmatch(value):
        raise NodeError(EXIT_USAGE, f"{what} is not a UUID: {value!r}")
    return value


def check_url(url: str) -> str:
    """``url`` if it is an http or https URL with a host, else a usage error."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise NodeError(EXIT_USAGE, f"--url has a space or control character: {url!r}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # a bad port raises ValueError
    except ValueError as e:
        raise NodeError(EXIT_USAGE, f"--url is not a valid URL ({e}): {url!r}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise NodeError(EXIT_USAGE, f"--url must be an http:// or https:// URL: {url!r}")
    if not parts.hostname:
        raise NodeError(EXIT_USAGE, f"--url has no host: {url!r}")
    if parts.query or parts.fragment:
        raise NodeError(EXIT_USAGE, f"--url must not have a query or fragment: {url!r}")
    return url


def check_token(token: str) -> str:
    """``token`` if it can be sent in an Authorization header (printable
    ASCII), else a usage error (that does not show the token)."""
    if any(not 0x20 <= ord(c) < 0x7F for c in token):
        raise NodeError(EXIT_USAGE, "--token must be printable ASCII (no control characters or newlines)")
    return token


class NodeError(Exception):
    """An error answer of the node (or no answer at all)."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code, self.message = exit_code, message


class Node:
    """A node at ``url`` (checked by :func:`check_url`), asked with ``token``
    (checked by :func:`check_token`); a server or backup not a UUID is
    refused before anything is sent."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url, self.token, self.timeout = check_url(url).rstrip("/"), check_token(token), timeout

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
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            raise NodeError(EXIT_UNREACHABLE, f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from None

    def _broken(self, e: object) -> NodeError:
        """A node whose answer broke off or is not the API's JSON."""
        return NodeError(EXIT_UNREACHABLE, f"bad answer from {self.url}: {e}")

    def get(self, path: str) -> Any:
        with self._open(path) as res:
            try:
                return json.loads(res.read())
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise self._broken(e) from None

    def status(self, server: str, backup: str) -> Dict[str, Any]:
        server, backup = check_uuid("SERVER", server), check_uuid("BACKUP", backup)
        state = self.get(f"/api/servers/{server}/backup/{backup}")
        if not isinstance(state, dict):
            raise self._broken("not a backup's state")
        return state

    def list(self, server: str) -> List[Dict[str, Any]]:
        server = check_uuid("SERVER", server)
        states = self.get(f"/api/servers/{server}/backups")
        if not isinstance(states, list) or not all(isinstance(s, dict) for s in states):
            raise self._broken("not a list of backups' states")
        return states

    def events(self, server: str, backup: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """The backup's server-sent events, (event, state), until the stream ends."""
        server, backup = check_uuid("SERVER", server), check_uuid("BACKUP", backup)
        with self._open(f"/api/servers/{server}/backup/{backup}/events") as res:
            event, data = "", ""
            try:
                for raw in res:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif not line and event:
                        state = json.loads(data)
                        if not isinstance(state, dict):
                            raise ValueError("an event that is not a backup's state")
                        yield event, state
                        event, data = "", ""
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise self._broken(e) from None


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
    raise NodeError(EXIT_UNREACHABLE, "the event stream ended without a done event")
