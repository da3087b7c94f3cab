"""The human interface: escalation lifecycle, re-raising, expiry, notifications."""

from __future__ import annotations

from typing import Any

from agents.escalations import EscalationStatus, fold_escalations, open_escalations
from agents.human import HumanAgent, HumanConfig
from events import (
    EscalationAcknowledged,
    EscalationAnswered,
    EscalationDelivered,
    EscalationExpired,
    EscalationKind,
    EscalationRaised,
    Event,
    LoopStarted,
    LoopStatus,
    LoopStop,
    LoopStopped,
    Role,
    Severity,
    Source,
    TaskPassed,
    TaskReset,
)
from infra.store import Store
from tests.agents.helpers import WORKER, Clock
from tests.agents.webhook_server import Receiver, webhook_server

OP = Source(role=Role.OPERATOR, instance="cli")


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def notify(self, payload: Any) -> None:
        self.sent.append(dict(payload))


def raised(eid: str, clock: Clock, **kw: Any) -> EscalationRaised:
    fields: dict[str, Any] = {
        "kind": EscalationKind.QUESTION,
        "severity": Severity.MEDIUM,
        "question": "Which database should I use?",
        "task_id": "T1",
    }
    fields.update(kw)
    return EscalationRaised(source=WORKER, loop="a", ts=clock.now, escalation_id=eid, **fields)


def test_lifecycle_raised_acknowledged_answered_delivered(store: Store, clock: Clock) -> None:
    rec = Recorder()
    human = HumanAgent(store, notifier=rec, clock=clock)
    events: list[Event] = [
        raised("e-1", clock),
        EscalationAcknowledged(source=OP, escalation_id="e-1", by="ann"),
        EscalationAnswered(source=OP, escalation_id="e-1", answer="sqlite", by="ann", task_id="T1"),
        EscalationDelivered(source=WORKER, loop="a", escalation_id="e-1", task_id="T1"),
    ]
    statuses = []
    for e in events:
        assert human.handle(e) == []
        got = human.get("e-1")
        assert got is not None
        statuses.append(got.status)
    assert statuses == [
        EscalationStatus.RAISED,
        EscalationStatus.ACKNOWLEDGED,
        EscalationStatus.ANSWERED,
        EscalationStatus.DELIVERED,
    ]
    assert [s["event"] for s in rec.sent] == ["escalation.raised", "escalation.answered"]
    assert rec.sent[0]["answer_with"] == "loops answer e-1 TEXT"
    # The same fold, from the events alone, for the CLI.
    assert fold_escalations(events)["e-1"].answer == "sqlite"
    assert open_escalations(events) == []
    assert [e.id for e in open_escalations(events[:2])] == ["e-1"]


def test_duplicates_change_nothing(store: Store, clock: Clock) -> None:
    rec = Recorder()
    human = HumanAgent(store, notifier=rec, clock=clock)
    event = raised("e-1", clock)
    human.handle(event)
    human.handle(event)
    assert len(rec.sent) == 1


def test_open_escalations_most_severe_first(clock: Clock) -> None:
    events = [
        raised("e-low", clock, severity=Severity.LOW),
        raised("e-crit", clock, severity=Severity.CRITICAL),
        raised("e-high", clock, severity=Severity.HIGH),
        EscalationAnswered(source=OP, escalation_id="e-high", answer="x", by="me"),
    ]
    assert [e.id for e in open_escalations(events)] == ["e-crit", "e-low"]
    assert [e.id for e in open_escalations(events, include_answered=True)] == [
        "e-crit",
        "e-high",
        "e-low",
    ]


def test_unacknowledged_is_raised_again_with_the_same_id(store: Store, clock: Clock) -> None:
    config = HumanConfig(reraise_after_s={Severity.HIGH: 60.0})
    rec = Recorder()
    human = HumanAgent(store, config, notifier=rec, clock=clock)
    human.handle(raised("e-1", clock, severity=Severity.HIGH))
    assert human.tick(clock.advance(59)) == []
    [again] = human.tick(clock.advance(2))
    assert isinstance(again, EscalationRaised)
    assert again.escalation_id == "e-1" and again.repeat == 1 and again.source.role == Role.HUMAN
    assert human.handle(again) == []  # its own echo from the bus
    assert human.tick(clock.advance(30)) == []
    [third] = human.tick(clock.advance(31))
    assert isinstance(third, EscalationRaised) and third.repeat == 2
    human.handle(EscalationAcknowledged(source=OP, escalation_id="e-1", by="ann"))
    assert human.tick(clock.advance(3600)) == []
    assert len(rec.sent) == 3


def test_expires_when_the_task_passes_or_is_reset(store: Store, clock: Clock) -> None:
    human = HumanAgent(store, clock=clock)
    human.handle(raised("e-1", clock, task_id="T1"))
    human.handle(raised("e-2", clock, task_id="T2"))
    human.handle(raised("e-3", clock, task_id="T3"))
    clock.advance(1)
    [exp] = human.handle(
        TaskPassed(
            source=WORKER,
            loop="a",
            ts=clock.now,
            task_id="T1",
            attempt=1,
            commit="c",
            merged_commit="m",
        )
    )
    assert (
        isinstance(exp, EscalationExpired) and exp.escalation_id == "e-1" and "passed" in exp.reason
    )
    [exp2] = human.handle(TaskReset(source=OP, loop="a", ts=clock.now, task_id="T2"))
    assert isinstance(exp2, EscalationExpired) and exp2.escalation_id == "e-2"
    assert [e.id for e in human.open()] == ["e-3"]
    assert human.handle(exp) == []


def test_loop_stopped_expires_only_when_an_operator_stopped_it(store: Store, clock: Clock) -> None:
    human = HumanAgent(store, clock=clock)
    human.handle(raised("e-1", clock))
    clock.advance(1)
    # A crash, or a restart by the monitor: the question still stands.
    crash = LoopStopped(
        source=WORKER, loop="a", ts=clock.now, status=LoopStatus.ERROR, reason="boom"
    )
    assert human.handle(crash) == []
    human.handle(LoopStop(source=OP, loop="a", restart=True))
    assert (
        human.handle(
            LoopStopped(source=WORKER, loop="a", status=LoopStatus.STOPPED, reason="restart")
        )
        == []
    )
    human.handle(LoopStarted(source=WORKER, loop="a", agent="claude", pid=1, host="h"))
    assert [e.id for e in human.open()] == ["e-1"]
    human.handle(LoopStop(source=OP, loop="a"))
    [exp] = human.handle(
        LoopStopped(
            source=WORKER, loop="a", ts=clock.now, status=LoopStatus.STOPPED, reason="stopped"
        )
    )
    assert isinstance(exp, EscalationExpired) and exp.escalation_id == "e-1"


def test_a_restarted_human_agent_keeps_escalations_and_does_not_repeat(
    store: Store, clock: Clock
) -> None:
    config = HumanConfig(reraise_after_s={Severity.MEDIUM: 60.0})
    first = HumanAgent(store, config, clock=clock)
    first.handle(raised("e-1", clock))
    [again] = first.tick(clock.advance(61))
    second = HumanAgent(store, config, clock=clock)  # restarted: same store
    assert [e.id for e in second.open()] == ["e-1"]
    assert second.handle(raised("e-1", clock)) == []  # redelivered original
    assert second.handle(again) == []
    assert second.tick(clock.now) == []
    assert second.tick(clock.advance(61))[0].repeat == 2  # type: ignore[attr-defined]


def test_notifications_reach_a_webhook_signed(store: Store, clock: Clock) -> None:
    from agents.webhooks import WebhookNotifier, WebhookTarget

    with webhook_server(Receiver("k")) as rx:
        notifier = WebhookNotifier([WebhookTarget(rx.url, "k")])
        human = HumanAgent(store, HumanConfig(ack_on_notify=True), notifier=notifier, clock=clock)
        [ack] = human.handle(raised("e-9", clock, severity=Severity.CRITICAL))
        assert isinstance(ack, EscalationAcknowledged) and ack.escalation_id == "e-9"
        assert rx.rejected == 0
        assert rx.received[0]["escalation_id"] == "e-9"
        assert rx.received[0]["severity"] == "critical"


def test_closed_escalations_are_forgotten_after_a_while(store: Store, clock: Clock) -> None:
    human = HumanAgent(store, HumanConfig(keep_closed_s=3600), clock=clock)
    human.handle(raised("e-1", clock))
    human.handle(raised("e-2", clock))
    human.handle(EscalationDelivered(source=WORKER, loop="a", escalation_id="e-1"))
    human.tick(clock.advance(1800))
    assert {e.id for e in human.escalations()} == {"e-1", "e-2"}
    human.tick(clock.advance(1801))
    assert {e.id for e in human.escalations()} == {"e-2"}
