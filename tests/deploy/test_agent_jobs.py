"""Agent iterations as rq jobs, end to end.

The runbook's "More loops on more machines" (docs/OPERATOR-RUNBOOK.md, section 6), tried
as written: its fenced `bash` blocks are read from the runbook and each command line is
run as its own process, by bash, after the block's `export` lines (`exec`: the process
is the command). The coordinator's block runs once and the agent machine's twice (two
machines), on a private password-protected `redis-server`. Only the placeholders are
filled in: `PASSWORD` and `redis-host:6379` (that server), `KEY` (a signing key) and
`/path/to/project` (the demo's loop-1 alone, its agent named in its config.json); the
test's own environment adds the venv to PATH and, for each agent machine, its
`LOOPS_AGENT_HOME` and the test agent's mark directory (`LOOPS_SANDBOX_WRITABLE`). The
first run of the agent hangs; the agent machine running it is killed with SIGKILL;
the iteration runs again on the other, and the task is verified and merged.

And `loops up` hands its loops' iterations to rq workers as `loops worker` does."""

from __future__ import annotations

import os
import re
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
from tests.bus.protected import protected_redis_server
from tests.conftest import require_real_redis, wait_until
from tests.deploy.compose import ROOT

BIN = Path(sys.executable).parent
LOOPS = str(BIN / "loops")
RQ = str(BIN / "rq")
RUNBOOK = ROOT / "docs" / "OPERATOR-RUNBOOK.md"


def one_loop(root: Path, marks: Path, *, hang_first: bool = True) -> None:
    """The demo's loop-1 alone, its agent (in its config.json) one that marks each run
    with its work tree and (`hang_first`) hangs on its first run, doing the work on the
    next; `origin` a bare repository with main."""
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
    demo.create(root, agent=f"command:{agent}")
    git(root, "rm", "-rq", "loop-2-false-claim", "loop-3-stuck", "loop-4-question")
    git(root, "commit", "-qm", "one loop")
    origin = root.parent / "origin.git"
    git(root.parent, "init", "-q", "--bare", str(origin))
    git(root, "remote", "add", "origin", str(origin))
    git(root, "push", "-q", "origin", "main")


def runbook_blocks() -> tuple[str, str]:
    """The runbook's two blocks of "More loops on more machines": the coordinator's,
    an agent machine's."""
    section = RUNBOOK.read_text().split("\n## 6.", 1)[1].split("\n## 7.", 1)[0]
    bullet = section.split("**More loops on more machines:**", 1)[1].split("\n- ", 1)[0]
    blocks = [
        textwrap.dedent(b) for b in re.findall(r"^ *```bash\n(.*?)^ *```", bullet, re.M | re.S)
    ]
    assert len(blocks) == 2, f"{RUNBOOK}: expected the coordinator's and an agent machine's block"
    return blocks[0], blocks[1]


def scripts(block: str, fill: dict[str, str]) -> list[str]:
    """Each command line of `block`, with the placeholders of `fill` filled in, as a
    bash script of its own: the block's `export` lines, then the line with `exec`
    after its own `NAME=value` prefix (the pid is the command's; so are its signals
    and its exit status)."""
    for placeholder, value in fill.items():
        block = block.replace(placeholder, value)
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    exports = [ln for ln in lines if ln.startswith("export ")]
    out = []
    for line in lines:
        if not line.startswith("export "):
            prefix, command = re.fullmatch(r"((?:\w+=\S*\s+)*)(.*)", line).groups()  # type: ignore[union-attr]
            out.append("\n".join([*exports, f"{prefix}exec {command}"]))
    return out


def clean_env() -> dict[str, str]:
    """This environment without the system's settings, with this venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOOPS_", "ANTHROPIC_", "RQ_")) and k != "REDIS_URL"
    }
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', os.defpath)}"}


@pytest.mark.timeout(150)
def test_the_runbooks_commands_scale_out_and_survive_a_killed_agent_machine(
    tmp_path: Path,
) -> None:
    from rq import Queue, Worker

    marks = tmp_path / "marks"
    marks.mkdir()
    root = tmp_path / "p"
    one_loop(root, marks)
    coordinator, agent_machine = runbook_blocks()
    with protected_redis_server(tmp_path) as (url, password):
        host = url.removeprefix("redis://").split("/")[0]
        fill = {
            "PASSWORD": password,
            "redis-host:6379": host,
            "LOOPS_SIGNING_KEY=KEY": f"LOOPS_SIGNING_KEY={os.urandom(32).hex()}",
            "/path/to/project": str(root),
        }
        for placeholder in fill:  # a placeholder renamed in the runbook: fill this in too
            assert placeholder in coordinator + agent_machine, placeholder
        base = clean_env()
        commands = [(script, base) for script in scripts(coordinator, fill)]
        for n in (1, 2):
            machine = {
                **base,
                "LOOPS_AGENT_HOME": str(tmp_path / f"agent-host-{n}"),
                "LOOPS_SANDBOX_WRITABLE": str(marks),
            }
            commands += [(script, machine) for script in scripts(agent_machine, fill)]
        logs = tmp_path / "logs"
        logs.mkdir()
        procs: list[subprocess.Popen[bytes]] = []
        for n, (script, env) in enumerate(commands):
            with open(logs / str(n), "w") as out:
                procs.append(
                    subprocess.Popen(["bash", "-c", script], env=env, stdout=out, stderr=out)
                )

        def output(n: int) -> str:
            return f"{commands[n][0].splitlines()[-1]}:\n{(logs / str(n)).read_text()[-3000:]}"

        redis = Redis.from_url(url, password=password)
        killed = -1
        try:
            wait_until(lambda: (marks / "run-1").exists(), timeout=60, interval=0.2)
            agents = Queue("loops-agents", connection=redis)
            busy = [w for w in Worker.all(connection=redis, queue=agents) if w.get_current_job_id()]
            assert len(busy) == 1, busy
            killed = next(n for n, p in enumerate(procs) if p.pid == busy[0].pid)
            procs[killed].send_signal(signal.SIGKILL)
            procs[killed].wait(timeout=10)

            def merged() -> bool:
                for n, proc in enumerate(procs):
                    assert n == killed or proc.poll() is None, f"exited: {output(n)}"
                return "return a + b" in git(root, "show", "main:calc/ops.py")

            wait_until(merged, timeout=90, interval=0.5)
            # Run again on the other machine, from the same base: the hung run left nothing.
            assert sorted(p.name for p in marks.iterdir()) == ["run-1", "run-2"]
            other = next(
                env["LOOPS_AGENT_HOME"]
                for n, (_, env) in enumerate(commands)
                if n != killed and "LOOPS_AGENT_HOME" in env
            )
            assert Path((marks / "run-2").read_text()).is_relative_to(other)
            # The loop's branch went through the remote: the agent machine pushed it.
            assert git(tmp_path / "origin.git", "rev-parse", "--verify", "-q", "loop/loop-1-clean")
            for n, proc in enumerate(procs):
                if n != killed:
                    proc.send_signal(signal.SIGTERM)
            for n, proc in enumerate(procs):
                proc.wait(timeout=60)
                assert n == killed or proc.returncode == 0, f"exited {proc.returncode}: {output(n)}"
            loops = next(n for n, (script, _) in enumerate(commands) if "loops worker" in script)
            assert "its agent worker is gone; running it again" in output(loops)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            redis.close()


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
    one_loop(root, marks, hang_first=False)
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
            [LOOPS, "up", "--redis", url, "--port", "0", str(root)],
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
