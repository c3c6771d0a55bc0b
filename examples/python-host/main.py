#!/usr/bin/env python3
"""A Wings-compatible backup HTTP host in Python, over bindings/python.

    python3 examples/python-host/main.py --token SECRET --data-dir ./var/volumes \
        --backup-dir ./var/backups [--listen 127.0.0.1:8080] [flags]

The library answers every request (Engine.handle_http); this host serves it
with waitress and keeps authentication, the body limit, logging, slow
clients and shutdown (docs/design.md, "The hosts"). Modules of wings_host/:
options (flags, settings, start-up), app (the WSGI application), serve
(waitress).
"""


from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wings_host import wb  # noqa: E402  (puts the checkout's binding on the path)
from wings_host.app import MSG_UNEXPECTED, Host  # noqa: E402,F401
from wings_host.options import (ConfigError, StartError, log_startup, parse_args,  # noqa: E402,F401
                                prepare_directories, resolve_settings)
from wings_host.serve import serve, waitress_listen  # noqa: E402,F401

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
    # Reports a crash or a Panel outage left parked are sent again (the
    # library logs what it sent).
    engine.resend_parked_reports()
    try:
        serve(host, listen, settings.read_header_timeout_s, settings.read_timeout_s)
    except OSError as e:
        log.error("cannot listen on %s: %s", listen, e)
        return 1
    if not engine.wait_idle(0):
        logging.shutdown()
        os._exit(0)  # a call of the engine's is still running: exit without waiting for it
    engine.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

