"""Unattended runs (issue 11), the worker's side: the agent timeout, the agent's
liveness in the heartbeat, `iteration.abort` while the agent runs, and usage windows
shared by every loop on one account. Real bus, real git, real agent programs."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import pytest
import yaml

import events as ev
from bus import BusSettings, RedisBus, connect
from infra.git import git
from infra.settings import Settings
from loops.books import SpecBook
from loops.driver import WorkerExit, run_worker
from loops.harness import config_from_data
from loops.runners import AgentRequest, make_runner
from loops.runners.anthropic_agent import AnthropicRunner
from loops.service import WorkerService
from loops.spec import parse_spec
from tests.conftest import require_real_redis, wait_until
from tests.fakes.mock_anthropic import MockAnthropic

MONITOR = ev.Source(role=ev.Role.MONITOR, instance="test-monitor")
SPEC = """
goal: "Greet"
tasks:
  - id: hello
    title: "Write hello.py"
    description: "Create hello.py printing hi"
    acceptance_criteria:
      - criterion: "hello.py runs"
        check: {type: script, run: "python hello.py"}
"""


@dataclass
class Loop:
    bus: RedisBus
    service: WorkerService
    book: SpecBook
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    result: list[WorkerExit] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.book.loop

    def start(self) -> Loop:
        self.thread = threading.Thread(
            target=lambda: self.result.append(
                run_worker(self.service.worker, self.service.poll, self.stop, idle_block_ms=50)
            ),
            daemon=True,
        )
        self.thread.start()
        return self

    def events(self, etype: str) -> list[ev.Event]:
        return [e for _, e in self.bus.replay(types={etype}, loop=self.name)]

    def wait_event(self, etype: str, n: int = 1, timeout: float = 20, **match: object) -> ev.Event:
        def found() -> ev.Event | None:
            hits = [
                e for e in self.events(etype) if all(getattr(e, k) == v for k, v in match.items())
            ]
            return hits[n - 1] if len(hits) >= n else None

        return wait_until(found, timeout=timeout)

    def transcript(self, iteration: int) -> str:
        root = self.book.state_dir / "logs" / "transcripts"
        return "\n".join(p.read_text() for p in sorted(root.glob(f"*-iter{iteration:04d}-*.log")))


def make_loop(
    bus: RedisBus,
    root: Path,
    agent: str,
    *,
    name: str = "spec",
    files: dict[str, str] | None = None,
    **service: object,
) -> Loop:
    repo = root / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("demo\n")
    for path, text in (files or {}).items():
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    book = SpecBook(parse_spec(SPEC), repo / f"{name}.yaml", repo / ".loops" / "state", 1000)
    runner = make_runner(agent)
    options: dict[str, object] = {"heartbeat_s": 0.2, **service}
    return Loop(bus, WorkerService(bus, book, runner, repo, **options), book)  # type: ignore[arg-type]


@pytest.fixture
def loops_started() -> Iterator[list[Loop]]:
    started: list[Loop] = []
    yield started
    for lp in started:
        lp.stop.set()
    for lp in started:
        if lp.thread is not None:
            lp.thread.join(timeout=15)


def agent_file(tmp_path: Path, body: str) -> str:
    """A Python agent program; returns its `command:` spec."""
    path = tmp_path / f"agent-{uuid.uuid4().hex[:6]}.py"
    path.write_text(body)
    return f"command:{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def processes_with(marker: str) -> list[int]:
    """Pids whose command line holds `marker` (works inside and outside the sandbox's
    PID namespace: /proc shows every process to the host)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry.name))
        except OSError:
            continue
    return [p for p in found if p != os.getpid()]


# ------------------------------------------------------------------ 1. agent timeout


def test_agent_timeout_is_a_config_field_with_the_old_default() -> None:
    config = config_from_data({"name": "L", "specs_dir": "loop-a"})
    assert config.agent_timeout_s == 30 * 60
    assert (
        config_from_data({"name": "L", "specs_dir": "a", "agent_timeout_s": 5}).agent_timeout_s == 5
    )
    with pytest.raises(ev.ValidationFailed, match="agent_timeout_s"):
        config_from_data({"name": "L", "specs_dir": "a", "agent_timeout_s": 0})


def test_a_hanging_agent_is_killed_at_the_configured_timeout(
    bus: RedisBus, tmp_path: Path, loops_started: list[Loop]
) -> None:
    marker = f"hang-{uuid.uuid4().hex[:8]}"
    agent = agent_file(
        tmp_path,
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}'])\n"
        "import time; time.sleep(600)\n",
    )
    lp = make_loop(bus, tmp_path, agent, agent_timeout_s=1.0)
    loops_started.append(lp.start())
    finished = lp.wait_event("iteration.finished")
    assert isinstance(finished, ev.IterationFinished)
    assert finished.failure is ev.FailureKind.TIMEOUT and finished.counted
    assert "timeout of 1s" in (finished.failure_detail or "")
    wait_until(lambda: not processes_with(marker), timeout=10)


# ------------------------------------------------------------------ 2. liveness


def test_heartbeats_follow_the_agent_output_then_file_changes(
    bus: RedisBus, tmp_path: Path, loops_started: list[Loop]
) -> None:
    go = tmp_path / "go"
    agent = agent_file(
        tmp_path,
        "import os, time\n"
        f"go = {str(go)!r}\n"
        "print('reading the code', flush=True)\n"
        "while not os.path.exists(go + '1'): time.sleep(0.05)\n"
        "open('notes.txt', 'w').write('silent work')\n"  # no output: a file change only
        "while not os.path.exists(go + '2'): time.sleep(0.05)\n"
        "print('still working')\n",
    )
    lp = make_loop(bus, tmp_path, agent)
    loops_started.append(lp.start())
    output = lp.wait_event("loop.heartbeat", agent_activity=ev.AgentSign.OUTPUT)
    assert isinstance(output, ev.LoopHeartbeat)
    assert output.status is ev.LoopStatus.RUNNING and output.task_id == "hello"
    assert output.agent_started_at is not None and output.agent_pid
    assert output.agent_activity_at is not None
    assert output.agent_activity_at >= output.agent_started_at
    Path(f"{go}1").touch()
    changed = lp.wait_event("loop.heartbeat", agent_activity=ev.AgentSign.FILE_CHANGE)
    assert isinstance(changed, ev.LoopHeartbeat)
    assert changed.agent_started_at == output.agent_started_at
    assert changed.agent_activity_at and changed.agent_activity_at > output.agent_activity_at
    Path(f"{go}2").touch()
    lp.wait_event("iteration.finished")
    # Between runs, no agent: the fields are empty (the monitor judges none).
    wait_until(
        lambda: (
            any(
                isinstance(b, ev.LoopHeartbeat) and b.agent_started_at is None
                for b in lp.events("loop.heartbeat")[-3:]
            )
            or lp.events("iteration.started")[1:]
        ),
        timeout=10,
    )
    beats = [b for b in lp.events("loop.heartbeat") if isinstance(b, ev.LoopHeartbeat)]
    assert all(b.agent_started_at is not None for b in beats if b.agent_activity is not None)


def test_a_claude_tool_call_is_a_sign_of_life(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Path(__file__).resolve().parent.parent / "fakes" / "fake_claude.py"
    monkeypatch.setenv(
        "LOOPS_CLAUDE_BIN", f"{shlex.quote(sys.executable)} {shlex.quote(str(fake))}"
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-" + "z" * 40)
    monkeypatch.setenv("FAKE_CLAUDE_SCENARIO", "success")
    monkeypatch.setenv("LOOPS_SANDBOX_ENV", "FAKE_CLAUDE_*")
    wt = tmp_path / "wt"
    wt.mkdir()
    signs: list[ev.AgentSign] = []
    pids: list[int] = []
    result = make_runner("claude", settings=Settings.from_env()).run(
        AgentRequest(
            prompt="p",
            worktree=wt,
            loop="l",
            task_id="T",
            iteration=1,
            timeout_s=30,
            on_activity=signs.append,
            on_spawn=pids.append,
        )
    )
    assert result.ok, result.failure_detail
    assert signs.count(ev.AgentSign.TOOL_CALL) == 2  # Write, Bash
    assert ev.AgentSign.OUTPUT in signs and len(pids) == 1


# ------------------------------------------------------------------ 3. iteration.abort


@pytest.fixture
def signed_buses() -> Iterator[tuple[RedisBus, RedisBus]]:
    """The worker's bus and the monitor's, on the real Redis, signing decisions with
    one key (an unsigned `iteration.abort` is dropped)."""
    url = require_real_redis()
    prefix = f"test-abort-{uuid.uuid4().hex[:8]}"
    key = b"k" * 32
    client = connect(url)
    worker = RedisBus(client, settings=BusSettings(url=url, prefix=prefix, signing_key=key))
    monitor = RedisBus(client, settings=BusSettings(url=url, prefix=prefix, signing_key=key))
    try:
        yield worker, monitor
    finally:
        worker.delete_all()
        client.close()


def test_the_monitor_aborts_a_silent_agent_while_it_runs(
    signed_buses: tuple[RedisBus, RedisBus], tmp_path: Path, loops_started: list[Loop]
) -> None:
    bus, monitor = signed_buses
    marker = f"silent-{uuid.uuid4().hex[:8]}"
    agent = agent_file(
        tmp_path,
        "import os, subprocess, sys, time\n"
        "prompt = open(os.environ['LOOPS_PROMPT_FILE']).read()\n"
        "if 'HINT-FROM-MONITOR' in prompt:\n"
        "    print('woke up, still working'); sys.exit(0)\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}'])\n"
        "time.sleep(600)\n",
    )
    lp = make_loop(bus, tmp_path, agent)
    loops_started.append(lp.start())
    beat = lp.wait_event("loop.heartbeat", agent_activity=ev.AgentSign.STARTED)
    assert isinstance(beat, ev.LoopHeartbeat) and beat.agent_started_at and beat.agent_pid
    wait_until(lambda: processes_with(marker), timeout=10)
    abort = ev.IterationAbort(
        source=MONITOR,
        loop=lp.name,
        task_id="hello",
        iteration=beat.iteration,
        agent_started_at=beat.agent_started_at,
        reason="no sign of life for 600s",
        hint="HINT-FROM-MONITOR: print your progress",
        retry=True,
        incident_id="inc-1",
    )
    monitor.publish(abort)
    finished = lp.wait_event("iteration.finished")
    assert isinstance(finished, ev.IterationFinished)
    assert finished.outcome is ev.IterationOutcome.FAILED
    assert finished.failure is ev.FailureKind.TIMEOUT and finished.counted
    assert finished.failure_detail == "aborted by the monitor: no sign of life for 600s"
    wait_until(lambda: not processes_with(marker), timeout=10)  # the whole group died
    ack = lp.wait_event("command.acknowledged", command_id=abort.id)
    assert isinstance(ack, ev.CommandAcknowledged)
    assert (
        ack.command == "iteration.abort" and ack.detail == f"killed process group {beat.agent_pid}"
    )
    # Retried at once with the hint; not a failed attempt.
    second = lp.wait_event("iteration.finished", 2)
    assert isinstance(second, ev.IterationFinished) and second.failure is None
    assert "HINT-FROM-MONITOR" in lp.transcript(2)
    assert not lp.events("task.failed") and lp.book.record("hello").attempts == 0
    # An abort for the run that already ended: acknowledged, nothing else happens.
    late = abort.model_copy(update={"id": ev.new_id()})
    monitor.publish(late)
    ack = lp.wait_event("command.acknowledged", command_id=late.id)
    assert isinstance(ack, ev.CommandAcknowledged) and ack.detail == "not running"
    # The abort counted as one agent call, once.
    assert [e.failure_detail for e in lp.events("iteration.finished")].count(  # type: ignore[attr-defined]
        finished.failure_detail
    ) == 1


def test_an_unsigned_abort_is_ignored(
    signed_buses: tuple[RedisBus, RedisBus], tmp_path: Path, loops_started: list[Loop]
) -> None:
    bus, _ = signed_buses
    agent = agent_file(
        tmp_path,
        "import os, time\n"
        f"while not os.path.exists({str(tmp_path / 'go')!r}): time.sleep(0.05)\n"
        "print('done working')\n",
    )
    lp = make_loop(bus, tmp_path, agent)
    loops_started.append(lp.start())
    beat = lp.wait_event("loop.heartbeat", agent_activity=ev.AgentSign.STARTED)
    assert isinstance(beat, ev.LoopHeartbeat)
    forged = RedisBus(bus.client, settings=BusSettings(url=bus.settings.url, prefix=bus.prefix))
    forged.publish(
        ev.IterationAbort(
            source=MONITOR, loop=lp.name, task_id="hello", reason="forged", retry=True
        )
    )
    # The run is not killed: a second look at the feed still shows it running.
    later = lp.wait_event("loop.heartbeat", n=len(lp.events("loop.heartbeat")) + 5)
    assert isinstance(later, ev.LoopHeartbeat)
    assert later.agent_started_at == beat.agent_started_at
    (tmp_path / "go").touch()
    finished = lp.wait_event("iteration.finished")
    assert isinstance(finished, ev.IterationFinished) and finished.failure is None


# ------------------------------------------------------------------ 4. usage windows


def test_a_usage_limit_holds_every_loop_on_the_account(
    bus: RedisBus,
    tmp_path: Path,
    loops_started: list[Loop],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="loops.worker")
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setenv("LOOPS_SANDBOX_WRITABLE", str(calls))
    # One program for both loops (so one account): records each call; loop `a`'s first
    # call hits the plan's limit, which resets 3 s ahead.
    agent = agent_file(
        tmp_path,
        "import json, os, sys, time\n"
        f"calls = {str(calls)!r}\n"
        "loop = os.environ['LOOPS_LOOP']\n"
        "n = len([f for f in os.listdir(calls) if f.startswith(loop + '-')])\n"
        "now = time.time()\n"
        # written whole, then renamed: the test reads these files while calls go on
        "tmp = os.path.join(calls, f'.{loop}-{n}')\n"
        "open(tmp, 'w').write(json.dumps(now))\n"
        "os.replace(tmp, os.path.join(calls, f'{loop}-{n}'))\n"
        "if loop == 'a' and n == 0:\n"
        "    print(f'Claude AI usage limit reached|{int(now) + 3}'); sys.exit(1)\n"
        "print('still working')\n",
    )
    a = make_loop(bus, tmp_path, agent, name="a")
    b = make_loop(bus, tmp_path, agent, name="b")
    assert a.service.worker.account == b.service.worker.account is not None
    loops_started.append(a.start())
    limited = a.wait_event("usage.limited")
    assert isinstance(limited, ev.UsageLimited)
    assert limited.account == a.service.worker.account and limited.runner == "command"
    assert not limited.estimated and limited.task_id == "hello"
    reset = limited.reset_at.timestamp()
    loops_started.append(b.start())  # inside the window
    waiting = b.wait_event("loop.heartbeat", status=ev.LoopStatus.WAITING)
    assert isinstance(waiting, ev.LoopHeartbeat) and waiting.waiting_until == limited.reset_at
    assert not waiting.agent_started_at  # no agent runs while waiting

    def started(loop: str) -> list[float]:
        return sorted(
            json.loads(p.read_text()) for p in calls.iterdir() if p.name.startswith(f"{loop}-")
        )

    wait_until(lambda: len(started("b")) >= 1 and len(started("a")) >= 2, timeout=20)
    assert started("b")[0] >= reset  # b made no call inside a's window
    assert started("a")[1] >= reset  # nor did a itself
    finished = a.events("iteration.finished")[0]
    assert isinstance(finished, ev.IterationFinished)
    assert finished.failure is ev.FailureKind.USAGE_LIMIT and not finished.counted
    assert finished.retry_at == limited.reset_at
    # One window, announced once, and said once by the loop that waited it out.
    assert len(a.events("usage.limited")) + len(b.events("usage.limited")) == 1
    at = limited.reset_at.astimezone().strftime("%H:%M")
    said = [r.getMessage() for r in caplog.records if "waiting for usage reset" in r.getMessage()]
    assert said == [f"waiting for usage reset at {at} (account shared with other loops)"]
    assert datetime.now(UTC) >= limited.reset_at


def test_the_monitor_kills_a_silent_agent_never_a_slow_one_that_shows_life(
    signed_buses: tuple[RedisBus, RedisBus], tmp_path: Path, loops_started: list[Loop]
) -> None:
    """The monitor (a policy with a 2 s silence limit) and three workers on one bus:
    an agent that prints progress and one that edits files run well past the limit
    and are left alone; a silent one is killed, and its retry has the monitor's hint."""
    from agents.monitor import Monitor
    from agents.policy import load_policy
    from agents.runner import run as run_agent
    from infra.store import Store

    bus, monitor_bus = signed_buses
    policy = tmp_path / "policy.yaml"
    policy.write_text("thresholds: {silent_agent_after_s: 2, stale_intervals: 50}\n")
    monitor = Monitor(Store(monitor_bus.client, monitor_bus.prefix, "monitor"), load_policy(policy))
    stop_monitor = threading.Event()
    thread = threading.Thread(
        target=lambda: run_agent(monitor, monitor_bus, stop_monitor, group="monitor", tick_s=0.2),
        daemon=True,
    )
    thread.start()
    go = tmp_path / "go"
    until_go = f"while not os.path.exists({str(go)!r}):\n"
    talker = agent_file(
        tmp_path,
        f"import os, time\n{until_go}    print('step', flush=True); time.sleep(0.3)\nprint('done')\n",
    )
    editor = agent_file(
        tmp_path,
        f"import os, time\n{until_go}"
        "    open('work.txt', 'w').write(str(time.time())); time.sleep(0.3)\nprint('done')\n",
    )
    silent = agent_file(
        tmp_path,
        "import os, sys, time\n"
        "if 'no sign of life' in open(os.environ['LOOPS_PROMPT_FILE']).read():\n"
        "    print('retried with the hint'); sys.exit(0)\n"
        "time.sleep(600)\n",
    )
    try:
        loops = {
            name: make_loop(bus, tmp_path, agent, name=name, heartbeat_s=0.5)
            for name, agent in (("talker", talker), ("editor", editor), ("silent", silent))
        }
        for lp in loops.values():
            loops_started.append(lp.start())
        aborted = loops["silent"].wait_event("iteration.finished", timeout=30)
        assert isinstance(aborted, ev.IterationFinished)
        assert (aborted.failure_detail or "").startswith("aborted by the monitor: ")
        retried = loops["silent"].wait_event("iteration.finished", 2, timeout=30)
        assert isinstance(retried, ev.IterationFinished) and retried.failure is None

        def long_running(lp: Loop) -> bool:
            return any(
                isinstance(b, ev.LoopHeartbeat)
                and b.agent_started_at is not None
                and (b.ts - b.agent_started_at).total_seconds() > 6  # 3 silence limits
                for b in lp.events("loop.heartbeat")
            )

        wait_until(lambda: all(long_running(loops[n]) for n in ("talker", "editor")), timeout=30)
        go.touch()
        for name in ("talker", "editor"):
            finished = loops[name].wait_event("iteration.finished", timeout=30)
            assert isinstance(finished, ev.IterationFinished) and finished.failure is None, name
        aborts = [e for _, e in bus.replay(types={"iteration.abort"})]
        assert [e.loop for e in aborts] == ["silent"]
    finally:
        stop_monitor.set()
        thread.join(timeout=10)


def test_an_abort_without_retry_leaves_the_task_to_the_monitor(
    bus: RedisBus, tmp_path: Path, loops_started: list[Loop]
) -> None:
    agent = agent_file(tmp_path, "import time; time.sleep(600)\n")
    lp = make_loop(bus, tmp_path, agent)
    loops_started.append(lp.start())
    beat = lp.wait_event("loop.heartbeat", agent_activity=ev.AgentSign.STARTED)
    assert isinstance(beat, ev.LoopHeartbeat)
    abort = ev.IterationAbort(
        source=MONITOR,
        loop=lp.name,
        task_id="hello",
        agent_started_at=beat.agent_started_at,
        reason="silent again",
        retry=False,
    )
    bus.publish(abort)
    lp.wait_event("command.acknowledged", command_id=abort.id)
    # Not run again on its own: the monitor's block_task comes next.
    bus.publish(
        ev.MonitorAction(
            source=MONITOR,
            loop=lp.name,
            task_id="hello",
            action=ev.MonitorActionKind.BLOCK_TASK,
            rule="silent_agent",
            reason="silent three times",
            incident_id="inc-2",
        )
    )
    blocked = lp.wait_event("task.blocked")
    assert "silent three times" in blocked.reason  # type: ignore[attr-defined]
    assert len(lp.events("iteration.started")) == 1


# ------------------------------------------------------------------ 6. conflicts

MERGE = ev.Source(role=ev.Role.MERGE, instance="test-merge")


def land_on_main(repo: Path, path: str, text: str, task: str) -> str:
    """What the merge queue does for another loop's task: a commit on main with its
    `Loops-Task:` trailer."""
    (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"merge {task}", "-m", f"Loops-Task: {task}\nLoops-Commit: x")
    return git(repo, "rev-parse", "HEAD")


def conflicted(lp: Loop, claim: ev.TaskClaimed, files: list[str]) -> None:
    lp.bus.publish(
        ev.MergeConflicted(
            source=MERGE,
            loop=lp.name,
            task_id=claim.task_id,
            commit=claim.commit,
            files=files,
            tries=1,
            reason="merge conflict",
        )
    )


def test_a_real_conflict_keeps_the_merge_and_the_agent_resolves_it(
    bus: RedisBus, tmp_path: Path, loops_started: list[Loop]
) -> None:
    script = tmp_path / "agent.yaml"
    script.write_text(
        yaml.safe_dump(
            {
                "tasks": {
                    "hello": [
                        {
                            "write": {"greet.txt": "hello from us\n"},
                            "reply": "<promise>done</promise>",
                        },
                        # Claims without touching the markers: not a claim.
                        {"reply": "<promise>done</promise>"},
                        {
                            "write": {"greet.txt": "hello from them\nhello from us\n"},
                            "reply": "<promise>resolved</promise>",
                        },
                    ]
                }
            }
        )
    )
    lp = make_loop(bus, tmp_path, f"script:{script}", files={"greet.txt": "hello\n"})
    repo = lp.service.worker.ws.repo
    loops_started.append(lp.start())
    first = lp.wait_event("task.claimed")
    assert isinstance(first, ev.TaskClaimed)
    main = land_on_main(repo, "greet.txt", "hello from them\n", "other/A-1")
    conflicted(lp, first, ["greet.txt"])
    left = lp.wait_event("iteration.finished", 2)
    assert isinstance(left, ev.IterationFinished)
    assert left.outcome is ev.IterationOutcome.CONTINUE  # markers left: no claim
    prompt = lp.transcript(2)
    assert "other/A-1 landed there first" in prompt and "greet.txt" in prompt
    assert "<<<<<<< " in git(repo, "show", f"{left.commit}:greet.txt")  # the merge was kept
    second = lp.wait_event("task.claimed", 2)
    assert isinstance(second, ev.TaskClaimed) and second.commit != first.commit
    assert "Conflict markers remain in greet.txt" in lp.transcript(3)
    assert git(repo, "show", f"{second.commit}:greet.txt") == "hello from them\nhello from us"
    assert git(repo, "merge-base", main, second.commit) == main  # main is merged in
    assert len(lp.events("iteration.started")) == 3
    assert not lp.events("escalation.raised")


def test_a_conflict_git_resolves_is_claimed_again_without_an_agent_call(
    bus: RedisBus, tmp_path: Path, loops_started: list[Loop]
) -> None:
    script = tmp_path / "agent.yaml"
    script.write_text(
        yaml.safe_dump(
            {
                "tasks": {
                    "hello": [{"write": {"a.txt": "ours\n"}, "reply": "<promise>done</promise>"}]
                }
            }
        )
    )
    lp = make_loop(bus, tmp_path, f"script:{script}", files={"a.txt": "a\n", "b.txt": "b\n"})
    repo = lp.service.worker.ws.repo
    loops_started.append(lp.start())
    first = lp.wait_event("task.claimed")
    assert isinstance(first, ev.TaskClaimed)
    main = land_on_main(repo, "b.txt", "theirs\n", "other/B-1")
    conflicted(lp, first, ["b.txt"])
    second = lp.wait_event("task.claimed", 2)
    assert isinstance(second, ev.TaskClaimed) and second.claim == "merged main after a conflict"
    assert git(repo, "merge-base", main, second.commit) == main
    assert git(repo, "show", f"{second.commit}:a.txt") == "ours"
    assert git(repo, "show", f"{second.commit}:b.txt") == "theirs"
    assert len(lp.events("iteration.started")) == 1  # no agent call


def test_the_anthropic_agents_answers_and_tool_calls_are_signs_of_life(
    tmp_path: Path, mock_anthropic: MockAnthropic
) -> None:
    mock_anthropic.script(
        [
            {"content": [{"type": "tool_use", "name": "run_shell", "input": {"command": "true"}}]},
            {"content": [{"type": "text", "text": "done"}]},
        ]
    )
    wt = tmp_path / "wt"
    wt.mkdir()
    signs: list[ev.AgentSign] = []
    client = anthropic.Anthropic(base_url=mock_anthropic.base_url, api_key="k", max_retries=0)
    try:
        result = AnthropicRunner(client=client).run(
            AgentRequest(
                prompt="p",
                worktree=wt,
                loop="l",
                task_id="T",
                iteration=1,
                timeout_s=30,
                on_activity=signs.append,
            )
        )
    finally:
        client.close()
    assert result.ok, result.failure_detail
    assert signs.count(ev.AgentSign.TOOL_CALL) == 1 and signs.count(ev.AgentSign.OUTPUT) == 2
