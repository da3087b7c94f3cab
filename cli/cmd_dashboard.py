"""`loops dashboard [--host H] [--port P]`: the web page, as its own process.

Prints the page's address and where the token is, and runs until SIGINT/SIGTERM,
keeping a presence key so `loops health dashboard` can tell it is alive. The token
itself is printed (in the address, ready to click) only to a terminal: the output of
a service (compose, systemd) is a log, and the token never goes to a log.
"""

from __future__ import annotations

import argparse
import sys
import threading

from app.dashboard import is_loopback, resolve_token, serve
from app.runtime import run_role
from cli.context import bus_settings, open_bus, redact, settings_of
from infra.settings import secret


def run(args: argparse.Namespace) -> int:
    host, port = args.host, args.port
    url = redact(bus_settings(args).url)
    with open_bus(args) as bus:
        bus.client.ping()  # one clear line now rather than a failed startup later
        settings = settings_of(args)
        token, token_file = resolve_token(
            getattr(args, "project_dir", None) or settings.project_dir,
            secret(settings.dashboard_token),
        )
        if not is_loopback(host):
            print(
                f"loops dashboard: listening on {host}, reachable from other machines; "
                "actions still need the token",
                file=sys.stderr,
            )

        def ready(page: str) -> None:
            if token_file is not None:
                where = f"token in {token_file}"
                if sys.stdout.isatty():
                    page += f"#token={token}"
            else:
                where = "token from $LOOPS_DASHBOARD_TOKEN"
            print(f"dashboard: {page}  ({where}; events from {url})", flush=True)

        return run_role(
            "dashboard",
            None,
            bus.client,
            lambda stop: serve(bus, host, port, token, stop, on_ready=ready),
            stop=threading.Event(),
            prefix=bus.prefix,
        )
