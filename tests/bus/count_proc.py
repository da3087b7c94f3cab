"""A consumer process for the many-processes test.

    python -m tests.bus.count_proc URL PREFIX GROUP CONSUMER OUTFILE

Consumes `task.hint` events; after each poll adds how many it handled to
`{PREFIX}:handled`; when `{PREFIX}:stop` exists, writes the numbers it handled (one
per line, in order) to OUTFILE and exits."""

from __future__ import annotations

import sys
from pathlib import Path

from bus import BusSettings, RedisBus, connect
from events import Event, TaskHint


def main(argv: list[str]) -> None:
    url, prefix, group, consumer, outfile = argv
    settings = BusSettings(url=url, prefix=prefix, block_ms=100)
    client = connect(settings)
    bus = RedisBus(client, settings=settings)
    handled: list[str] = []

    def handler(event: Event) -> None:
        assert isinstance(event, TaskHint)
        handled.append(event.text)

    sub = bus.subscribe(group, consumer, handler)
    while not client.exists(f"{prefix}:stop"):
        n = sub.poll(block_ms=100)
        if n:
            client.incrby(f"{prefix}:handled", n)
    Path(outfile).write_text("".join(f"{n}\n" for n in handled))
    client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
