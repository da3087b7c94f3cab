"""The web dashboard: loops and their tasks, a live event feed, escalations with an
answer form, verification evidence, the merge queue, monitor actions and cost.

`create_app(bus, token)` is the Starlette app; `serve(bus, host, port, token, stop)`
runs it with uvicorn until `stop` is set. Reading needs nothing; every action
(answer, pause, resume, stop, reset) needs the token. It binds 127.0.0.1 by default.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from app.dashboard.app import Feed, create_app
from bus import RedisBus
from events import ConfigError
from events.secrets import register_secret
from infra.files import write_text_atomic

__all__ = ["Feed", "create_app", "dashboard_url", "resolve_token", "serve"]

log = logging.getLogger("loops.dashboard")

TOKEN_FILE = Path(".loops") / "dashboard.token"
LOOPBACK_NAMES = ("localhost",)


def resolve_token(
    project_dir: str | Path | None = None, configured: str | None = None
) -> tuple[str, Path | None]:
    """The dashboard token: `configured` (the `LOOPS_DASHBOARD_TOKEN` setting), else a
    fresh one written (mode 0600) to `DIR/.loops/dashboard.token`. Returns the token and
    the file it went to (None when it was configured)."""
    if configured and configured.strip():
        register_secret(configured.strip())
        return configured.strip(), None
    token = secrets.token_urlsafe(24)
    register_secret(token)  # redact() hides it in every log line from now on
    path = Path(project_dir or ".") / TOKEN_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A fresh file each time, private from its first byte (an older one may have been
    # readable by others).
    write_text_atomic(path, token + "\n", mode=0o600)
    return token, path


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dashboard_url(host: str, port: int, token: str | None = None) -> str:
    """The page's address; the token rides in the fragment, which browsers never send
    to the server (so it stays out of access logs)."""
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/" + (f"#token={token}" if token else "")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns the process's signals
    (`app.runtime.graceful_signals`) and stops us through `stop`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve(
    bus: RedisBus,
    host: str,
    port: int,
    token: str,
    stop: threading.Event,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard on host:port until `stop` is set. `on_ready` gets the page's
    URL (with the real port when `port` is 0) once it accepts connections."""
    allowed = ["127.0.0.1", "localhost", "::1", "[::1]"] if is_loopback(host) else None
    feed = Feed(bus)
    app = create_app(bus, token, allowed_hosts=allowed, feed=feed)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # uvicorn's records go to our handlers, which redact them
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=5,
    )
    server = _Server(config)

    def watch() -> None:
        while not server.started and not stop.is_set() and not server.should_exit:
            stop.wait(0.05)
        if server.started and on_ready is not None:
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            on_ready(dashboard_url(host, int(bound)))
        stop.wait()
        feed.stop()  # ends the open event streams, so shutdown need not wait for them
        server.should_exit = True

    watcher = threading.Thread(target=watch, name="dashboard-stop", daemon=True)
    watcher.start()
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        if server.started:
            raise
    finally:
        stop.set()
        watcher.join(timeout=10)
    if not server.started:
        raise ConfigError(
            f"the dashboard could not listen on {host}:{port} (port in use? try --port)"
        )
