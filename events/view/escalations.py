"""Escalations as a fold of events: open -> acknowledged -> answered -> delivered, or
expired. Pure, and the one vocabulary of escalation states: the human-interface agent
keeps these records in Redis, and `SystemView` (status, dashboard, `loops escalations`)
folds the same `apply` over the stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from events import (
    Decision,
    EscalationAcknowledged,
    EscalationAnswered,
    EscalationDelivered,
    EscalationExpired,
    EscalationKind,
    EscalationRaised,
    Event,
    Severity,
)

ESCALATION_TYPES = (
    "escalation.raised",
    "escalation.acknowledged",
    "escalation.answered",
    "escalation.delivered",
    "escalation.expired",
)

_DECISIONS = {d.value for d in Decision}
SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class EscalationStatus(StrEnum):
    OPEN = "open"  # raised (or reopened), nobody has answered yet
    ACKNOWLEDGED = "acknowledged"
    ANSWERED = "answered"
    DELIVERED = "delivered"
    EXPIRED = "expired"

    @classmethod
    def _missing_(cls, value: object) -> EscalationStatus | None:
        # Records written before the two vocabularies became one said "raised".
        return cls.OPEN if value == "raised" else None

    @property
    def is_open(self) -> bool:
        """Still waiting for a person (answerable)."""
        return self in WAITING_FOR_A_PERSON

    @property
    def closed(self) -> bool:
        return self in CLOSED


WAITING_FOR_A_PERSON = (EscalationStatus.OPEN, EscalationStatus.ACKNOWLEDGED)
CLOSED = (EscalationStatus.DELIVERED, EscalationStatus.EXPIRED)


@dataclass
class Escalation:
    """One escalation as it stands."""

    id: str
    kind: EscalationKind
    severity: Severity
    question: str
    raised_at: datetime
    last_raised_at: datetime
    loop: str | None = None
    task_id: str | None = None
    options: list[str] = field(default_factory=list)
    repeat: int = 0
    status: EscalationStatus = EscalationStatus.OPEN
    acknowledged_by: str | None = None
    answer: str | None = None
    decision: Decision | None = None
    answered_by: str | None = None
    closed_reason: str | None = None
    raised_by: str | None = None  # the role that asked
    answer_id: str | None = None  # the answer event it holds
    read_by: str | None = None  # who read `decision` from free text ("rules", "model:...")
    unreadable: list[str] = field(default_factory=list)  # answers that reopened it
    first_question: str | None = None  # the question as first asked, once reopened
    acknowledgements: list[str] = field(default_factory=list)  # every one seen

    @property
    def asked(self) -> str:
        """The question as first asked (before any "I could not tell ..." note)."""
        return self.first_question or self.question

    @property
    def decided(self) -> bool:
        """Its decision is one of its options (what the asker can act on)."""
        return self.decision is not None and self.decision.value in {
            o.strip().lower() for o in self.options
        }

    @property
    def undecided(self) -> bool:
        """Answered, but not with one of its options, though they are decisions (words
        nobody has read yet, or `skip` to approve/reject): the asker (gate, merge queue)
        acts on those decisions only, so its task would wait with no question open."""
        return (
            self.status == EscalationStatus.ANSWERED
            and not self.decided
            and any(o.strip().lower() in _DECISIONS for o in self.options)
        )

    @property
    def waiting(self) -> bool:
        """Waiting for a person's answer."""
        return self.status in WAITING_FOR_A_PERSON

    @property
    def closed(self) -> bool:
        return self.status in CLOSED

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["raised_at"] = self.raised_at.isoformat()
        doc["last_raised_at"] = self.last_raised_at.isoformat()
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Escalation:
        doc = dict(doc)
        doc["kind"] = EscalationKind(doc["kind"])
        doc["severity"] = Severity(doc["severity"])
        doc["status"] = EscalationStatus(doc["status"])
        doc["decision"] = None if doc.get("decision") is None else Decision(doc["decision"])
        doc["raised_at"] = datetime.fromisoformat(doc["raised_at"])
        doc["last_raised_at"] = datetime.fromisoformat(doc["last_raised_at"])
        return cls(**doc)

    @classmethod
    def from_event(cls, event: EscalationRaised) -> Escalation:
        return cls(
            id=event.escalation_id,
            kind=event.kind,
            severity=event.severity,
            question=event.question,
            raised_at=event.ts,
            last_raised_at=event.ts,
            loop=event.loop,
            task_id=event.task_id,
            options=list(event.options),
            repeat=event.repeat,
            raised_by=event.source.role.value,
        )


def apply(current: Escalation | None, event: Event) -> Escalation | None:
    """The escalation after `event`; None when the event says nothing about it.
    Idempotent: an event seen twice changes nothing the second time."""
    if isinstance(event, EscalationRaised):
        if current is None:
            return Escalation.from_event(event)
        if current.closed or event.repeat <= current.repeat:
            return None
        current.repeat = event.repeat
        current.last_raised_at = event.ts
        if event.reopens is not None and event.reopens not in current.unreadable:
            current.unreadable.append(event.reopens)
            if current.status == EscalationStatus.ANSWERED and current.answer_id == event.reopens:
                # The answer could not be read as a decision: the question is open again.
                current.first_question = current.asked
                current.question = event.question
                current.status = EscalationStatus.OPEN
                current.answer = current.decision = current.answered_by = None
                current.answer_id = current.read_by = None
        return current
    if current is None or current.closed:
        return None
    if isinstance(event, EscalationAcknowledged):
        # Every acknowledgement is remembered, applied or not: one seen before
        # (redelivered after the question reopened) acknowledged the question as it
        # was then, not the one asked since.
        if event.id in current.acknowledgements:
            return None
        current.acknowledgements.append(event.id)
        if current.status != EscalationStatus.OPEN:
            return current  # nothing to acknowledge now; remembered
        current.status = EscalationStatus.ACKNOWLEDGED
        current.acknowledged_by = event.by
        return current
    if isinstance(event, EscalationAnswered):
        if event.interprets is not None:  # a decision read from a person's answer
            if event.interprets in current.unreadable or current.decided:
                return None
            if current.status == EscalationStatus.ANSWERED and current.answer_id not in (
                None,
                event.interprets,
            ):
                return None
            answer_id, current.read_by = event.interprets, event.read_by
        elif current.status == EscalationStatus.ANSWERED or event.id in current.unreadable:
            return None
        else:
            answer_id = event.id
        current.status = EscalationStatus.ANSWERED
        current.answer_id = answer_id
        current.answer, current.decision, current.answered_by = (
            event.answer,
            event.decision,
            event.by,
        )
        return current
    if isinstance(event, EscalationDelivered):
        current.status = EscalationStatus.DELIVERED
        return current
    if isinstance(event, EscalationExpired):
        current.status = EscalationStatus.EXPIRED
        current.closed_reason = event.reason
        return current
    return None


def escalation_id(event: Event) -> str | None:
    value = getattr(event, "escalation_id", None)
    return value if isinstance(value, str) else None


def fold_escalations(events: Iterable[Event]) -> dict[str, Escalation]:
    """Every escalation in `events` (e.g. `bus.replay(types=ESCALATION_TYPES)`)."""
    table: dict[str, Escalation] = {}
    for event in events:
        eid = escalation_id(event)
        if eid is None:
            continue
        updated = apply(table.get(eid), event)
        if updated is not None:
            table[eid] = updated
    return table


def by_urgency(escalations: Iterable[Escalation]) -> list[Escalation]:
    """Most severe first, then oldest first."""
    return sorted(escalations, key=lambda e: (-SEVERITY_RANK[e.severity], e.raised_at, e.id))


def open_escalations(
    events: Iterable[Event], *, include_answered: bool = False
) -> list[Escalation]:
    """The escalations still waiting for a person (and, optionally, those answered but
    not yet delivered), most severe first. For `loops escalations` and the dashboard."""
    wanted = set(WAITING_FOR_A_PERSON)
    if include_answered:
        wanted.add(EscalationStatus.ANSWERED)
    return by_urgency(e for e in fold_escalations(events).values() if e.status in wanted)
