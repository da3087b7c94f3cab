"""Escalations on the bus. The fold itself (the states, `apply`, `open_escalations`) is
the read model's, `events/view/escalations.py`: one vocabulary for every reader."""

from __future__ import annotations

from bus import Bus
from events.view.escalations import ESCALATION_TYPES, Escalation, open_escalations


def open_escalations_on(bus: Bus, *, include_answered: bool = False) -> list[Escalation]:
    """`open_escalations` of everything on the bus's stream (`loops escalations`)."""
    events = (event for _, event in bus.replay(types=ESCALATION_TYPES))
    return open_escalations(events, include_answered=include_answered)
