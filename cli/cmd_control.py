"""Control: `loops pause|resume|stop LOOP` and `loops reset LOOP TASK [--hint H]`.

Each publishes a command event addressed to the loop (`event.loop`) and waits, bounded,
for the worker's `command.acknowledged` (its `command_id` is the command's event id).
Without an acknowledgement the command stays on the stream: the worker obeys it when
it comes back, and the command exits 1 saying so. When nothing of the project runs
(the embedded server is started only for the command, as after `loops run` ended) no
worker can acknowledge: the command is recorded and exits 0 at once, saying it applies
when the loop starts again (what the hints `loops run` prints at its end rely on).
"""

from __future__ import annotations

import argparse
import sys
import time

from bus import RedisBus
from cli.context import nothing_running, open_bus, require_loop
from events import CommandAcknowledged
from events.commands import build_command
from events.view import clean

EXIT_OK, EXIT_FAIL = 0, 1
DEFAULT_WAIT_S = 10.0
DONE = {
    "loop.pause": "paused after its current iteration",
    "loop.resume": "resumed",
    "loop.stop": "stopping after its current iteration",
    "task.reset": "task reset to pending with zero attempts",
}


def wait_for_ack(
    bus: RedisBus, after: str, command_id: str, timeout_s: float
) -> CommandAcknowledged | None:
    """The worker's acknowledgement of command `command_id`, published after stream id
    `after`, or None when none came within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    cursor = after
    while (left := deadline - time.monotonic()) > 0:
        for stream_id, event in bus.tail(after=cursor, block_ms=max(1, int(left * 1000))):
            cursor = stream_id
            if isinstance(event, CommandAcknowledged) and event.command_id == command_id:
                return event
    return None


def run(args: argparse.Namespace) -> int:
    action = args.command
    loop = args.loop
    idle = nothing_running(args)
    with open_bus(args) as bus:
        require_loop(bus, loop, "sent")
        command = build_command(
            action, loop, getattr(args, "task", None), getattr(args, "hint", None)
        )
        stream_id = bus.publish(command)
        what = f"{command.type} {loop}" + (f" {args.task}" if action == "reset" else "")
        if getattr(args, "no_wait", False):
            print(f"sent {what} (command {command.id}); not waiting for the worker")
            return EXIT_OK
        if idle:
            print(f"sent {what}; nothing is running: it applies when {loop} starts again")
            return EXIT_OK
        timeout = float(getattr(args, "wait", None) or DEFAULT_WAIT_S)
        print(f"sent {what}; waiting up to {timeout:g}s for the worker ...", flush=True)
        ack = wait_for_ack(bus, stream_id, command.id, timeout)
    if ack is None:
        print(
            f"loops: no acknowledgement from {loop} within {timeout:g}s; the command stays "
            "on the stream and the worker obeys it when it is back",
            file=sys.stderr,
        )
        return EXIT_FAIL
    detail = f": {clean(ack.detail, 200)}" if ack.detail else ""
    if ack.refused:
        why = clean(ack.detail, 200) or "refused"
        print(f"loops: {loop}: {why}; nothing changed (its tasks: `loops status`)", file=sys.stderr)
        return EXIT_FAIL
    print(f"{loop}: {DONE[command.type]} (acknowledged by {ack.source.instance}){detail}")
    return EXIT_OK
