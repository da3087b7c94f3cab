"""`loops status [--json] [--watch]`: loops, tasks, health, escalations, merge queue.

Reads the event stream of the running system (replay, then `bus.tail` to follow)
and folds it with `events.view.SystemView`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime

from app.runtime import Presence, alive_roles
from bus import RedisBus
from cli.context import open_bus
from cli.fmt import render
from events.view import (
    SystemView,
)

EXIT_OK, EXIT_FAIL = 0, 1
WATCH_REFRESH_S = 2.0  # health ages even when nothing is published


def load_view(bus: RedisBus) -> SystemView:
    """The system as every event on the stream tells it."""
    return SystemView.from_events(bus.replay())


# ---------------------------------------------------------------------- the command


def status_json(view: SystemView, roles: Sequence[Presence], indent: int | None = None) -> str:
    """`loops status --json`: the view, its totals, and the live role processes."""
    data = view.to_dict()
    data["roles"] = [p.model_dump(mode="json") for p in roles]
    return json.dumps(data, indent=indent)


def _show(bus: RedisBus, view: SystemView, as_json: bool, indent: int | None = None) -> None:
    roles = alive_roles(bus.client, bus.prefix)
    print(status_json(view, roles, indent) if as_json else render(view, roles=roles), flush=True)


def run(args: argparse.Namespace) -> int:
    with open_bus(args) as bus:
        cursor = bus.last_id()
        view = SystemView.from_events(bus.replay(until=cursor))
        if not args.watch:
            _show(bus, view, args.json, indent=2)
            return EXIT_OK
        try:
            _watch(bus, view, cursor, args.json)
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK


def _watch(bus: RedisBus, view: SystemView, cursor: str, as_json: bool) -> None:
    """Redraw on every new event (woken by `bus.tail`) and every few seconds."""
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() and not as_json else ""
    while True:
        if clear:
            sys.stdout.write(clear)
        elif not as_json:
            print(f"--- {datetime.now().astimezone():%H:%M:%S}")
        _show(bus, view, as_json)
        deadline = time.monotonic() + WATCH_REFRESH_S
        while (left := deadline - time.monotonic()) > 0:
            batch = bus.tail(after=cursor, block_ms=int(left * 1000))
            for stream_id, event in batch:
                view.apply(event, stream_id)
                cursor = stream_id
            if batch:
                break
