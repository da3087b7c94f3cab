"""What has passed lives in durable state (invariant 9), and the state file is the
harness's (issue 9, item 4): a trimmed stream strands no dependent task; a `passed`
written by hand (or by an agent) without a merge on main is set back and reported."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import events as ev
from agents.pm import PMConfig, ProjectManager
from bus import PassedLedger, RedisBus
from events.view import SystemView
from infra.git import git
from loops.books import HarnessBook
from loops.driver import WorkerExit, run_worker
from loops.harness import FileStatus
from loops.project import load_project
from loops.runners import make_runner
from loops.service import WorkerService
from tests.conftest import wait_until

MERGE = ev.Source(role=ev.Role.MERGE, instance="test-merge")
WRITE_AND_CLAIM = [{"write": {"{task}.txt": "done\n"}, "reply": "<promise>done</promise>"}]


@dataclass
class Running:
    service: WorkerService
    book: HarnessBook
    stop: threading.Event
    thread: threading.Thread
    result: list[WorkerExit]

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository with two loops: loop-b's B1 depends on loop-a's A1."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for name, tests in (
        ("loop-a", [{"id": "A1", "status": "pending"}]),
        ("loop-b", [{"id": "B1", "status": "pending", "dependsOn": "loop-a/A1"}]),
    ):
        (root / name / "specs").mkdir(parents=True)
        task = tests[0]["id"]
        script = {
            "tasks": {
                task: [{"write": {f"{task}.txt": "done\n"}, "reply": "<promise>done</promise>"}]
            }
        }
        (root / name / "agent.yaml").write_text(yaml.safe_dump(script))
        config = {
            "name": name,
            "specs_dir": f"{name}/specs",
            "auto_continue_delay": 0,
            "agent": "script:agent.yaml",
        }
        (root / name / "config.json").write_text(json.dumps(config))
        (root / name / "specs" / "test-state.json").write_text(json.dumps({"tests": tests}))
    (root / ".gitignore").write_text(".loops/\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


@pytest.fixture
def start(bus: RedisBus, project: Path) -> Iterator[Callable[[str], Running]]:
    running: list[Running] = []

    def go(name: str) -> Running:
        loop = load_project(project).loop(name)
        book = HarnessBook(loop)
        runner = make_runner("script:agent.yaml", base_dir=loop.dir)
        service = WorkerService(bus, book, runner, project, heartbeat_s=30)
        stop = threading.Event()
        result: list[WorkerExit] = []
        thread = threading.Thread(
            target=lambda: result.append(
                run_worker(service.worker, service.poll, stop, idle_block_ms=50)
            ),
            daemon=True,
        )
        thread.start()
        r = Running(service, book, stop, thread, result)
        running.append(r)
        return r

    yield go
    for r in running:
        r.stop.set()
        r.thread.join(timeout=15)


def of(bus: RedisBus, etype: str, **match: object) -> list[ev.Event]:
    return [
        e for _, e in bus.replay(types={etype}) if all(getattr(e, k) == v for k, v in match.items())
    ]


def write(path: Path, data: object) -> None:
    """As an editor that saves atomically would (a half-written file is another test)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def forged(bus: RedisBus) -> list[ev.Event]:
    return [
        e
        for e in of(bus, "state.rejected", loop="loop-a")
        if isinstance(e, ev.StateRejected) and "without a merged commit" in e.problems[0]
    ]


def merge(bus: RedisBus, claim: ev.TaskClaimed, merged: str) -> None:
    bus.publish(
        ev.MergeCompleted(
            source=MERGE,
            task_id=claim.task_id,
            commit=claim.commit,
            merged_commit=merged,
            main_before="b" * 40,
            **claim.caused(),
        )
    )


def test_a_trimmed_stream_strands_no_dependent_task(
    bus: RedisBus, start: Callable[[str], Running]
) -> None:
    a = start("loop-a")
    claim = wait_until(lambda: of(bus, "task.claimed", task_id="A1"))[0]
    assert isinstance(claim, ev.TaskClaimed)
    merge(bus, claim, "m" * 40)
    wait_until(lambda: of(bus, "task.passed", task_id="A1"))
    a.halt()
    assert PassedLedger(bus.client, bus.prefix).get("loop-a/A1") == "m" * 40
    stopped = of(bus, "loop.stopped", loop="loop-a")[-1]  # it lists its tasks as it stops
    assert isinstance(stopped, ev.LoopStopped) and stopped.tasks is not None
    assert [(t.id, t.status) for t in stopped.tasks] == [("A1", ev.TaskStatus.MERGED)]
    # Everything the stream knew is gone: the merge, the task.passed, the claims.
    bus.client.xtrim(bus.stream, maxlen=0, approximate=False)
    assert not list(bus.replay())
    b = start("loop-b")
    started = wait_until(lambda: of(bus, "iteration.started", task_id="B1"))
    assert started
    # loop-a, restarted, still counts A1 as passed: the durable record backs it.
    a2 = start("loop-a")
    said = wait_until(lambda: of(bus, "loop.started", loop="loop-a"))[-1]
    assert a2.book.record("A1").status.value == "passed"
    # ... and says so on the stream: `loops status` and the summaries know it merged.
    assert isinstance(said, ev.LoopStarted) and said.tasks is not None
    assert [(t.id, t.status) for t in said.tasks] == [("A1", ev.TaskStatus.MERGED)]
    view = SystemView.from_events(bus.replay())
    assert view.loops["loop-a"].tasks["A1"].status is ev.TaskStatus.MERGED
    assert not of(bus, "state.rejected")
    b.halt()
    # A fresh PM does not hold B1 on a dependency whose task.passed was trimmed.
    config = PMConfig(dependencies={"loop-b/B1": ["loop-a/A1"]})
    assert ProjectManager(config).desired()  # without the record it would hold B1
    fresh = ProjectManager(config, merged=PassedLedger(bus.client, bus.prefix).all())
    assert not fresh.desired()


def test_a_forged_passed_is_set_back_and_reported_an_operator_reset_is_taken_up(
    bus: RedisBus, start: Callable[[str], Running], project: Path
) -> None:
    state_path = project / "loop-a" / "specs" / "test-state.json"
    # Before the run: an agent (or a person) wrote "passed"; nothing merged.
    write(state_path, {"tests": [{"id": "A1", "status": "passed"}]})
    a = start("loop-a")
    rejected = wait_until(lambda: forged(bus))[0]
    assert isinstance(rejected, ev.StateRejected)
    assert "A1" in rejected.problems[0] and "without a merged commit" in rejected.problems[0]
    claim = wait_until(lambda: of(bus, "task.claimed", task_id="A1"))[0]
    assert a.book.record("A1").status.value == "pending"
    # During the run: the same forgery while the claim waits for the gate.
    data = json.loads(state_path.read_text())
    data["tests"][0]["status"] = "passed"
    write(state_path, data)
    wait_until(lambda: len(forged(bus)) == 2)
    assert json.loads(state_path.read_text())["tests"][0]["status"] == "pending"
    assert a.service.worker.merged.commit("A1") is None
    # The real merge passes it; an operator's reset to pending is then taken up.
    assert isinstance(claim, ev.TaskClaimed)
    merge(bus, claim, "m" * 40)
    wait_until(lambda: of(bus, "task.passed", task_id="A1"))
    assert a.service.worker.merged.commit("A1") == "m" * 40
    assert a.book.record("A1").status.value == "passed"
    # The file says what the read model says, in the seed's word.
    view = SystemView.from_events(bus.replay())
    assert FileStatus.of(view.loops["loop-a"].tasks["A1"].status) is a.book.record("A1").status
    data = json.loads(state_path.read_text())
    data["tests"][0]["status"] = "pending"
    write(state_path, data)
    wait_until(lambda: len(of(bus, "iteration.started", task_id="A1")) == 2)
    assert len(forged(bus)) == 2


def test_a_manual_test_a_person_marked_passed_is_left_alone(
    bus: RedisBus, start: Callable[[str], Running], project: Path
) -> None:
    """`automatable: false` entries are verified by a person, not merged by the harness."""
    state_path = project / "loop-a" / "specs" / "test-state.json"
    manual = {"id": "M1", "status": "passed", "automatable": False}
    write(state_path, {"tests": [{"id": "A1", "status": "pending"}, manual]})
    start("loop-a")
    wait_until(lambda: of(bus, "task.claimed", task_id="A1"))
    assert not forged(bus)
    assert json.loads(state_path.read_text())["tests"][1]["status"] == "passed"
