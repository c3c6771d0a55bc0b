"""Serving the application with waitress: slow clients dropped, JSON bodies
for waitress' own errors, and a graceful stop on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from typing import Any, Dict

from .app import (HTTP_THREADS, MSG_BAD_REQUEST, MSG_HEADERS_TOO_LARGE, MSG_TOO_LARGE, MSG_UNEXPECTED,
                  SHUTDOWN_WAIT_S, WAITRESS_BODY_LIMIT, Host, RequestLog)

log = logging.getLogger("python-host")


def waitress_listen(addr: str) -> str:
    # Go's ":8080" means every interface.
    return "*" + addr if addr.startswith(":") else addr


def serve(host: Host, listen: str, read_header_timeout: float, read_timeout: float) -> None:
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

