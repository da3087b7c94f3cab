"""`loops status`, its `--json`, `loops up`'s idle decision and the `up`/`run`
summaries read one fold of the stream, so they agree whatever the events: a property
test over generated event sequences."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import events as ev
from cli.fmt import render
from events.view import LoopView, SystemView, TaskStatus
from events.view.summary import run_summary, up_summary

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
W = ev.Source(role=ev.Role.WORKER, instance="w:1")
MERGE = ev.Source(role=ev.Role.MERGE, instance="m:1")
LOOPS = ("alpha", "beta")
TASKS = ("T1", "T2", "T3")
MAX_ATTEMPTS = 2
# What a state file can say, in the vocabulary (`FileStatus.task_status`).
IN_FILE = (TaskStatus.PENDING, TaskStatus.MERGED, TaskStatus.FAILED, TaskStatus.BLOCKED)


def _event(
    kind: str,
    loop: str,
    task: str,
    n: int,
    flag: bool,
    paused: bool,
    t: int,
    snapshot: tuple[TaskStatus, ...] = (),
) -> ev.Event:
    ts = T0 + timedelta(seconds=t)
    common = {"source": W, "loop": loop, "ts": ts}
    tasks = [
        ev.TaskSnapshot(id=task_id, status=status, attempts=n, last_result=f"was {status}")
        for task_id, status in zip(TASKS, snapshot, strict=False)
    ]
    if kind == "started":
        return ev.LoopStarted(
            **common,
            agent="a",
            pid=1,
            host="h",
            tasks_total=n,
            tasks_passed=0,
            tasks=tasks if flag else None,  # None: an older worker that does not say
            max_attempts=MAX_ATTEMPTS,
        )
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
        return ev.LoopStopped(
            **common, status=ev.LoopStatus.STOPPED, reason="done", tasks=tasks if flag else None
        )
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
    if kind in ("held", "released"):
        pm = {**common, "source": ev.Source(role=ev.Role.PM, instance="pm:1")}
        held = ev.TaskHeld if kind == "held" else ev.TaskReleased
        return held(**pm, task_id=task, reason="file overlap")
    return ev.TaskFailed(**common, task_id=task, attempt=1, reason="checks failed")


KINDS = (
    *("started", "heartbeat", "stopped", "task", "claimed", "merged", "blocked", "failed"),
    *("held", "released"),
)
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
        st.lists(st.sampled_from(IN_FILE), max_size=len(TASKS)).map(tuple),
    ),
    max_size=40,
)
Raw = list[tuple[str, str, str, int, bool, bool, tuple[TaskStatus, ...]]]


def _realistic(raw: Raw) -> list[ev.Event]:
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
        task, n, flag, paused, snapshot = rest
        out.append(_event(kind, loop, task, n, flag, paused, t=i, snapshot=snapshot))  # type: ignore[arg-type]
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
def test_status_json_idle_and_summaries_agree(raw: Raw) -> None:
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
    _summaries_agree(view, data)


def _summaries_agree(view: SystemView, data: dict[str, Any]) -> None:
    """Each task's verdict in the `up` and `run` summaries is its `--json` status."""
    code, lines = up_summary(view, dict.fromkeys(LOOPS, T0))
    text = "\n".join(lines)
    everything_merged = True
    for name in LOOPS:
        shown = data["loops"].get(name)
        started = shown is not None and shown["started"] is not None
        statuses = {t: v["status"] for t, v in shown["tasks"].items()} if shown else {}
        merged = [t for t, s in statuses.items() if s == TaskStatus.MERGED]
        everything_merged &= started and bool(statuses) and len(merged) == len(statuses)
        head = re.search(rf"^  {name}: (\d+)/(\d+) tasks verified and merged$", text, re.M)
        assert (head is not None) is started, text
        assert (f"  {name}: its worker did not start" in lines) is not started
        run_code, run_lines = run_summary(view, name, "main", "loops run")
        run_text = "\n".join(run_lines)
        if not started:
            assert run_code == 1 and "Task " not in run_text
            continue
        assert head is not None
        assert (int(head[1]), int(head[2])) == (len(merged), len(statuses)), text
        if shown["listed"]:  # the status table's PASSED column counts the same
            assert (shown["passed"], shown["total"]) == (len(merged), len(statuses))
        block = re.split(r"\n  (?=\S)", text.split(head[0], 1)[1])[0]  # to the next loop
        said = dict(re.findall(r"^    (T\d): (\w+)", block, re.M))
        assert said == {t: s for t, s in statuses.items() if t not in merged}, block
        told = dict(re.findall(r"^Task '(T\d)' is (\w+)", run_text, re.M))
        assert told == said, run_text
        assert (run_code == 0) is (bool(statuses) and not said)
    assert (code == 0) is everything_merged
    assert lines[-1] == (
        "All tasks verified and merged." if code == 0 else "Not every task merged (exit 1)."
    )


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
