"""The human's side: `loops escalations [--json] [--all]` and `loops answer ID TEXT`.

Both read the escalations from the event stream of the running system. An answer is
an `escalation.answered` event published as the operator; the human-interface agent
and the asking loop take it from there (`escalation.delivered` when it reached the
loop's next prompt).
"""

from __future__ import annotations

import argparse
import getpass
import json
import shlex
import sys
from datetime import UTC, datetime

from agents.answers import decision_options, read_by_rules
from bus import RedisBus
from cli.context import open_bus
from cli.fmt import ago
from events import Decision
from events.commands import build_answer
from events.view import EscalationView, SystemView, clean
from events.view.escalations import ESCALATION_TYPES

EXIT_OK, EXIT_FAIL = 0, 1


def escalations(bus: RedisBus) -> SystemView:
    """A view holding only the escalations (replaying just their events)."""
    return SystemView.from_events(bus.replay(types=ESCALATION_TYPES))


def operator_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def closed_reason(esc: EscalationView) -> str:
    """Why an escalation can no longer be answered, in one line."""
    if esc.answer is not None:
        return f"escalation {esc.id} is {esc.status.value}: already answered by {esc.answered_by}: {clean(esc.answer, 60)!r}"
    reason = f" ({clean(esc.closed_reason, 60)})" if esc.closed_reason else ""
    return f"escalation {esc.id} is {esc.status.value}{reason}; nothing to answer"


def run(args: argparse.Namespace) -> int:
    with open_bus(args) as bus:
        view = escalations(bus)
    items = list(view.escalations.values())
    if not args.all:
        items = [e for e in items if e.status.is_open]
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in items], indent=2))
        return EXIT_OK
    if not items:
        print("No open escalations." if not args.all else "No escalations.")
        return EXIT_OK
    now = datetime.now(UTC)
    for e in items:
        where = clean(e.loop or "-", 40) + (f"/{clean(e.task_id, 24)}" if e.task_id else "")
        head = [
            e.id,
            e.status.value,
            e.severity.value if e.severity else "-",
            e.kind.value if e.kind else "-",
            where,
            f"{ago(e.raised, now)} ago" + (f", asked {e.repeat + 1}x" if e.repeat else ""),
        ]
        print("  ".join(head))
        print(f"    Q: {clean(e.question, 400)}")
        if e.options:
            print(f"    options: {', '.join(clean(o, 60) for o in e.options)}")
        if e.answer is not None:
            decided = f" [{e.decision.value}]" if e.decision else ""
            print(f"    A{decided} by {clean(e.answered_by or '?', 40)}: {clean(e.answer, 400)}")
        elif e.closed_reason:
            print(f"    closed: {clean(e.closed_reason, 200)}")
    if any(e.status.is_open for e in items):
        print("\nanswer with: loops answer ID TEXT [--decision retry|skip|approve|reject|abort]")
    return EXIT_OK


def run_answer(args: argparse.Namespace) -> int:
    text = " ".join(args.text).strip()
    decision = Decision(args.decision) if args.decision else None
    if not text and decision is None:
        print("loops: the answer is empty; give TEXT or --decision", file=sys.stderr)
        return EXIT_FAIL
    with open_bus(args) as bus:
        view = escalations(bus)
        esc = view.escalations.get(args.id)
        if esc is None or esc.raised is None:
            open_ids = ", ".join(e.id for e in view.open_escalations()) or "none"
            print(
                f"loops: no escalation {clean(args.id, 40)!r} (open: {open_ids})", file=sys.stderr
            )
            return EXIT_FAIL
        if not esc.status.is_open:
            print(f"loops: {closed_reason(esc)}", file=sys.stderr)
            return EXIT_FAIL
        if decision is None and decision_options(esc.options):
            decision = read_by_rules(text, esc.options)  # "approve", "don't merge", ...
            if decision is None:  # nothing sent: the question stays open for the answer
                print(
                    f"loops: could not tell which of {', '.join(esc.options)} that means; "
                    "nothing was sent. Run one of:",
                    file=sys.stderr,
                )
                for choice in decision_options(esc.options):
                    print(
                        f"  loops answer {esc.id} --decision {choice.value} {shlex.quote(text)}",
                        file=sys.stderr,
                    )
                return EXIT_FAIL
        event = build_answer(esc, text, decision, operator_name())
        bus.publish(event)
    where = f"loop {esc.loop}" + (f", task {esc.task_id}" if esc.task_id else "")
    decided = f" [{decision.value}]" if decision else ""
    print(f"answered {esc.id} ({clean(where, 80)}){decided}: {clean(text, 200)}")
    print(f"  event {event.id}; the loop gets it in its next prompt")
    return EXIT_OK
