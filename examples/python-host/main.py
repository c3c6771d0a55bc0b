#!/usr/bin/env python3
"""A Wings-compatible backup HTTP host in Python, over bindings/python.

    python3 examples/python-host/main.py --token SECRET --data-dir ./var/volumes \
        --backup-dir ./var/backups [--listen 127.0.0.1:8080] [flags]

It serves the three backup endpoints of docs/api.md (sections 1-5) with Flask on
waitress (one process, many threads: the engine's one-operation-per-server
guard lives in this process). The engine does the work and the validation;
this host does HTTP: authentication, the request-size limit, mapping errors
to statuses, running the engine's calls on threads, logging and shutdown. It
has the same flags as examples/go-host. The modules of wings_host/: options
(flags, over the library's settings table and resolution), app (the Flask application), serve (waitress),
startup (the settings line, directories).

Decisions worth knowing:
- POST .../backup answers 202 once the engine reports phase STARTED (so an
  error found at the start is still the request's status); the engine then
  runs it, or queues it while --max-running-backups backups run. Duplicates,
  busy servers, the queue and deleting a queued backup are the engine's.
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
- The Panel is told of results by the engine itself when --panel-url is set;
  a restore answers once its files are in place, and the engine's reporter
  thread tells the Panel in the background. The engine logs every retry of a
  Panel call at WARNING (logger ``wings_backup``) as it happens.
"""


from __future__ import annotations

import logging
import os
import sys
import time  # noqa: F401  (the tests use host_main.time)
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wings_host import wb  # noqa: E402  (puts the checkout's binding on the path)
from wings_host.app import MSG_NOT_ALLOWED, MSG_UNEXPECTED, Host  # noqa: E402,F401
from wings_host.options import (ConfigError, build_settings, non_negative, parse_args,  # noqa: E402,F401
                                parse_duration, resolve_settings)
from wings_host.serve import serve, waitress_listen  # noqa: E402,F401
from wings_host.startup import StartError, log_startup, prepare_directories  # noqa: E402,F401

log = logging.getLogger("python-host")


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        settings = resolve_settings(args)
        listen, token, engine_config = settings.listen, settings.token, settings.engine
        log_startup(settings)
        prepare_directories(engine_config)
        # The engine's own log (Panel retries at WARNING as they happen,
        # reports parked for later) joins the host's, as logger wings_backup.
        engine = wb.Engine(engine_config, logger=logging.getLogger("wings_backup"))
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
    host = Host(engine, token, settings.async_restore)
    if "panel" in engine_config:
        host._spawn(host.send_pending_reports)
    try:
        serve(host, listen, settings.read_header_timeout, settings.read_timeout)
    except OSError as e:
        log.error("cannot listen on %s: %s", listen, e)
        return 1
    if any(t.is_alive() for t in host.threads) or not engine.wait_idle(0):
        logging.shutdown()
        os._exit(0)  # a call is still running in a daemon thread: do not wait
    engine.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

