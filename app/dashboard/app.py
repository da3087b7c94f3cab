"""The dashboard's web app: one page, a JSON view, a server-sent event feed, Prometheus
metrics (`/metrics`), and two actions (answer an escalation, control a loop) that need
the token.

A single `Feed` tails the bus for every open page: it keeps one `SystemView` current
and fans each new event out to the pages' SSE streams. Every piece of text on the page
is agent-controlled, so the page builds its DOM with `textContent` only, and the
responses carry a strict Content-Security-Policy as a second line of defence.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app import metrics
from bus import RedisBus
from events import Decision, Role, Source
from events.commands import ACTIONS, build_answer, build_command
from events.secrets import redact_obj
from events.view import EventLine, SystemView

log = logging.getLogger("loops.dashboard")

STATIC = Path(__file__).with_name("static")
TOKEN_HEADER = "x-loops-token"
MAX_TEXT = 10_000
KEEPALIVE_S = 15.0
QUEUE_SIZE = 1000
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
T = TypeVar("T")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


class Feed:
    """One tail of the bus shared by all pages: the current view, and the new events
    pushed to every subscriber's asyncio queue."""

    def __init__(self, bus: RedisBus, block_ms: int = 1000) -> None:
        self.bus = bus
        self.block_ms = block_ms
        self.lock = threading.Lock()
        self.view = SystemView()
        self.cursor = "0-0"
        self._subscribers: dict[asyncio.Queue[EventLine | None], asyncio.AbstractEventLoop] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        """Fold in everything on the stream so far."""
        cursor = self.bus.last_id()
        view = SystemView.from_events(self.bus.replay(until=cursor))
        with self.lock:
            self.view, self.cursor = view, cursor

    def start(self) -> None:
        self.load()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop tailing and end every open stream."""
        self._stop.set()
        for queue, loop in list(self._subscribers.items()):
            loop.call_soon_threadsafe(_offer, queue, None)
        if self._thread is not None:
            self._thread.join(timeout=self.block_ms / 1000 + 5)

    def subscribe(self) -> asyncio.Queue[EventLine | None]:
        queue: asyncio.Queue[EventLine | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[queue] = asyncio.get_running_loop()
        if self._stop.is_set():
            queue.put_nowait(None)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[EventLine | None]) -> None:
        self._subscribers.pop(queue, None)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.view.to_dict()

    def read(self, fn: Callable[[SystemView], T]) -> T:
        """`fn(view)` while the tail cannot change the view (a `app.metrics.ViewSource`)."""
        with self.lock:
            return fn(self.view)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                batch = self.bus.tail(after=self.cursor, block_ms=self.block_ms)
            except redis.RedisError as exc:  # Redis restarting: keep the page, retry
                log.warning("dashboard: reading the stream failed (%s); retrying", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            lines = []
            with self.lock:
                for stream_id, event in batch:
                    self.cursor = stream_id
                    if self.view.apply(event, stream_id):
                        lines.append(self.view.recent[-1])
            for line in lines:
                for queue, loop in list(self._subscribers.items()):
                    loop.call_soon_threadsafe(_offer, queue, line)


def _offer(queue: asyncio.Queue[EventLine | None], item: EventLine | None) -> None:
    """Put without waiting; a page too slow to keep up misses lines (it reloads the
    view anyway), but always gets the end-of-stream marker."""
    if item is None:
        while queue.full():
            queue.get_nowait()
    if not queue.full():
        queue.put_nowait(item)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


def create_app(
    bus: RedisBus,
    token: str,
    *,
    allowed_hosts: Sequence[str] | None = None,
    feed: Feed | None = None,
) -> Starlette:
    """The dashboard app on `bus`. Actions need `token` (header `X-Loops-Token` or a
    `token` field in the JSON body). `allowed_hosts` limits the Host header (DNS
    rebinding); None allows any."""
    if not token:
        raise ValueError("the dashboard needs a non-empty token")
    feed = feed or Feed(bus)
    instance = f"dashboard:{socket.gethostname()}:{os.getpid()}"
    static = {name: (STATIC / name).read_bytes() for name in ("index.html", "app.js", "style.css")}

    def authorized(request: Request, body: dict[str, Any]) -> bool:
        given = request.headers.get(TOKEN_HEADER) or body.get("token") or ""
        return isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())

    async def read_body(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the body must be a JSON object")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        if not authorized(request, body):
            return _error(403, "missing or wrong dashboard token")
        return body

    def page(name: str) -> Callable[[Request], Any]:
        async def serve_file(request: Request) -> Response:
            return Response(
                static[name], media_type=_TYPES[Path(name).suffix], headers=SECURITY_HEADERS
            )

        return serve_file

    scrape = metrics.registry(feed, bus.client, bus.prefix, role="dashboard")

    async def api_metrics(request: Request) -> Response:
        # No token: the metrics hold names, states and counts, never event text.
        body = await run_in_threadpool(metrics.exposition, scrape)
        return Response(body, media_type=metrics.CONTENT_TYPE, headers=SECURITY_HEADERS)

    def redacted_snapshot() -> Any:
        # Events are redacted when published; this also covers an entry someone
        # XADDed past the bus (invariant 7: nothing secret leaves by the page).
        return redact_obj(feed.snapshot())

    async def api_view(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(redacted_snapshot), headers=SECURITY_HEADERS)

    async def api_events(request: Request) -> Response:
        queue = feed.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                with feed.lock:
                    cursor = feed.cursor
                yield f"event: hello\ndata: {json.dumps({'cursor': cursor})}\n\n"
                while True:
                    try:
                        line = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if line is None:
                        return
                    data = json.dumps(
                        redact_obj(line.model_dump(mode="json")), separators=(",", ":")
                    )
                    yield f"id: {line.stream_id}\nevent: event\ndata: {data}\n\n"
            finally:
                feed.unsubscribe(queue)

        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def api_check(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        return JSONResponse({"ok": True}, headers=SECURITY_HEADERS)

    async def api_answer(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        esc_id, text = body.get("escalation_id"), body.get("answer", "")
        decision_name, by = body.get("decision") or None, body.get("by") or "dashboard"
        if not isinstance(esc_id, str) or not isinstance(text, str) or not isinstance(by, str):
            return _error(400, "escalation_id, answer and by must be strings")
        text = text.strip()
        if len(text) > MAX_TEXT:
            return _error(400, f"the answer is longer than {MAX_TEXT} characters")
        try:
            decision = Decision(decision_name) if decision_name else None
        except ValueError:
            names = ", ".join(d.value for d in Decision)
            return _error(400, f"decision must be one of {names}")
        if not text and decision is None:
            return _error(400, "the answer is empty: write one or pick a decision")
        with feed.lock:
            esc = feed.view.escalations.get(esc_id)
            esc = esc.model_copy(deep=True) if esc is not None else None
        if esc is None or esc.raised is None:
            return _error(404, f"no escalation {esc_id!r}")
        if not esc.status.is_open:
            return _error(409, f"escalation {esc_id} is {esc.status.value}; nothing to answer")
        event = build_answer(
            esc, text, decision, by[:80], Source(role=Role.OPERATOR, instance=instance)
        )
        await run_in_threadpool(bus.publish, event)
        return JSONResponse({"ok": True, "event_id": event.id}, headers=SECURITY_HEADERS)

    async def api_control(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        action, loop = body.get("action"), body.get("loop")
        task_id, hint = body.get("task_id") or None, body.get("hint") or None
        if action not in ACTIONS:
            return _error(400, f"action must be one of {', '.join(ACTIONS)}")
        if not isinstance(loop, str) or not all(isinstance(v, str | None) for v in (task_id, hint)):
            return _error(400, "loop, task_id and hint must be strings")
        if action == "reset" and not task_id:
            return _error(400, "reset needs a task_id")
        if hint is not None and len(hint) > MAX_TEXT:
            return _error(400, f"the hint is longer than {MAX_TEXT} characters")
        with feed.lock:
            known = loop in feed.view.loops
        if not known:
            return _error(404, f"no loop {loop!r} on this system")
        command = build_command(
            str(action), loop, task_id, hint, Source(role=Role.DASHBOARD, instance=instance)
        )
        await run_in_threadpool(bus.publish, command)
        return JSONResponse(
            {"ok": True, "command_id": command.id, "type": command.type}, headers=SECURITY_HEADERS
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(feed.start)
        try:
            yield
        finally:
            await run_in_threadpool(feed.stop)

    routes = [
        Route("/", page("index.html")),
        Route("/static/app.js", page("app.js")),
        Route("/static/style.css", page("style.css")),
        Route("/api/view", api_view),
        Route("/metrics", api_metrics),
        Route("/api/events", api_events),
        Route("/api/token", api_check, methods=["POST"]),
        Route("/api/answer", api_answer, methods=["POST"]),
        Route("/api/control", api_control, methods=["POST"]),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.feed = feed
    return app
