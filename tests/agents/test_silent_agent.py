"""The silent-agent rule: a running agent with no sign of life is killed and its
iteration retried with a hint; repeats escalate; a slow agent that shows life is never
touched. Time is the monitor's (a hand-driven clock)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.monitor import Monitor
from agents.policy import Policy, Rule, load_policy
from bus import RedisBus
from events import (
    AgentSign,
    CommandAcknowledged,
    EscalationAnswered,
    EscalationRaised,
    Event,
    FailureKind,
    IterationAbort,
    LoopHeartbeat,
    LoopStatus,
    MonitorAction,
    MonitorActionKind,
    Role,
    Source,
    TaskReset,
)
from infra.store import Store
from tests.agents.helpers import WORKER, Clock, failed, heartbeat, iteration
from tests.agents.test_on_bus import Counting, of_type, running, settle
from tests.conftest import RedisBackend, wait_until

A = MonitorActionKind
OP = Source(role=Role.OPERATOR, instance="cli")
LIMIT = 600.0  # the default policy's silent_agent_after_s


def alive(host: str, pid: int) -> bool | None:
    return True


def make(store: Store, clock: Clock, **kw: Any) -> Monitor:
    kw.setdefault("pid_alive", alive)
    return Monitor(store, clock=clock, **kw)


def actions(events: list[Event]) -> list[MonitorAction]:
    return [e for e in events if isinstance(e, MonitorAction)]


def aborts(events: list[Event]) -> list[IterationAbort]:
    return [e for e in events if isinstance(e, IterationAbort)]


def agent_beat(
    loop: str,
    at: datetime,
    started: datetime,
    activity: datetime | None = None,
    sign: AgentSign | None = None,
    **kw: Any,
) -> LoopHeartbeat:
    return heartbeat(
        loop,
        at,
        iteration=kw.pop("iteration", 1),
        agent_started_at=started,
        agent_activity_at=activity,
        agent_activity=sign if activity else AgentSign.STARTED,
        agent_pid=777,
        **kw,
    )


def run_for(
    mon: Monitor,
    clock: Clock,
    seconds: int,
    started: datetime,
    *,
    activity_every: float | None = None,
    sign: AgentSign = AgentSign.OUTPUT,
    skew: timedelta = timedelta(0),
    loop: str = "a",
    **kw: Any,
) -> list[Event]:
    """Heartbeats every second for `seconds`; the agent shows life every `activity_every`
    seconds (never when None). `skew`: the worker's clock minus the monitor's."""
    out: list[Event] = []
    last: datetime | None = None
    begin = clock.now
    for _ in range(seconds):
        now = clock.advance(1)
        if activity_every is not None and (now - begin).total_seconds() % activity_every < 1:
            last = now
        out += mon.handle(
            agent_beat(
                loop,
                now + skew,
                started + skew,
                None if last is None else last + skew,
                sign,
                **kw,
            )
        )
        out += mon.tick(now)
    return out


def test_a_silent_agent_is_aborted_and_retried_with_a_hint(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    started = clock.now
    assert run_for(mon, clock, int(LIMIT), started) == []  # exactly the limit: not yet
    out = run_for(mon, clock, 2, started)
    [act] = actions(out)
    assert act.rule == Rule.SILENT_AGENT and act.action == A.ABORT_ITERATION
    [abort] = aborts(out)
    assert (abort.loop, abort.task_id, abort.iteration) == ("a", "T1", 1)
    assert abort.agent_started_at == started and abort.retry
    assert abort.hint and "no sign of life" in abort.hint and "timeout" in abort.hint
    assert abort.incident_id == act.incident_id and abort.causation_id
    assert run_for(mon, clock, 60, started) == []  # the same run: acted on once


def test_a_slow_agent_that_prints_progress_is_never_touched(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    out = run_for(mon, clock, 3600, clock.now, activity_every=LIMIT - 10)
    assert out == []


def test_a_slow_agent_that_only_edits_files_is_never_touched(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    out = run_for(mon, clock, 2400, clock.now, activity_every=120, sign=AgentSign.FILE_CHANGE)
    assert out == []


def test_silence_after_progress_counts_from_the_last_sign(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    started = clock.now
    out = run_for(mon, clock, 200, started, activity_every=50, sign=AgentSign.TOOL_CALL)
    assert out == []
    # It goes quiet at +200 s: acted on only after LIMIT more seconds.
    last = clock.now
    for _ in range(int(LIMIT) - 1):
        now = clock.advance(1)
        out += mon.handle(agent_beat("a", now, started, last, AgentSign.TOOL_CALL))
        out += mon.tick(now)
    assert out == []
    out = mon.tick(clock.advance(2))
    [abort] = aborts(out)
    assert abort.hint and "tool call" in abort.hint


def test_a_worker_clock_far_off_changes_nothing(store: Store, clock: Clock) -> None:
    for skew in (timedelta(minutes=-20), timedelta(minutes=20)):
        mon = make(store, clock)
        busy = run_for(mon, clock, 1200, clock.now, activity_every=60, skew=skew, loop="busy")
        assert busy == []
        mon = make(store, clock)
        quiet = run_for(mon, clock, int(LIMIT) + 2, clock.now, skew=skew, loop=f"q{skew}")
        assert [a.rule for a in actions(quiet)] == [Rule.SILENT_AGENT]


def test_silence_is_judged_on_the_monitors_clock_between_heartbeats(
    store: Store, clock: Clock
) -> None:
    """The last heartbeat said 'silent LIMIT - 50 s'; heartbeats keep their interval but
    the monitor's clock runs on: 51 s after that heartbeat arrived, the agent is due."""
    mon = make(store, clock, policy=load_policy())
    started = clock.now - timedelta(seconds=LIMIT - 50)
    mon.handle(agent_beat("a", clock.now, started, interval_s=60.0))
    assert mon.tick(clock.advance(50)) == []
    [abort] = aborts(mon.tick(clock.advance(1)))
    assert abort.agent_started_at == started


def test_old_workers_without_agent_fields_are_never_judged(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    out: list[Event] = []
    for _ in range(1000):
        out += mon.handle(heartbeat("a", clock.now))
        out += mon.tick(clock.advance(1))
    assert out == []


def test_a_waiting_or_paused_loop_is_not_a_silent_agent(store: Store, clock: Clock) -> None:
    for status in (LoopStatus.WAITING, LoopStatus.PAUSED):
        mon = make(store, clock)
        out = run_for(mon, clock, 600, clock.now, status=status, loop=f"l-{status.value}")
        assert out == []


def test_a_dead_worker_is_a_stale_heartbeat_not_a_silent_agent(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    started = clock.now - timedelta(seconds=LIMIT + 50)
    mon.handle(agent_beat("a", clock.now, started))
    out = mon.tick(clock.advance(2.5))
    assert [a.rule for a in actions(out)] == [Rule.STALE_HEARTBEAT]
    assert aborts(out) == []


def silent_run(mon: Monitor, clock: Clock, n: int, task: str = "T1") -> list[Event]:
    """Agent run `n` on `task`: silent until aborted, then the worker reports it."""
    started = clock.now
    out = run_for(mon, clock, int(LIMIT) + 2, started, iteration=n, task_id=task)
    clock.advance(1)
    out += mon.handle(
        failed(
            "a",
            clock.now,
            n,
            "aborted by the monitor: no sign of life",
            failure=FailureKind.TIMEOUT,
            task_id=task,
            changed_files=[],
        )
    )
    return out


def test_repeated_silent_runs_on_one_task_escalate_kill_and_block(
    store: Store, clock: Clock
) -> None:
    mon = make(store, clock)
    out: list[Event] = []
    for n in (1, 2, 3):
        out += silent_run(mon, clock, n)
    kinds = [a.action for a in actions(out)]
    assert kinds == [A.ABORT_ITERATION, A.ABORT_ITERATION, A.ESCALATE, A.BLOCK_TASK]
    assert [a.retry for a in aborts(out)] == [True, True, False]
    [esc] = [e for e in out if isinstance(e, EscalationRaised)]
    assert esc.task_id == "T1" and "silent" in esc.question and "blocked" in esc.question
    # A person's hint retries the task with it.
    answer = EscalationAnswered(
        source=OP, escalation_id=esc.escalation_id, answer="run pytest with -x", by="ann"
    )
    [reset] = [e for e in mon.handle(answer) if isinstance(e, TaskReset)]
    assert reset.task_id == "T1" and reset.hint == "run pytest with -x"


def test_a_run_that_ends_by_itself_breaks_the_streak(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    out = silent_run(mon, clock, 1) + silent_run(mon, clock, 2)
    clock.advance(1)
    out += mon.handle(iteration("a", clock.now, 3))  # a normal run in between
    out += silent_run(mon, clock, 4) + silent_run(mon, clock, 5)
    assert [a.action for a in actions(out)] == [A.ABORT_ITERATION] * 4
    assert not any(isinstance(e, EscalationRaised) for e in out)


def test_a_run_the_worker_does_not_kill_escalates_after_the_policy_seconds(
    store: Store, clock: Clock
) -> None:
    mon = make(store, clock)
    started = clock.now
    out = run_for(mon, clock, int(LIMIT) + 2, started)
    assert [a.action for a in actions(out)] == [A.ABORT_ITERATION]
    out = run_for(mon, clock, 118, started)  # the action was 119 s ago
    assert out == []
    out = run_for(mon, clock, 2, started)
    assert [a.action for a in actions(out)][:1] == [A.ESCALATE]
    assert [a.retry for a in aborts(out)] == [False]


def test_a_restarted_monitor_does_not_abort_the_same_run_twice(store: Store, clock: Clock) -> None:
    first = make(store, clock)
    started = clock.now
    history: list[Event] = []
    for _ in range(int(LIMIT) + 2):
        beat = agent_beat("a", clock.advance(1), started)
        history.append(beat)
        history += first.handle(beat)
        history += first.tick(clock.now)
    assert len(aborts(history)) == 1
    second = make(store, clock)
    second.warm_up(history)
    out: list[Event] = []
    for _ in range(30):
        beat = agent_beat("a", clock.advance(1), started)
        out += second.handle(beat) + second.tick(clock.now)
    assert out == []


def test_the_limit_is_a_policy_setting_and_the_rule_can_be_off(
    store: Store, clock: Clock, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("thresholds: {silent_agent_after_s: 30}\n")
    mon = make(store, clock, policy=load_policy(path))
    assert run_for(mon, clock, 30, clock.now, loop="a") == []
    assert [a.rule for a in actions(run_for(mon, clock, 2, clock.now - timedelta(seconds=30)))]
    path.write_text("rules: {silent_agent: {enabled: false}}\n")
    off = make(store, clock, policy=load_policy(path))
    assert run_for(off, clock, 900, clock.now, loop="b") == []


# --------------------------------------------------------------------------- on a real bus


def test_on_the_bus_the_hung_agent_is_aborted_and_the_busy_one_is_not(
    bus: RedisBus, redis_backend: RedisBackend
) -> None:
    """Two loops' heartbeats on the bus, a running monitor, and a stand-in worker that
    obeys `iteration.abort` as the contract says (acknowledges it)."""
    clock = Clock()
    mon = Counting(
        Monitor(
            Store(redis_backend.client, redis_backend.prefix, "monitor"),
            short_policy(60.0),
            clock=clock,
            pid_alive=alive,
        )
    )
    acks: list[Event] = []

    def worker(event: Event) -> None:
        if isinstance(event, IterationAbort) and event.loop == "hung":
            ack = CommandAcknowledged(
                source=WORKER,
                loop="hung",
                command=event.type,
                command_id=event.id,
                detail=f"killed the agent's process group; retrying={event.retry}",
            )
            bus.publish(ack)
            acks.append(ack)

    stand_in = bus.subscribe("worker:hung", "w", worker, types={"iteration.abort"})
    started = clock.now
    published = 0
    with running(mon, bus, clock, "monitor"):
        for _ in range(10):  # 100 s in 10 s steps, heartbeats every 10 s; the limit is 60 s
            now = clock.advance(10)
            bus.publish_many(
                [
                    agent_beat("hung", now, started, interval_s=10.0),
                    agent_beat(
                        "busy",
                        now,
                        started,
                        now - timedelta(seconds=5),
                        AgentSign.OUTPUT,
                        interval_s=10.0,
                    ),
                ]
            )
            published += 2
            wait_until(lambda n=published: mon.handled >= n)  # type: ignore[misc]
            settle(mon, 1)
            stand_in.poll(block_ms=1)
    wait_until(lambda: stand_in.poll(block_ms=1) == 0 and len(acks) == 1)
    [abort] = of_type(bus, IterationAbort)
    assert abort.loop == "hung" and abort.retry and abort.agent_started_at == started
    assert [a.loop for a in of_type(bus, MonitorAction)] == ["hung"]
    [ack] = of_type(bus, CommandAcknowledged)
    assert ack.command == "iteration.abort" and ack.command_id == abort.id


def test_a_silent_run_after_the_escalation_is_still_killed_without_asking_again(
    store: Store, clock: Clock
) -> None:
    mon = make(store, clock)
    out: list[Event] = []
    for n in (1, 2, 3):
        out += silent_run(mon, clock, n)
    assert len([e for e in out if isinstance(e, EscalationRaised)]) == 1
    # The task runs again before anyone answers (an operator reset it): it hangs again.
    more = silent_run(mon, clock, 4)
    assert [a.action for a in actions(more)] == [A.ABORT_ITERATION, A.BLOCK_TASK]
    assert [a.retry for a in aborts(more)] == [False]
    assert not any(isinstance(e, EscalationRaised) for e in more)


def test_a_replayed_heartbeat_is_not_judged_on_the_workers_clock(
    store: Store, clock: Clock
) -> None:
    """After a restart the monitor replays heartbeats stamped by a worker clock 20 min
    behind; until a live one arrives it has no receipt time for them."""
    mon = make(store, clock)
    behind = timedelta(minutes=20)
    started = clock.now - behind
    mon.warm_up([agent_beat("a", clock.now - behind, started, started, AgentSign.OUTPUT)])
    assert mon.tick(clock.advance(1)) == []


# --------------------------------------------------------------------------- a property

SHORT = 60.0  # a short limit keeps the generated runs small
INTERVAL = 5.0


def schedule_run(gaps: list[int], tail: int) -> list[Event]:
    """One agent run with signs of life `gaps` seconds apart, then `tail` quiet seconds;
    heartbeats every INTERVAL report the latest sign the worker has seen. The monitor
    ticks every second. Returns what it published."""
    import fakeredis

    clock = Clock()
    policy = short_policy(SHORT)
    client = fakeredis.FakeRedis()
    mon = make(Store(client, "p", "monitor"), clock, policy=policy)
    started = clock.now
    signs = [started + timedelta(seconds=s) for s in _cumulative(gaps)]
    end = (signs[-1] if signs else started) + timedelta(seconds=tail)
    out: list[Event] = []
    t = 0
    while clock.now < end:
        now = clock.advance(1)
        t += 1
        if t % INTERVAL == 0:
            seen = [s for s in signs if s <= now]
            out += mon.handle(
                agent_beat(
                    "a",
                    now,
                    started,
                    seen[-1] if seen else None,
                    AgentSign.OUTPUT,
                    interval_s=INTERVAL,
                )
            )
        out += mon.tick(now)
    client.close()
    return out


def short_policy(limit: float) -> Policy:
    """The default policy with a silence limit of `limit` seconds."""
    default = load_policy()
    thresholds = default.thresholds.model_copy(update={"silent_agent_after_s": limit})
    return default.model_copy(update={"thresholds": thresholds})


def _cumulative(gaps: list[int]) -> list[int]:
    total, out = 0, []
    for g in gaps:
        total += g
        out.append(total)
    return out


@settings(max_examples=40)
@given(
    gaps=st.lists(st.integers(1, int(SHORT - INTERVAL)), min_size=1, max_size=8),
    tail=st.integers(0, int(SHORT - INTERVAL)),
)
def test_an_agent_that_shows_life_within_the_limit_is_never_acted_on(
    gaps: list[int], tail: int
) -> None:
    assert schedule_run(gaps, tail) == []


@settings(max_examples=40)
@given(
    gaps=st.lists(st.integers(1, int(SHORT - INTERVAL)), max_size=6),
    silence=st.integers(int(SHORT + INTERVAL), int(2 * SHORT)),
)
def test_an_agent_silent_past_the_limit_is_aborted_exactly_once(
    gaps: list[int], silence: int
) -> None:
    out = schedule_run(gaps, silence)
    assert [a.action for a in actions(out)] == [A.ABORT_ITERATION]
    assert len(aborts(out)) == 1
