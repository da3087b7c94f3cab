"""The loop worker's side of issue 11, item 6: `auto_continue_delay` is honoured
whatever events arrive meanwhile (on the worker's injected clock), and a reset of a
task the loop does not have is refused and leaves nothing behind."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

import events as ev
from bus import RedisBus
from cli.view import SystemView
from loops.books import SpecBook
from loops.driver import WorkerExit, run_worker
from loops.runners import make_runner
from loops.service import WorkerService
from loops.spec import parse_spec
from loops.workspace import git
from tests.conftest import wait_until
from tests.loops.test_worker import OPERATOR, SPEC


class Clock:
    """The worker's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def loop(
    bus: RedisBus, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[WorkerService, SpecBook, Clock]]:
    reply = getattr(request, "param", "working")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("demo\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump({"default": [{"reply": reply}]}))
    book = SpecBook(parse_spec(SPEC), repo / "SPEC.yaml", repo / ".loops" / "state", 1000)
    book.auto_continue_delay = 3600.0
    book.max_attempts = 1
    service = WorkerService(
        bus, book, make_runner(f"script:{tmp_path / 'agent.yaml'}"), repo, heartbeat_s=0.2
    )
    clock = Clock()
    service.worker.clock = clock
    stop = threading.Event()
    result: list[WorkerExit] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_worker(service.worker, service.poll, stop, idle_block_ms=50)
        ),
        daemon=True,
    )
    thread.start()
    yield service, book, clock
    stop.set()
    thread.join(timeout=10)


def _events(bus: RedisBus, etype: str) -> list[ev.Event]:
    return [e for _, e in bus.replay(types={etype}, loop="spec")]


def _acknowledged(bus: RedisBus, command: ev.Event) -> ev.CommandAcknowledged:
    def ack() -> ev.CommandAcknowledged | None:
        for e in _events(bus, "command.acknowledged"):
            if isinstance(e, ev.CommandAcknowledged) and e.command_id == command.id:
                return e
        return None

    return wait_until(ack, timeout=15)


def test_auto_continue_delay_is_not_cut_short_by_events(
    bus: RedisBus, loop: tuple[WorkerService, SpecBook, Clock]
) -> None:
    _, _, clock = loop
    wait_until(lambda: _events(bus, "iteration.finished"), timeout=15)
    for _ in range(2):  # events the loop handles while it waits: none ends the delay
        hint = ev.TaskHint(source=OPERATOR, loop="spec", task_id="hello", text="look again")
        bus.publish(hint)
        _acknowledged(bus, hint)
    assert len(_events(bus, "iteration.started")) == 1
    clock.now += timedelta(seconds=3601)
    wait_until(lambda: len(_events(bus, "iteration.started")) == 2, timeout=15)


def test_a_reset_of_an_unknown_task_is_refused_and_leaves_nothing_behind(
    bus: RedisBus, loop: tuple[WorkerService, SpecBook, Clock]
) -> None:
    service, book, _ = loop
    wait_until(lambda: _events(bus, "iteration.finished"), timeout=15)
    reset = ev.TaskReset(source=OPERATOR, loop="spec", task_id="NOPE")
    bus.publish(reset)
    ack = _acknowledged(bus, reset)
    assert ack.refused and "unknown task NOPE" in ack.detail
    assert "NOPE" not in book.statuses() and "NOPE" not in service.worker.state.tasks
    assert "NOPE" not in book.state_path.read_text()
    view = SystemView.from_events(bus.replay())
    assert "NOPE" not in view.loops["spec"].tasks
    known = ev.TaskReset(source=OPERATOR, loop="spec", task_id="hello")
    bus.publish(known)
    assert not _acknowledged(bus, known).refused


@pytest.mark.parametrize("loop", ["<promise>done</promise>"], indirect=True)
def test_status_agrees_with_the_state_file_on_a_blocked_task(
    bus: RedisBus, loop: tuple[WorkerService, SpecBook, Clock]
) -> None:
    """A claim that fails verification at max attempts: test-state.json, the events and
    `loops status` (the view) all say blocked, with the same count of failed attempts."""
    _, book, _ = loop
    claim = wait_until(lambda: _events(bus, "task.claimed"), timeout=15)[0]
    assert isinstance(claim, ev.TaskClaimed)
    bus.publish(
        ev.VerificationFailed(
            source=ev.Source(role=ev.Role.GATE, instance="test-gate"),
            task_id=claim.task_id,
            commit=claim.commit,
            attempt=claim.attempt,
            verdict=ev.VerificationVerdict.CHECKS_FAILED,
            reason="1 of 1 criteria failed",
            **claim.caused(),
        )
    )
    wait_until(lambda: _events(bus, "task.blocked"), timeout=15)
    record = book.record(claim.task_id)
    task = SystemView.from_events(bus.replay()).loops["spec"].tasks[claim.task_id]
    assert record.status.value == task.status.value == "blocked"
    assert record.attempts == task.attempts == 1


def test_health_json_reports_a_pause_and_keeps_the_seed_status(
    bus: RedisBus, loop: tuple[WorkerService, SpecBook, Clock]
) -> None:
    _, book, _ = loop
    health = book.state_dir / "health.json"
    wait_until(lambda: _events(bus, "iteration.finished"), timeout=15)
    pause = ev.LoopPause(source=OPERATOR, loop="spec")
    bus.publish(pause)
    _acknowledged(bus, pause)
    paused = wait_until(lambda: (d := json.loads(health.read_text())).get("paused") and d)
    assert paused["status"] == "running"  # the seed's four statuses, unchanged
    resume = ev.LoopResume(source=OPERATOR, loop="spec")
    bus.publish(resume)
    _acknowledged(bus, resume)
    wait_until(lambda: "paused" not in json.loads(health.read_text()))
