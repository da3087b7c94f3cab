"""A consumer as a real process, for the crash tests.

    python -m tests.bus.consumer_proc URL PREFIX GROUP CONSUMER HANG_AT

Subscribes to the bus; its handler records each event's text in the list
`{PREFIX}:seen:{CONSUMER}`, and on the event whose text is HANG_AT it hangs (as a
consumer does when its process is about to be killed mid-batch)."""

from __future__ import annotations

import sys
import threading

from bus import BusSettings, RedisBus, connect
from events import Event, TaskHint


def main(argv: list[str]) -> None:
    url, prefix, group, consumer, hang_at = argv
    settings = BusSettings(url=url, prefix=prefix, block_ms=200)
    client = connect(settings)
    bus = RedisBus(client, settings=settings)
    forever = threading.Event()

    def handler(event: Event) -> None:
        assert isinstance(event, TaskHint)
        client.rpush(f"{prefix}:seen:{consumer}", event.text)
        if event.text == hang_at:
            forever.wait()

    bus.subscribe(group, consumer, handler).run(threading.Event(), block_ms=200)


if __name__ == "__main__":
    main(sys.argv[1:])
