"""`loops events [--follow] [--json] [--type T] [--loop L] [--since ID|TIME]`: the event log.

One line per event (`HH:MM:SS loop type key=value ...`, local time), or with `--json`
one event per line exactly as `events.decode_json` reads it back. `--type` takes exact
types or globs (`task.*`); `--follow` keeps printing new events until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase

from bus import RedisBus
from cli.context import open_bus
from events import EVENT_TYPES, ConfigError, Event
from events.view import event_line

EXIT_OK = 0
_STREAM_ID = re.compile(r"^\d+(-\d+)?$")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def expand_types(patterns: Iterable[str] | None) -> frozenset[str] | None:
    """The event types matching exact names or globs; None for no filter.
    A pattern that matches no known type is an error (a typo would print nothing)."""
    if not patterns:
        return None
    known = sorted(EVENT_TYPES)
    out: set[str] = set()
    for pattern in patterns:
        for part in pattern.split(","):
            part = part.strip()
            if not part:
                continue
            matched = [t for t in known if fnmatchcase(t, part)]
            if not matched:
                raise ConfigError(
                    f"--type {part!r} matches no event type; known: {', '.join(known)}"
                )
            out.update(matched)
    return frozenset(out) if out else None


def parse_since(text: str | None, now: datetime | None = None) -> str | datetime:
    """A stream id (`1700000000000-0`), an ISO time (`2026-01-02T10:00`, local unless it
    says otherwise), a time today (`10:30`) or an age (`15m`, `2h`, `1d`)."""
    if text is None:
        return "-"
    text = text.strip()
    now = now or datetime.now(UTC)
    if _STREAM_ID.match(text):
        return text
    if m := _RELATIVE.match(text):
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
            local = now.astimezone()
            parts = [int(p) for p in text.split(":")] + [0]
            at = local.replace(hour=parts[0], minute=parts[1], second=parts[2], microsecond=0)
        else:
            at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected a stream id, an ISO time (2026-01-02T10:00), "
            "HH:MM, or an age such as 15m"
        ) from None
    if at.tzinfo is None:
        at = at.astimezone()  # naive: the operator's local time
    return at


def _show(event: Event, as_json: bool) -> None:
    print(event.model_dump_json() if as_json else event_line(event), flush=True)


def run(args: argparse.Namespace) -> int:
    types = expand_types(args.types)
    since = parse_since(args.since)
    try:
        with open_bus(args) as bus:
            end = bus.last_id()
            for _, event in bus.replay(since, until=end, types=types, loop=args.loop):
                _show(event, args.json)
            if args.follow:
                try:
                    _follow(bus, end, types, args.loop, args.json)
                except KeyboardInterrupt:
                    return EXIT_OK
    except BrokenPipeError:  # `loops events | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _follow(
    bus: RedisBus, cursor: str, types: frozenset[str] | None, loop: str | None, as_json: bool
) -> None:
    while True:
        for stream_id, event in bus.tail(after=cursor, block_ms=1000):
            cursor = stream_id
            if types is not None and event.type not in types:
                continue
            if loop is not None and event.loop != loop:
                continue
            _show(event, as_json)
