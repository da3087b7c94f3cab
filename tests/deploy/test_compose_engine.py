"""The real `docker compose up`, on a real engine (`scripts/docker-engine.sh`: a private
dockerd with stand-ins for the base images): the project image is built from the
Dockerfile, and docker-compose.yml brings the whole stack up on a seed-layout project
with three loops and scripted agents (no API key). Every task is verified (one only
after a false claim was caught) and merged into main; the dashboard's page, view and
metrics answer on the published port; `docker compose stop` ends every container with
exit 0; `down` and the engine's stop leave nothing running.

Skips with the reason where dockerd cannot start (not root, no overlayfs, ...); under
CI=true that is a failure. The first run on a machine builds the stand-ins (a few
minutes, cached in /var/cache/coding-loops-docker); later runs reuse them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app import demo
from infra.git import git
from tests.conftest import IN_CI, wait_until
from tests.deploy.engine import ROOT, Engine

pytestmark = pytest.mark.timeout(1800)

IMAGE = "coding-loops:latest"  # what docker-compose.yml names; built here, never pulled
TASKS = {"loop-1-clean": "ADD-1", "loop-2-false-claim": "SUB-1", "loop-3-stuck": "MUL-1"}
UID = 1000  # compose's default LOOPS_UID: the repository belongs to the containers' user
HANG_MARK = "/repo/.e2e/hung"


def _unavailable(reason: str) -> None:
    message = f"no Docker engine for the compose end-to-end test: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true requires it)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    if shutil.which("docker-compose") is None and not IN_CI:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    eng = Engine()
    problem = eng.start()
    if problem:
        _unavailable(problem)
    started_here = eng.started_here
    try:
        yield eng
    finally:
        eng.stop()
        if started_here:  # an engine someone else started is theirs to stop
            left = eng.leftovers()
            assert not left, f"the engine left processes running: {left}"


def three_loops(root: Path) -> Path:
    """The demo project cut to three loops that all finish by themselves: loop-1 adds,
    loop-2 makes a false claim first (the gate must catch it), loop-3 writes mul() at
    once. Checks run with the container's `python3`."""
    demo.create(root)
    git(root, "rm", "-rq", "loop-4-question")
    # loop-3's first run hangs (until the test kills the container running it); the
    # marker in /repo/.e2e, which every agents container sees, lets the re-run go on.
    hang = f"mkdir {HANG_MARK} 2>/dev/null && sleep 600 || true"
    script = {
        "tasks": {
            "MUL-1": [
                {
                    "run": [hang],
                    "write": {"calc/mul.py": "def mul(a, b):\n    return a * b\n"},
                    "reply": "Wrote calc/mul.py. <promise>MUL-1 done</promise>",
                }
            ]
        }
    }
    (root / "loop-3-stuck" / "agent.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    for state_path in root.glob("loop-*/specs/test-state.json"):
        state = json.loads(state_path.read_text())
        for test in state["tests"]:
            for criterion in test["acceptance_criteria"]:
                run = criterion["check"]["run"]
                criterion["check"]["run"] = "python3 " + run.split(" ", 1)[1]
        state_path.write_text(json.dumps(state, indent=2) + "\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "three loops, checks on the container's python3")
    (root / ".e2e").mkdir()  # the agents' shared scratch (LOOPS_SANDBOX_WRITABLE)
    with open(root / ".git" / "info" / "exclude", "a") as exclude:
        exclude.write(".e2e/\n")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, UID, UID)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """`docker-compose -p NAME` on the engine, with the operator's settings."""

    def __init__(self, engine: Engine, repo: Path) -> None:
        self.engine = engine
        self.repo = repo
        self.name = f"loopse2e{uuid.uuid4().hex[:8]}"
        self.dashboard_port = free_port()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LOOPS_", "ANTHROPIC_", "GIT_")) and k != "REDIS_URL"
        }
        self.env = engine.env(base)
        self.env.update(
            LOOPS_REPO=str(repo),
            LOOPS_REDIS_PORT=str(free_port()),  # this machine's own Redis has 6379
            LOOPS_DASHBOARD_PORT=str(self.dashboard_port),
            LOOPS_DASHBOARD_TOKEN=f"e2e-{uuid.uuid4().hex}",
            LOOPS_REDIS_PASSWORD=uuid.uuid4().hex,  # for a compose file whose Redis needs one
            LOOPS_SANDBOX_WRITABLE="/repo/.e2e",  # the hanging agent's marker
            COMPOSE_HTTP_TIMEOUT="300",
        )

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "-p", self.name, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, f"docker-compose {' '.join(args)}:\n{proc.stderr}"
        return proc

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail=60", check=False).stdout

    def containers(self) -> list[dict[str, Any]]:
        ids = self.engine.docker(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}"
        ).stdout.split()
        if not ids:
            return []
        data: list[dict[str, Any]] = json.loads(self.engine.docker("inspect", *ids).stdout)
        return data

    def name_of(self, container: str) -> str:
        return next(c["Name"] for c in self.containers() if c["Id"] == container)

    def view(self) -> dict[str, Any] | None:
        try:
            reply = httpx.get(f"http://127.0.0.1:{self.dashboard_port}/api/view", timeout=10)
        except httpx.TransportError:
            return None
        return reply.json() if reply.status_code == 200 else None


@pytest.fixture
def stack(engine: Engine, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(engine, three_loops(tmp_path / "repo"))
    try:
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
        assert not stack.containers(), "containers left after docker compose down"
        # The image this run replaced: keep the cache directory from growing per run.
        engine.docker("image", "prune", "-f", check=False)


def _statuses(view: dict[str, Any]) -> dict[str, str]:
    return {
        name: loop["tasks"].get(task, {}).get("status", "-")
        for name, task in TASKS.items()
        if (loop := view["loops"].get(name)) is not None
    }


def test_docker_compose_up_verifies_and_merges_every_loop_then_stops_with_exit_0(
    engine: Engine, stack: Stack
) -> None:
    engine.docker("build", "-q", "--network", "host", "-t", IMAGE, str(ROOT), timeout=1200)
    stack.compose("up", "-d", "--no-build", "--scale", "agents=2", timeout=600)

    # loop-3's first iteration hangs in one of the two agents containers: kill -9 that
    # container (its init, from the host, as a crash would; the engine restarts it).
    def hanging() -> str | None:
        for c in stack.containers():
            if "agents" in c["Name"] and c["State"]["Running"]:
                top = engine.docker("top", c["Id"], check=False).stdout
                if "sleep 600" in top:
                    return str(c["Id"])
        return None

    victim = wait_until(hanging, timeout=420, interval=2.0)
    pid = int(engine.docker("inspect", "-f", "{{.State.Pid}}", victim).stdout.strip())
    os.kill(pid, signal.SIGKILL)

    def merged() -> bool:
        down = [
            c["Name"]
            for c in stack.containers()
            if not c["State"]["Running"] and not (c["Id"] == victim and c["State"]["Restarting"])
        ]
        assert not down or down == [stack.name_of(victim)], f"stopped: {down}\n{stack.logs()}"
        view = stack.view()
        return (
            view is not None
            and set(_statuses(view).values()) == {"merged"}
            and (len(_statuses(view)) == len(TASKS))
        )

    try:
        wait_until(merged, timeout=420, interval=2.0)
    except AssertionError as exc:
        view = stack.view()
        raise AssertionError(f"{exc}\ntasks: {view and _statuses(view)}\n{stack.logs()}") from None

    # Main holds every task's work, each verified by the gate (loop-2's false claim was
    # caught first); verification ran as rq jobs on the rq service.
    safe = ["-c", "safe.directory=*"]
    ops = git(stack.repo, *safe, "show", "main:calc/ops.py")
    assert "return a + b" in ops and "return a - b" in ops
    assert "return a * b" in git(stack.repo, *safe, "show", "main:calc/mul.py")
    view = stack.view()
    assert view is not None
    sub = view["loops"]["loop-2-false-claim"]["tasks"]["SUB-1"]
    assert sub["verification"]["passed"] is True and sub["merged_commit"]
    assert "gates.jobs.verify_claim" in stack.compose("logs", "--no-color", "rq").stdout
    # Agent iterations ran as rq jobs on the agents service; the killed one ran again.
    assert "loops.jobs.run_iteration" in stack.compose("logs", "--no-color", "agents").stdout
    coordinators = stack.compose("logs", "--no-color", "loops").stdout
    assert "its agent worker is gone; running it again" in coordinators
    wait_until(lambda: all(c["State"]["Running"] for c in stack.containers()), timeout=120)
    # The operator's pages on the published port: the dashboard, and its metrics.
    page = httpx.get(f"http://127.0.0.1:{stack.dashboard_port}/", timeout=10)
    assert page.status_code == 200 and "coding-loops" in page.text
    metrics = httpx.get(f"http://127.0.0.1:{stack.dashboard_port}/metrics", timeout=10).text
    assert (
        'loops_verifications_failed_total{loop="loop-2-false-claim",verdict="checks_failed"} 1.0'
        in metrics
    )
    assert 'loops_merges_total{loop="loop-3-stuck",result="merged"} 1.0' in metrics

    # `docker compose stop`: every container ends by itself, with exit 0.
    stack.compose("stop", timeout=300)
    ended = {c["Name"].lstrip("/"): c["State"] for c in stack.containers()}
    assert ended, "no containers"
    bad = {
        name: (state["Status"], state["ExitCode"], state.get("OOMKilled"))
        for name, state in ended.items()
        if state["Running"] or state["ExitCode"] != 0
    }
    assert not bad, f"containers that did not stop with exit 0: {bad}\n{stack.logs()}"
    services = {name.split("_")[1] for name in ended}
    assert {
        "redis",
        "loops",
        "gate",
        "merge",
        "monitor",
        "pm",
        "human",
        "dashboard",
        "rq",
        "agents",
    } <= services
