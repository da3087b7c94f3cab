"""Agent iterations as rq jobs, end to end: `loops worker --all` coordinates one loop
whose iterations run on two real `rq worker` processes (the compose `agents` service),
each in its own clone of a bare-repo remote. The first run of the agent hangs; the rq
worker running it is killed with SIGKILL; the iteration runs again on the other worker,
and the task is verified and merged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from app import demo
from bus import BusSettings, RedisBus
from loops.workspace import git
from tests.conftest import require_real_redis, wait_until

BIN = Path(sys.executable).parent
LOOPS = str(BIN / "loops")
RQ = str(BIN / "rq")


def one_loop(root: Path, marks: Path, *, hang_first: bool = True) -> str:
    """The demo's loop-1 alone, with an agent that marks each run with its work tree
    and (`hang_first`) hangs on its first run, doing the work on the next; returns the
    agent spec."""
    demo.create(root)
    git(root, "rm", "-rq", "loop-2-false-claim", "loop-3-stuck", "loop-4-question")
    git(root, "commit", "-qm", "one loop")
    agent = root.parent / "agent.py"
    agent.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import os, pathlib, time
        marks = pathlib.Path({str(marks)!r})
        runs = len(list(marks.glob("run-*")))
        (marks / f"run-{{runs + 1}}").write_text(os.environ["LOOPS_WORKTREE"])
        if runs == 0 and {hang_first!r}:
            time.sleep(600)  # the first run hangs until its rq worker is killed
        ops = pathlib.Path(os.environ["LOOPS_WORKTREE"]) / "calc" / "ops.py"
        text = ops.read_text().replace('    raise NotImplementedError("add")', "    return a + b")
        ops.write_text(text)
        print("Implemented add(). <promise>ADD-1 done</promise>")
        """)
    )
    agent.chmod(0o755)
    origin = root.parent / "origin.git"
    git(root.parent, "init", "-q", "--bare", str(origin))
    git(root, "remote", "add", "origin", str(origin))
    git(root, "push", "-q", "origin", "main")
    return f"command:{agent}"


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    url = require_real_redis()
    prefix = f"test-agents-{uuid.uuid4().hex[:8]}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "ANTHROPIC_"))}
    base.pop("REDIS_URL", None)
    yield {**base, "LOOPS_PREFIX": prefix, "TEST_REDIS_URL": url, "TEST_QUEUE": prefix}
    bus = RedisBus.from_settings(BusSettings.from_dsn(url, prefix=prefix))
    try:
        bus.delete_all()
    finally:
        bus.close()


@pytest.mark.timeout(300)
def test_a_killed_agent_worker_s_iteration_runs_again_elsewhere_and_merges(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from rq import Queue, Worker

    marks = tmp_path / "marks"
    marks.mkdir()
    root = tmp_path / "p"
    agent = one_loop(root, marks)
    url, queue = env["TEST_REDIS_URL"], env["TEST_QUEUE"]
    # The runbook's commands ("Scale out"), with this test's own queue name.
    coordinator_env = {
        **env,
        "REDIS_URL": url,
        "LOOPS_AGENT_QUEUE": queue,
        "LOOPS_REMOTE": "origin",
    }
    agents_env = {
        **env,
        "LOOPS_AGENT_HOME": str(tmp_path / "agent-host"),
        "LOOPS_SANDBOX_WRITABLE": str(marks),
    }
    roles = {
        "loops": (["worker", "--all", "--agent", agent], coordinator_env),
        "gate": (["gate", "--redis", url], env),  # verification in-process: no rq here
        "merge": (["merge", "--redis", url], env),
    }
    commands = {
        role: ([LOOPS, *args, "--dir", str(root)], role_env)
        for role, (args, role_env) in roles.items()
    }
    for n in (1, 2):
        rq = [RQ, "worker", "-u", url, "-w", "cli.rqworker.SimpleWorker", queue]
        commands[f"rq-{n}"] = (rq, agents_env)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {}
    for role, (argv, role_env) in commands.items():
        with open(logs / role, "w") as out:
            procs[role] = subprocess.Popen(argv, env=role_env, stdout=out, stderr=out)

    def output(role: str) -> str:
        return (logs / role).read_text()

    redis = Redis.from_url(url)
    try:
        wait_until(lambda: (marks / "run-1").exists(), timeout=60, interval=0.2)
        busy = [
            w
            for w in Worker.all(connection=redis, queue=Queue(queue, connection=redis))
            if w.get_current_job_id()
        ]
        assert len(busy) == 1, busy
        killed = next(n for n, p in procs.items() if n.startswith("rq-") and p.pid == busy[0].pid)
        procs[killed].send_signal(signal.SIGKILL)
        procs[killed].wait(timeout=10)

        def merged() -> bool:
            for role, proc in procs.items():
                assert role == killed or proc.poll() is None, f"{role} exited: {output(role)}"
            return "return a + b" in git(root, "show", "main:calc/ops.py")

        wait_until(merged, timeout=90, interval=0.5)
        # Run again on the other worker, from the same base: the hung run left nothing.
        assert sorted(p.name for p in marks.iterdir()) == ["run-1", "run-2"]
        # The loop's branch went through the remote: the agent host pushed it.
        assert git(root.parent / "origin.git", "rev-parse", "--verify", "-q", "loop/loop-1-clean")
        for role, proc in procs.items():
            if role != killed:
                proc.send_signal(signal.SIGTERM)
        for role, proc in procs.items():
            proc.wait(timeout=60)
            if role != killed:
                assert proc.returncode == 0, f"{role} exited {proc.returncode}:\n{output(role)}"
        assert "its agent worker is gone; running it again" in output("loops")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        Queue(queue, connection=redis).empty()
        redis.close()


@pytest.mark.timeout(240)
def test_loops_up_hands_its_loops_iterations_to_rq_workers(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """`loops up` builds its loops' runners where `loops worker` does (`app.fleet`):
    with `LOOPS_AGENT_QUEUE` set, the agent runs on an rq worker, in that worker's own
    clone of the project, and the task still goes to main."""
    marks = tmp_path / "marks"
    marks.mkdir()
    root = tmp_path / "p"
    agent = one_loop(root, marks, hang_first=False)
    url, queue = env["TEST_REDIS_URL"], env["TEST_QUEUE"]
    home = tmp_path / "agent-host"
    agents_env = {**env, "LOOPS_AGENT_HOME": str(home), "LOOPS_SANDBOX_WRITABLE": str(marks)}
    log = tmp_path / "rq.log"
    with open(log, "w") as out:
        rq = subprocess.Popen(
            [RQ, "worker", "-u", url, "-w", "cli.rqworker.SimpleWorker", queue],
            env=agents_env,
            stdout=out,
            stderr=out,
        )
    redis = Redis.from_url(url)
    try:
        up = subprocess.run(
            [LOOPS, "up", "--redis", url, "--agent", agent, "--port", "0", str(root)],
            env={**env, "LOOPS_AGENT_QUEUE": queue},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "return a + b" in git(root, "show", "main:calc/ops.py")
        (run,) = marks.iterdir()
        assert Path(run.read_text()).is_relative_to(home), run.read_text()  # the rq worker's
        rq.send_signal(signal.SIGTERM)
        assert rq.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if rq.poll() is None:
            rq.kill()
            rq.wait()
        from rq import Queue

        Queue(queue, connection=redis).empty()
        redis.close()
