"""The human interface: escalations between the loops and a person.

Lifecycle: raised -> acknowledged -> answered -> delivered, or expired when it stopped
mattering (its task passed or was reset, or an operator stopped its loop). One not
acknowledged in time is raised again with the same id and `repeat + 1`. People are
told through a `Notifier` (webhooks). A worker's `BLOCKED` reply arrives here as an
`escalation.raised` of kind question; answers come from `loops answer` as
`escalation.answered` and the asking loop publishes `escalation.delivered`.

Every answer moves its task on. A person's free text to a question with options
("Looks right to me" to a sign-off) is read as one of the options, by rules and then by
the judge model when one is configured (`agents/answers.py`), and published again as
`escalation.answered` with that `decision` (`interprets` = the person's answer id,
`read_by`), which is what the gate and the merge queue act on. An answer that cannot be
read re-raises the same escalation (`repeat + 1`, `reopens` = that answer id) with "I
could not tell whether ... means approve or reject": the question stays open. Both
follow-ups have ids derived from the answer's, and the reading is kept in the store, so
a redelivered answer publishes the same events again, which consumers dedupe.

Escalations live in Redis (the `Store`), so a restarted agent neither loses one nor
re-raises one twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agents.answers import AnswerReader, decision_options, derived_id, fit, read_by_rules
from agents.escalations import (
    ESCALATION_TYPES,
    Escalation,
    EscalationStatus,
    apply,
    by_urgency,
    escalation_id,
)
from agents.webhooks import Notifier, Payload
from events import (
    Decision,
    EscalationAcknowledged,
    EscalationAnswered,
    EscalationExpired,
    EscalationRaised,
    Event,
    LoopStarted,
    LoopStop,
    LoopStopped,
    Role,
    Severity,
    Source,
    TaskPassed,
    TaskReset,
    utcnow,
)
from infra.store import Store

Clock = Callable[[], datetime]

HUMAN_TYPES = (
    *ESCALATION_TYPES,
    "task.passed",
    "task.reset",
    "loop.stop",
    "loop.stopped",
    "loop.started",
)

DEFAULT_RERAISE_S = {
    Severity.LOW: 4 * 3600.0,
    Severity.MEDIUM: 3600.0,
    Severity.HIGH: 900.0,
    Severity.CRITICAL: 300.0,
}


@dataclass(frozen=True)
class HumanConfig:
    """When to raise an unacknowledged escalation again, per severity; how often at most."""

    reraise_after_s: dict[Severity, float] = field(default_factory=lambda: dict(DEFAULT_RERAISE_S))
    max_repeats: int | None = None
    ack_on_notify: bool = False  # a delivered notification counts as acknowledged
    keep_closed_s: float = 7 * 24 * 3600.0  # delivered/expired ones are forgotten after


def notification(esc: Escalation, what: str) -> Payload:
    """The JSON a webhook receives about `esc`."""
    return {
        "event": what,
        "escalation_id": esc.id,
        "status": esc.status.value,
        "kind": esc.kind.value,
        "severity": esc.severity.value,
        "loop": esc.loop,
        "task_id": esc.task_id,
        "question": esc.question,
        "options": esc.options,
        "repeat": esc.repeat,
        "raised_at": esc.raised_at.isoformat(),
        "answer": esc.answer,
        "reason": esc.closed_reason,
        "answer_with": f"loops answer {esc.id} TEXT",
    }


class HumanAgent:
    """Manages escalations: state, re-raising, expiry and notifications."""

    role = Role.HUMAN
    types = HUMAN_TYPES
    warm_up_window: str | timedelta | None = None  # its state is in the store

    def __init__(
        self,
        store: Store,
        config: HumanConfig | None = None,
        *,
        notifier: Notifier | None = None,
        reader: AnswerReader | None = None,
        clock: Clock = utcnow,
        source: Source | None = None,
    ) -> None:
        self.store = store
        self.config = config or HumanConfig()
        self.notifier = notifier
        self.reader = reader
        self.clock = clock
        self.source = source or Source(role=Role.HUMAN)

    def warm_up(self, events: Iterable[Event], since: datetime | None = None) -> int:
        """Nothing to rebuild: the escalations live in the store."""
        return 0

    # ----------------------------------------------------------------- state

    def get(self, eid: str) -> Escalation | None:
        doc = self.store.doc_get("escalations", eid)
        return None if doc is None else Escalation.from_doc(doc)

    def escalations(self) -> list[Escalation]:
        """Every escalation this agent knows, most urgent first."""
        return by_urgency(
            Escalation.from_doc(d) for d in self.store.doc_all("escalations").values()
        )

    def open(self) -> list[Escalation]:
        """Those still waiting for a person."""
        return [e for e in self.escalations() if e.waiting]

    def _save(self, esc: Escalation) -> None:
        self.store.doc_put("escalations", esc.id, esc.to_doc())

    def _notify(self, esc: Escalation, what: str) -> None:
        if self.notifier is not None:
            self.notifier.notify(notification(esc, what))

    # ----------------------------------------------------------------- events

    def handle(self, event: Event) -> list[Event]:
        eid = escalation_id(event)
        if eid is not None:
            out = self._lifecycle(eid, event)
            if isinstance(event, EscalationAnswered):
                out += self._read_answer(event)
            return out
        if isinstance(event, TaskPassed):
            return self._expire(event, "task passed", include_answered=True, task=event.task_id)
        if isinstance(event, TaskReset):
            return self._expire(event, "task reset", task=event.task_id)
        if isinstance(event, LoopStop) and event.loop:
            if event.restart:
                self.store.set(f"restarting:{event.loop}", event.id)
            else:
                self.store.set(f"stopping:{event.loop}", event.id)
        elif isinstance(event, LoopStarted) and event.loop:
            self.store.delete(f"restarting:{event.loop}", f"stopping:{event.loop}")
        elif isinstance(event, LoopStopped) and event.loop:
            # Only a stop an operator asked for ends the loop's questions: a loop that
            # exits waiting on a person, crashes, or restarts still needs the answer.
            asked = self.store.get(f"stopping:{event.loop}") is not None
            restarting = self.store.get(f"restarting:{event.loop}") is not None
            if asked and not restarting:
                return self._expire(event, f"loop stopped: {event.reason}"[:200])
        return []

    def _lifecycle(self, eid: str, event: Event) -> list[Event]:
        updated = apply(self.get(eid), event)
        if updated is None:
            return []  # a duplicate, or nothing new
        self._save(updated)
        out: list[Event] = []
        if isinstance(event, EscalationRaised):
            self._notify(updated, "escalation.raised")
            if self.config.ack_on_notify and self.notifier is not None:
                out.append(
                    EscalationAcknowledged(
                        source=self.source, loop=updated.loop, escalation_id=eid, by="notification"
                    )
                )
        elif isinstance(event, EscalationAnswered | EscalationExpired):
            self._notify(updated, event.type)
        return out

    # ----------------------------------------------------------------- answers

    def _read_answer(self, answer: EscalationAnswered) -> list[Event]:
        """The decision a person's words mean, published; or the question asked again."""
        if answer.interprets is not None:
            return []
        esc = self.get(answer.escalation_id)
        if esc is None:
            return []
        reading = self.store.doc_get("readings", answer.id)
        if reading is None:  # not read yet (else: a redelivery; publish the same again)
            if esc.answer_id != answer.id or not esc.undecided:
                return []
            read_by = "rules"
            if answer.decision is not None:  # a decision, but not one of the options
                decision = fit(answer.decision, esc.options)
            else:
                decision = read_by_rules(answer.answer, esc.options, esc.kind)
            if decision is None and answer.decision is None and self.reader is not None:
                decision = self.reader.read(esc.asked, esc.options, answer.answer)
                read_by = self.reader.name
            reading = {
                "decision": None if decision is None else decision.value,
                "read_by": read_by,
                "at": self.clock().isoformat(),
                "repeat": esc.repeat + 1,
            }
            self.store.doc_put("readings", answer.id, reading)
        follow = self._follow_up(esc, answer, reading)
        return [follow, *self._lifecycle(esc.id, follow)]

    def _follow_up(
        self, esc: Escalation, answer: EscalationAnswered, reading: dict[str, object]
    ) -> Event:
        at = datetime.fromisoformat(str(reading["at"]))
        env = {"source": self.source, "loop": esc.loop, "ts": at, "causation_id": answer.id}
        if reading["decision"] is not None:
            return EscalationAnswered(
                **env,  # type: ignore[arg-type]
                id=derived_id(answer.id, "decided"),
                correlation_id=answer.correlation_id,
                escalation_id=esc.id,
                answer=answer.answer,
                decision=Decision(str(reading["decision"])),
                by=answer.by,
                task_id=answer.task_id or esc.task_id,
                interprets=answer.id,
                read_by=str(reading["read_by"]),
            )
        choices = [d.value for d in decision_options(esc.options)]
        either = " or ".join(choices) if len(choices) <= 2 else ", ".join(choices)
        words = " ".join(answer.answer.split())
        words = words if len(words) <= 120 else words[:119] + "…"
        if answer.decision is not None:
            note = f"{answer.decision.value} is not an answer to this question: answer {either}."
        else:
            note = f"I could not tell whether \u201c{words}\u201d means {either}: answer {either}."
        return EscalationRaised(
            **env,  # type: ignore[arg-type]
            id=derived_id(answer.id, "reopened"),
            escalation_id=esc.id,
            kind=esc.kind,
            severity=esc.severity,
            question=f"{note} The question was: {esc.asked}",
            task_id=esc.task_id,
            options=esc.options,
            repeat=int(str(reading["repeat"])),
            reopens=answer.id,
        )

    def _expire(
        self, event: Event, reason: str, *, include_answered: bool = False, task: str | None = None
    ) -> list[Event]:
        out: list[Event] = []
        for esc in self.escalations():
            if esc.loop != event.loop or (task is not None and esc.task_id != task):
                continue
            if not (esc.waiting or (include_answered and esc.status == EscalationStatus.ANSWERED)):
                continue
            if esc.raised_at > event.ts:
                continue  # asked after the event: still matters
            expired = EscalationExpired(
                source=self.source,
                loop=esc.loop,
                causation_id=event.id,
                escalation_id=esc.id,
                reason=reason,
            )
            changed = apply(esc, expired)
            if changed is not None:
                self._save(changed)
                self._notify(changed, expired.type)
                out.append(expired)
        return out

    # ----------------------------------------------------------------- time

    def tick(self, now: datetime) -> list[Event]:
        """Raise again every escalation nobody acknowledged in time."""
        out: list[Event] = []
        for esc in self.escalations():
            if (
                esc.closed
                and (now - esc.last_raised_at).total_seconds() > self.config.keep_closed_s
            ):
                self.store.doc_delete("escalations", esc.id)
            if esc.status != EscalationStatus.RAISED:
                continue
            if self.config.max_repeats is not None and esc.repeat >= self.config.max_repeats:
                continue
            after = self.config.reraise_after_s.get(esc.severity, DEFAULT_RERAISE_S[esc.severity])
            if (now - esc.last_raised_at).total_seconds() < after:
                continue
            repeat = esc.repeat + 1
            if not self.store.claim(f"reraised:{esc.id}:{repeat}"):
                continue  # another instance (or this one before a restart) did it
            event = EscalationRaised(
                source=self.source,
                loop=esc.loop,
                ts=now,
                escalation_id=esc.id,
                kind=esc.kind,
                severity=esc.severity,
                question=esc.question,
                task_id=esc.task_id,
                options=esc.options,
                repeat=repeat,
            )
            out += [event, *self._lifecycle(esc.id, event)]
        return out
