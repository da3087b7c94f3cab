"""The agents on the real bus (fakeredis and Redis): restarts mid-incident neither
duplicate an action nor lose an escalation; a scripted stuck loop is unblocked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from agents.escalations import (
    ESCALATION_TYPES,
    EscalationStatus,
    open_escalations,
    open_escalations_on,
)
from agents.human import HumanAgent, HumanConfig
from agents.monitor import Monitor
from agents.pm import ProjectManager
from agents.runner import Agent, run
from bus import RedisBus
from events import (
    EscalationAnswered,
    EscalationDelivered,
    EscalationKind,
    EscalationRaised,
    Event,
    MonitorAction,
    MonitorActionKind,
    Role,
    Severity,
    Source,
    TaskBlocked,
    TaskHeld,
    TaskPassed,
    TaskReleased,
)
from infra.store import Store
from tests.agents.helpers import WORKER, Clock, heartbeat, iteration
from tests.conftest import RedisBackend, wait_until

OP = Source(role=Role.OPERATOR, instance="cli")


class Counting:
    """An agent wrapper that counts what it handled and its ticks."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.types = agent.types
        self.warm_up_window = agent.warm_up_window
        self.handled = 0
        self.ticks = 0

    def handle(self, event: Event) -> list[Event]:
        out: list[Event] = self.agent.handle(event)
        self.handled += 1
        return out

    def tick(self, now: datetime) -> list[Event]:
        out: list[Event] = self.agent.tick(now)
        self.ticks += 1
        return out

    def warm_up(self, events: Any, since: datetime | None = None) -> int:
        return int(self.agent.warm_up(events, since))


@contextmanager
def running(agent: Agent, bus: RedisBus, clock: Clock, group: str) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(
        target=run,
        args=(agent, bus, stop),
        kwargs={"group": group, "tick_s": 0.02, "clock": clock, "warm_up_since": "-"},
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def settle(agent: Counting, ticks: int = 5) -> None:
    """Wait until the agent has ticked `ticks` more times (so it saw the clock move)."""
    target = agent.ticks + ticks
    wait_until(lambda: agent.ticks >= target)


def of_type(bus: RedisBus, kind: type[Event]) -> list[Any]:
    return [e for _, e in bus.replay() if isinstance(e, kind)]


def test_monitor_restarted_mid_incident_does_not_act_twice(
    bus: RedisBus, redis_backend: RedisBackend
) -> None:
    clock = Clock()
    store = Store(redis_backend.client, redis_backend.prefix, "monitor")
    bus.publish(heartbeat("a", clock.now))
    for n in (1, 2, 3):
        bus.publish(iteration("a", clock.now, n, changed_files=[]))
    first = Counting(Monitor(store, clock=clock, pid_alive=lambda h, p: True))
    with running(first, bus, clock, "monitor"):
        wait_until(lambda: len(of_type(bus, MonitorAction)) == 1)
        clock.advance(2.5)  # and now the heartbeat is stale too
        wait_until(lambda: len(of_type(bus, MonitorAction)) == 2)
    kinds = sorted(a.action for a in of_type(bus, MonitorAction))
    assert kinds == [MonitorActionKind.RESET_TASK, MonitorActionKind.RESTART_WORKER]

    second = Counting(Monitor(store, clock=clock, pid_alive=lambda h, p: True))
    with running(second, bus, clock, "monitor"):
        for _ in range(8):  # the same stale incident, seen again by the new instance
            clock.advance(1)
            settle(second)
    assert len(of_type(bus, MonitorAction)) == 2


def test_scripted_stuck_loop_is_unblocked_within_two_heartbeat_intervals(
    bus: RedisBus, redis_backend: RedisBackend
) -> None:
    """A scripted agent that runs an iteration every 0.5 s and changes nothing, with
    heartbeats every second; the clock is driven by the test."""
    clock = Clock()
    store = Store(redis_backend.client, redis_backend.prefix, "monitor")
    mon = Counting(Monitor(store, clock=clock, pid_alive=lambda h, p: True))
    interval = 1.0
    published = 0
    evident_at: datetime | None = None
    acted_at: datetime | None = None
    with running(mon, bus, clock, "monitor"):
        for step in range(16):  # 4 s in 0.25 s steps
            now = clock.advance(0.25)
            batch: list[Event] = []
            if step % 4 == 0:
                batch.append(heartbeat("stuck", now, interval_s=interval))
            if step % 2 == 1:
                n = step // 2 + 1
                batch.append(iteration("stuck", now, n, changed_files=[]))
                if n == 3:
                    evident_at = now
            bus.publish_many(batch)
            published += len(batch)
            wait_until(lambda n=published: mon.handled >= n)  # type: ignore[misc]
            settle(mon, 1)
            if acted_at is None and of_type(bus, MonitorAction):
                acted_at = now
    assert evident_at is not None and acted_at is not None
    assert (acted_at - evident_at).total_seconds() <= 2 * interval
    [act, *_] = of_type(bus, MonitorAction)
    assert act.loop == "stuck" and act.action == MonitorActionKind.RESET_TASK


def test_human_agent_restarted_mid_incident_loses_nothing_and_repeats_nothing(
    bus: RedisBus, redis_backend: RedisBackend
) -> None:
    clock = Clock()
    store = Store(redis_backend.client, redis_backend.prefix, "human")
    config = HumanConfig(reraise_after_s={Severity.HIGH: 60.0, Severity.MEDIUM: 60.0})

    def raised(eid: str) -> EscalationRaised:
        return EscalationRaised(
            source=WORKER,
            loop="a",
            ts=clock.now,
            escalation_id=eid,
            kind=EscalationKind.QUESTION,
            severity=Severity.HIGH,
            question="Which port?",
            task_id="T1",
        )

    first = Counting(HumanAgent(store, config, clock=clock))
    with running(first, bus, clock, "human"):
        bus.publish(raised("e-1"))
        wait_until(lambda: first.handled >= 1)
    bus.publish(raised("e-2"))  # raised while no human agent runs
    second = Counting(HumanAgent(store, config, clock=clock))
    with running(second, bus, clock, "human"):
        wait_until(lambda: second.handled >= 1)
        clock.advance(61)
        wait_until(lambda: len([e for e in of_type(bus, EscalationRaised) if e.repeat == 1]) == 2)
        settle(second, 10)
    again = [e for e in of_type(bus, EscalationRaised) if e.repeat]
    assert sorted(e.escalation_id for e in again) == ["e-1", "e-2"]

    third = Counting(HumanAgent(store, config, clock=clock))
    with running(third, bus, clock, "human"):
        settle(third, 10)
        view = open_escalations(e for _, e in bus.replay(types=ESCALATION_TYPES))
        assert [(e.id, e.repeat) for e in view] == [("e-1", 1), ("e-2", 1)]
        bus.publish(
            EscalationAnswered(source=OP, loop="a", escalation_id="e-1", answer="8080", by="me")
        )
        bus.publish(EscalationDelivered(source=WORKER, loop="a", escalation_id="e-1", task_id="T1"))
        wait_until(
            lambda: (
                (e := third.agent.get("e-1")) is not None and e.status == EscalationStatus.DELIVERED
            )
        )
    assert [e.id for e in open_escalations_on(bus)] == ["e-2"]


def test_pm_on_the_bus_releases_a_dependency_after_a_restart(bus: RedisBus) -> None:
    clock = Clock()
    bus.publish(
        TaskBlocked(source=WORKER, loop="ui", task_id="U1", reason="dep", blocked_by="api/A1")
    )
    first = Counting(ProjectManager(clock=clock))
    with running(first, bus, clock, "pm"):
        wait_until(lambda: len(of_type(bus, TaskHeld)) == 1)
    bus.publish(
        TaskPassed(
            source=WORKER, loop="api", task_id="A1", attempt=1, commit="c", merged_commit="m"
        )
    )
    second = Counting(ProjectManager(clock=clock))
    with running(second, bus, clock, "pm"):
        wait_until(lambda: len(of_type(bus, TaskReleased)) == 1)
        settle(second, 5)
    assert len(of_type(bus, TaskHeld)) == 1 and len(of_type(bus, TaskReleased)) == 1
