"""`loops status`, its `--json` and `loops up`'s idle decision read one fold of the
stream, so they agree whatever the events: a property test over generated event
sequences."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

import events as ev
from cli.fmt import render
from events.view import LoopView, SystemView, TaskStatus

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
W = ev.Source(role=ev.Role.WORKER, instance="w:1")
MERGE = ev.Source(role=ev.Role.MERGE, instance="m:1")
LOOPS = ("alpha", "beta")
TASKS = ("T1", "T2", "T3")


def _event(kind: str, loop: str, task: str, n: int, flag: bool, paused: bool, t: int) -> ev.Event:
    ts = T0 + timedelta(seconds=t)
    common = {"source": W, "loop": loop, "ts": ts}
    if kind == "started":
        return ev.LoopStarted(**common, agent="a", pid=1, host="h", tasks_total=n, tasks_passed=0)
    if kind == "heartbeat":
        status = ev.LoopStatus.IDLE if not flag else ev.LoopStatus.RUNNING
        return ev.LoopHeartbeat(
            **common,
            status=status,
            pid=1,
            host="h",
            interval_s=5.0,
            passed=min(n, 2),
            total=n,
            can_progress=flag,
            paused=paused,
        )
    if kind == "stopped":
        return ev.LoopStopped(**common, status=ev.LoopStatus.STOPPED, reason="done")
    if kind == "task":
        return ev.TaskStarted(**common, task_id=task, attempt=1)
    if kind == "claimed":
        return ev.TaskClaimed(
            **common, task_id=task, attempt=1, commit="c" * 40, branch="b", base="d" * 40
        )
    if kind == "merged":
        return ev.MergeCompleted(
            source=MERGE,
            loop=loop,
            ts=ts,
            task_id=task,
            commit="c" * 40,
            merged_commit="e" * 40,
            main_before="d" * 40,
        )
    if kind == "blocked":
        return ev.TaskBlocked(**common, task_id=task, reason="max attempts reached")
    return ev.TaskFailed(**common, task_id=task, attempt=1, reason="checks failed")


KINDS = ("started", "heartbeat", "stopped", "task", "claimed", "merged", "blocked", "failed")
# Heartbeats are most of a real stream, and what the idle decision reads.
WEIGHTED = (*KINDS, "heartbeat", "heartbeat", "heartbeat")
sequences = st.lists(
    st.tuples(
        st.sampled_from(WEIGHTED),
        st.sampled_from(LOOPS),
        st.sampled_from(TASKS),
        st.integers(min_value=0, max_value=3),
        st.booleans(),
        st.booleans(),
    ),
    max_size=40,
)


def _realistic(raw: list[tuple[str, str, str, int, bool, bool]]) -> list[ev.Event]:
    """As a stream holds them: a loop's worker says nothing before it starts, nor after
    it stopped until it starts again (other roles' events for it may come any time)."""
    running: set[str] = set()
    out: list[ev.Event] = []
    for i, (kind, loop, *rest) in enumerate(raw):
        if kind == "started":
            running.add(loop)
        elif kind in ("heartbeat", "stopped", "task", "claimed", "failed") and loop not in running:
            continue
        if kind == "stopped":
            running.discard(loop)
        out.append(_event(kind, loop, *rest, t=i))  # type: ignore[arg-type]
    return out


def _status_rows(text: str) -> dict[str, str]:
    """LOOP -> PASSED column of `loops status`' LOOPS table."""
    rows: dict[str, str] = {}
    section = text.split("\nLOOPS\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    for line in section:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[5]
    return rows


def _settled_by_hand(events: list[ev.Event], loop: str, since: datetime) -> bool:
    """`LoopView.settled`, told again from the raw events of `loop`."""
    mine = [e for e in events if e.loop == loop]
    starts = [i for i, e in enumerate(mine) if isinstance(e, ev.LoopStarted)]
    if not starts or mine[starts[-1]].ts < since:
        return False
    after = mine[starts[-1] :]
    said = [e for e in after if isinstance(e, ev.LoopHeartbeat | ev.LoopStopped)]
    if not said:
        return False
    last = said[-1]
    if isinstance(last, ev.LoopStopped):
        return True
    if last.status in (ev.LoopStatus.STOPPED, ev.LoopStatus.ERROR):
        return True
    return last.can_progress is False and not last.paused


@settings(max_examples=150, deadline=None)
@given(sequences)
def test_status_json_and_idle_agree(
    raw: list[tuple[str, str, str, int, bool, bool]],
) -> None:
    events = _realistic(raw)
    view = SystemView.from_events(events)
    now = T0 + timedelta(seconds=len(events))
    text = render(view, now=now)
    data = view.to_dict(now=now)
    rows = _status_rows(text) if view.loops else {}
    for name in LOOPS:
        loop = view.loops.get(name)
        if loop is None:
            assert name not in rows and name not in data["loops"]
            continue
        shown = data["loops"][name]
        # One count: the status table and its JSON.
        assert rows[name] == f"{shown['passed']}/{shown['total']}"
        # The tasks the table lists are the JSON's, with the same states.
        listed = {t: v["status"] for t, v in shown["tasks"].items()}
        for task_id, status in listed.items():
            assert re.search(rf"\b{name}\s+{task_id}\s+{status}\b", text), (task_id, status)
        assert all(isinstance(TaskStatus(s), TaskStatus) for s in listed.values())
        # `loops up`'s idle decision, from the same fold, matches the events themselves.
        assert loop.settled(T0) is _settled_by_hand(events, name, T0)


def test_a_loop_not_heard_from_since_its_spawn_is_not_settled() -> None:
    """An earlier run's `loop.stopped` must not end a new `loops up` before its worker
    has said anything."""
    old = [
        _event("started", "alpha", "T1", 1, True, False, t=0),
        _event("stopped", "alpha", "T1", 1, True, False, t=1),
    ]
    view = SystemView.from_events(old)
    assert view.loops["alpha"].settled(T0)
    assert not view.loops["alpha"].settled(T0 + timedelta(seconds=2))
    view.apply(_event("started", "alpha", "T1", 1, True, False, t=3))
    assert not view.loops["alpha"].settled(T0 + timedelta(seconds=2))  # heard, not said
    view.apply(_event("heartbeat", "alpha", "T1", 1, True, False, t=4))
    assert not view.loops["alpha"].settled(T0 + timedelta(seconds=2))  # can progress
    view.apply(_event("heartbeat", "alpha", "T1", 1, False, False, t=5))
    assert view.loops["alpha"].settled(T0 + timedelta(seconds=2))
    assert isinstance(view.loops["alpha"], LoopView)
