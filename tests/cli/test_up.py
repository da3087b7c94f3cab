"""`loops up` under the operator's hands: real subprocesses, a real repository in the
seed's layout, the embedded bus. Ctrl-C and kill -9 mid-iteration, then `loops up`
again: every task ends as it would have without the interruption (invariant 5)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from app import demo
from bus import BusSettings, RedisBus, connect
from events import Event
from infra.embedded import recorded_settings
from infra.git import git
from tests.conftest import require_real_redis, wait_until

LOOPS = str(Path(sys.executable).parent / "loops")
ADD_DONE = demo.OPS.replace('    raise NotImplementedError("add")', "    return a + b")


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "REDIS_URL"))}


def one_loop_project(root: Path, steps: list[dict[str, object]], tasks: int = 1) -> Path:
    """The demo project cut down to loop-1, whose agent follows `steps` for ADD-1 (and a
    quick second task ADD-2 first when `tasks` is 2)."""
    demo.create(root)
    git(root, "rm", "-rq", "loop-2-false-claim", "loop-3-stuck", "loop-4-question")
    state_path = root / "loop-1-clean" / "specs" / "test-state.json"
    state = json.loads(state_path.read_text())
    script: dict[str, object] = {"ADD-1": steps}
    if tasks == 2:
        first = dict(
            state["tests"][0],
            id="ADD-2",
            title="Add a changelog",
            acceptance_criteria=[
                {
                    "criterion": "changelog exists",
                    "check": {"type": "script", "run": "test -f CHANGELOG"},
                }
            ],
        )
        state["tests"].insert(0, first)
        script["ADD-2"] = [
            {"write": {"CHANGELOG": "add()\n"}, "reply": "<promise>ADD-2 done</promise>"}
        ]
    state_path.write_text(json.dumps(state, indent=2))
    (root / "loop-1-clean" / "agent.yaml").write_text(yaml.safe_dump({"tasks": script}))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one loop")
    return root


@contextlib.contextmanager
def project_bus(root: Path) -> Iterator[RedisBus]:
    url = wait_until(
        lambda: (
            (root / ".loops" / "redis.url").exists()
            and (root / ".loops" / "redis.url").read_text().strip()
        ),
        timeout=30,
    )
    settings = recorded_settings(root, prefix="loops")  # the password from .loops/ too
    assert settings is not None and settings.url == url
    client = connect(settings)
    try:
        yield RedisBus(client, settings=settings)
    finally:
        client.close()


def events(bus: RedisBus, etype: str) -> list[Event]:
    return [e for _, e in bus.replay(types={etype})]


def kill_embedded_server(root: Path) -> None:
    pid_file = root / ".loops" / "redis.pid"
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def hanging_step(marker: Path) -> list[dict[str, object]]:
    # Hangs until the test creates `marker`: the process the interruption must stop.
    return [
        {
            "write": {"calc/ops.py": ADD_DONE},
            "run": [f"test -f {marker} || sleep 300 # {marker}"],
            "reply": "<promise>ADD-1 done</promise>",
        }
    ]


def agent_processes(marker: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"sleep 300 # {marker}"], capture_output=True, text=True)
    return out.stdout.split()


def test_malformed_file_one_line_and_nothing_starts(tmp_path: Path) -> None:
    root = demo.create(tmp_path / "p")
    (root / "loop-2-false-claim" / "config.json").write_text('{"name": "x", ')
    proc = subprocess.run(
        [LOOPS, "up", str(root)], capture_output=True, text=True, timeout=60, env=env()
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "loop-2-false-claim/config.json" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (root / ".loops").exists()


def test_ctrl_c_stops_agents_cleanly_second_up_refuses_rerun_resumes(tmp_path: Path) -> None:
    # On the shared Redis (as with REDIS_URL in compose), under a prefix of its own, so
    # the stream can be read after each `loops up` has exited.
    prefix = f"test-up-{uuid.uuid4().hex[:8]}"
    shared = {**env(), "REDIS_URL": require_real_redis(), "LOOPS_PREFIX": prefix}
    marker = tmp_path / "go-ahead"
    root = one_loop_project(tmp_path / "p", hanging_step(marker))
    first = subprocess.Popen(
        [LOOPS, "up", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=shared,
    )
    bus = RedisBus.from_settings(BusSettings.from_env(shared))
    try:
        wait_until(lambda: agent_processes(marker), timeout=60)
        wait_until(lambda: events(bus, "iteration.started"), timeout=30)
        second = subprocess.run(
            [LOOPS, "up", str(root)], capture_output=True, text=True, timeout=60, env=shared
        )
        assert second.returncode == 1
        assert "already running" in second.stderr and "Traceback" not in second.stderr
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=60)
        assert first.returncode == 1, out
        assert "Summary:" in out and "Traceback" not in out
        assert not agent_processes(marker), "Ctrl-C left the agent running"
        interrupted = [e for e in events(bus, "iteration.finished") if not e.counted]  # type: ignore[attr-defined]
        assert interrupted and "interrupted" in (interrupted[-1].failure_detail or "")  # type: ignore[attr-defined]
        assert git(root, "ls-tree", "--name-only", "main", "calc/").split() == [
            "calc/__init__.py",
            "calc/ops.py",
        ]
        assert "return a + b" not in git(root, "show", "main:calc/ops.py")
        # Again: it resumes and finishes, and the interruption cost no attempt.
        marker.touch()
        again = subprocess.run(
            [LOOPS, "up", str(root)], capture_output=True, text=True, timeout=120, env=shared
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "return a + b" in git(root, "show", "main:calc/ops.py")
        state = json.loads((root / "loop-1-clean" / "specs" / "test-state.json").read_text())
        assert state["tests"][0]["status"] == "passed" and state["tests"][0]["attempts"] == 0
        assert len(events(bus, "merge.completed")) == 1
    finally:
        if first.poll() is None:
            first.kill()
        bus.delete_all()
        bus.close()


def test_kill_9_mid_iteration_resumes_without_rerunning_passed_tasks(tmp_path: Path) -> None:
    marker = tmp_path / "go-ahead"
    root = one_loop_project(tmp_path / "p", hanging_step(marker), tasks=2)
    first = subprocess.Popen(
        [LOOPS, "up", str(root), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(),
    )
    try:
        with project_bus(root) as bus:
            wait_until(lambda: events(bus, "task.passed") and agent_processes(marker), timeout=60)
            first.kill()
            first.wait(timeout=30)
            for pid in agent_processes(marker):  # an orphaned agent (unsandboxed runs)
                with contextlib.suppress(ProcessLookupError):  # sandboxed: it died with us
                    os.kill(int(pid), signal.SIGKILL)
        marker.touch()
        again = subprocess.run(
            [LOOPS, "up", str(root)], capture_output=True, text=True, timeout=120, env=env()
        )
        assert again.returncode == 0, again.stdout + again.stderr
        # ADD-2 passed before the crash: it did not run again (one transcript, one run).
        transcripts = root / "loop-1-clean" / "specs" / "logs" / "transcripts"
        assert len(list(transcripts.glob("*-ADD-2.log"))) == 1
        assert len(list(transcripts.glob("*-ADD-1.log"))) >= 1
        state = json.loads((root / "loop-1-clean" / "specs" / "test-state.json").read_text())
        assert [(t["id"], t["status"], t["attempts"]) for t in state["tests"]] == [
            ("ADD-2", "passed", 0),
            ("ADD-1", "passed", 0),
        ]
        assert "return a + b" in git(root, "show", "main:calc/ops.py")
    finally:
        if first.poll() is None:
            first.kill()
        kill_embedded_server(root)


@pytest.fixture(autouse=True)
def _no_stray_servers(tmp_path: Path) -> Iterator[None]:
    yield
    for pid_file in tmp_path.glob("*/.loops/redis.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def test_question_answered_from_another_terminal_reaches_the_loop(tmp_path: Path) -> None:
    """`loops up` returns when the loop waits on a person and lists the question; the
    person answers from another terminal; `loops up` again delivers the answer into
    the loop's next prompt and the task merges."""
    prefix = f"test-up-{uuid.uuid4().hex[:8]}"
    shared = {**env(), "REDIS_URL": require_real_redis(), "LOOPS_PREFIX": prefix}
    root = demo.create(tmp_path / "p")
    git(root, "rm", "-rq", "loop-1-clean", "loop-2-false-claim", "loop-3-stuck")
    state_path = root / "loop-4-question" / "specs" / "test-state.json"
    state = json.loads(state_path.read_text())
    state["tests"][0]["dependsOn"] = None  # its dependency's loop is gone
    state_path.write_text(json.dumps(state, indent=2))
    git(root, "commit", "-qam", "only the loop that asks")
    bus = RedisBus.from_settings(BusSettings.from_env(shared))
    try:
        first = subprocess.run(
            [LOOPS, "up", str(root), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            env=shared,
        )
        assert first.returncode == 1
        raised = events(bus, "escalation.raised")[0]
        eid = raised.escalation_id  # type: ignore[attr-defined]
        assert f"{eid} [medium] loop-4-question/DIV-1" in first.stdout
        listing = subprocess.run(
            [LOOPS, "escalations"], capture_output=True, text=True, timeout=60, env=shared
        )
        assert eid in listing.stdout and "ZeroDivisionError or return None" in listing.stdout
        answer = subprocess.run(
            [LOOPS, "answer", eid, "Raise", "ZeroDivisionError."],
            capture_output=True,
            text=True,
            timeout=60,
            env=shared,
        )
        assert answer.returncode == 0, answer.stderr
        again = subprocess.run(
            [LOOPS, "up", str(root), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            env=shared,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        delivered = events(bus, "escalation.delivered")
        assert [e.escalation_id for e in delivered] == [eid]  # type: ignore[attr-defined]
        transcripts = root / "loop-4-question" / "specs" / "logs" / "transcripts"
        last = sorted(transcripts.glob("*-iter*-DIV-1.log"))[-1].read_text()
        assert "A person answered your question" in last and "Raise ZeroDivisionError." in last
        assert "raise ZeroDivisionError" in git(root, "show", "main:calc/div.py")
    finally:
        bus.delete_all()
        bus.close()


def test_serve_keeps_running_after_the_work_and_sigterm_stops_it(tmp_path: Path) -> None:
    prefix = f"test-up-{uuid.uuid4().hex[:8]}"
    shared = {**env(), "REDIS_URL": require_real_redis(), "LOOPS_PREFIX": prefix}
    root = one_loop_project(
        tmp_path / "p",
        [
            {
                "write": {"calc/ops.py": ADD_DONE},
                "reply": "<promise>ADD-1 done</promise>",
                "cost_usd": 0.05,
            }
        ],
    )
    up = subprocess.Popen(
        [LOOPS, "up", str(root), "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=shared,
    )
    bus = RedisBus.from_settings(BusSettings.from_env(shared))
    try:
        wait_until(lambda: events(bus, "task.passed"), timeout=60)
        # Done, but serving: still heartbeating, still there.
        beats = len(events(bus, "loop.heartbeat"))
        wait_until(lambda: len(events(bus, "loop.heartbeat")) > beats + 1, timeout=30)
        assert up.poll() is None
        up.send_signal(signal.SIGTERM)  # as docker stop or systemd would
        out, _ = up.communicate(timeout=60)
        assert up.returncode == 0, out
        assert "All tasks verified and merged." in out and "Traceback" not in out
        # The summary's receipt and spend, from the merge's event.
        assert "loop-1-clean/ADD-1: $0.0500, 1 agent call(s) (0 failed, $0.0000)" in out, out
        assert "Spend: $0.0500 on 1 merged task(s) ($0.0500 per merged task)" in out
    finally:
        if up.poll() is None:
            up.kill()
        bus.delete_all()
        bus.close()


def test_a_forged_passed_in_the_state_file_is_no_success(tmp_path: Path) -> None:
    """Issue 9, row 4: "passed" written into the main checkout's test-state.json, with
    nothing merged, made `loops up` report success. It is set back, and exit is 1."""
    root = one_loop_project(tmp_path / "p", [{"reply": "BLOCKED: add ints or floats?"}])
    state_path = root / "loop-1-clean" / "specs" / "test-state.json"
    state = json.loads(state_path.read_text())
    state["tests"][0]["status"] = "passed"
    state_path.write_text(json.dumps(state, indent=2))
    proc = subprocess.run(
        [LOOPS, "up", str(root)], capture_output=True, text=True, timeout=120, env=env()
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "All tasks verified and merged" not in out and "Traceback" not in out
    assert "loop-1-clean: 0/1 tasks verified and merged" in out
    assert "without a merged commit on main" in out  # the state.rejected, logged
    assert json.loads(state_path.read_text())["tests"][0]["status"] != "passed"
    assert "return a + b" not in git(root, "show", "main:calc/ops.py")


def test_an_agent_that_cannot_start_is_one_line_and_the_summary_lists_it(tmp_path: Path) -> None:
    root = one_loop_project(tmp_path / "p", [{"reply": "unused"}])
    proc = subprocess.run(
        [LOOPS, "up", str(root), "--agent", "command:no-such-agent-xyz"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    said = [ln for ln in out.splitlines() if "The agent cannot run:" in ln]
    assert len(said) == 1 and "'no-such-agent-xyz' cannot start: not found" in said[0], out
    assert "fix the command" in said[0]
    assert "ADD-1" in out and "the agent cannot start" in out  # the summary lists the task
    assert "Traceback" not in out
    state = json.loads((root / "loop-1-clean" / "specs" / "test-state.json").read_text())
    assert state["tests"][0]["status"] == "blocked"


def test_two_loops_editing_the_same_lines_merge_without_a_person(tmp_path: Path) -> None:
    """Both loops rewrite the first line of one file. The second to land conflicts;
    its loop merges main, keeps the merge with its markers, the agent (told which task
    landed first) resolves it, and both tasks merge: no person, no repeated claim."""
    root = tmp_path / "p"
    root.mkdir()
    (root / "shared.txt").write_text("nobody\n")
    for side in ("a", "b"):
        loop = root / f"loop-{side}"
        (loop / "specs").mkdir(parents=True)
        config = {
            "name": f"Loop {side}",
            "specs_dir": f"loop-{side}/specs",
            "auto_continue_delay": 0,
            "health_check": {"interval_seconds": 1},
            "agent": "script:agent.yaml",
        }
        (loop / "config.json").write_text(json.dumps(config))
        task = f"{side.upper()}-1"
        state = {
            "tests": [
                {
                    "id": task,
                    "title": f"Say {side}",
                    "acceptance_criteria": [
                        {
                            "criterion": f"shared.txt says from {side}",
                            "check": {
                                "type": "script",
                                # Naming the file would make it a protected check input.
                                "run": f"grep -rqx --exclude-dir=.git 'from {side}' .",
                            },
                        }
                    ],
                }
            ]
        }
        (loop / "specs" / "test-state.json").write_text(json.dumps(state))
        steps = [
            {"write": {"shared.txt": f"from {side}\n"}, "reply": "<promise>done</promise>"},
            {
                "when_prompt": "landed there first",
                "write": {"shared.txt": "from a\nfrom b\n"},
                "reply": "<promise>merged both</promise>",
            },
        ]
        (loop / "agent.yaml").write_text(yaml.safe_dump({"tasks": {task: steps}}))
    (root / ".gitignore").write_text("health.json\nlogs/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "two loops, one line")
    proc = subprocess.run(
        [LOOPS, "up", str(root)], capture_output=True, text=True, timeout=240, env=env()
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert git(root, "show", "main:shared.txt") == "from a\nfrom b"
    conflicts = [
        ln for ln in out.splitlines() if "WARNING loops.worker: [loop-" in ln and "] merge of" in ln
    ]
    assert len(conflicts) == 1 and "(try 1)" in conflicts[0], out  # one conflict, no repeat
    assert "Open escalations" not in out and "escalation" not in out.lower(), out
    loser = "loop-a" if "merge of A-1" in conflicts[0] else "loop-b"
    logs = sorted((root / loser / "specs" / "logs" / "transcripts").glob("*-iter*.log"))
    assert len(logs) == 2, logs  # the claim, and the one call that resolved the conflict
    winner = "B-1" if loser == "loop-a" else "A-1"
    assert f"/{winner} landed there first" in logs[1].read_text()
