"""`docker compose up` without an engine: every service of docker-compose.yml as a local
process on one Redis, on the demo project. A task goes the whole distributed way:
worker claim -> gate -> verification as an rq job on the `rq` service -> merge queue ->
main. `docker compose down` is SIGTERM to each: every process exits 0. And what
`restart: unless-stopped` does after a kill -9 (a new process of the same service)
still takes the task to main.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app import demo
from bus import BusSettings, RedisBus
from bus.settings import derive_signing_key
from infra.git import git
from tests.bus.protected import protected_redis_server
from tests.conftest import wait_until
from tests.deploy import compose

# The demo loop kept: loop-1-clean implements add() and finishes cleanly.
OTHER_LOOPS = ("loop-2-false-claim", "loop-3-stuck", "loop-4-question")


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    health: list[str]
    env: dict[str, str]
    grace_s: float

    def output(self) -> str:
        return self.log.read_text()[-3000:]

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.output()}")
        result = subprocess.run(self.health, env=self.env, capture_output=True, timeout=30)
        return result.returncode == 0


@dataclass
class Stack:
    """The compose services as local processes; `start` is what the engine does on
    `up` and on a restart."""

    local: compose.Local
    logs: Path
    services: dict[str, compose.Service]
    running: dict[str, Running] = field(default_factory=dict)
    starts: int = 0

    def start(self, name: str) -> Running:
        service = self.services[name]
        env = self.local.env(service, os.environ)
        self.starts += 1
        log = self.logs / f"{name}.{self.starts}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                self.local.argv([*service.entrypoint, *service.command]),
                env=env,
                cwd=self.local.cwd(service),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        health = self.local.argv(service.healthcheck)
        self.running[name] = Running(name, proc, log, health, env, service.stop_grace_s())
        return self.running[name]

    def up(self, *names: str) -> None:
        """Start `names` (default: every service) and wait until each is healthy."""
        started = [self.start(name) for name in names or self.services]
        for r in started:
            wait_until(r.healthy, timeout=60, interval=1.0)

    def kill_9(self, *names: str) -> None:
        for name in names:
            self.running[name].proc.kill()
        for name in names:
            assert self.running[name].proc.wait(timeout=10) == -signal.SIGKILL

    def logs_text(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.output()}" for r in self.running.values())

    def kill_all(self) -> None:
        for r in self.running.values():
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait(timeout=10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The services on a Redis of their own that needs the password (as compose's
    does): every role logs in with it and signs with the key derived from it."""
    repo = demo.create(tmp_path / "demo")
    # The `loops` service runs every loop of the project: keep only the clean one.
    git(repo, "rm", "-rq", *OTHER_LOOPS)
    git(repo, "commit", "-qm", "one loop")
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    tree = compose.load(compose.HOST_ENV)
    ours = {s.name: s for s in compose.services(tree) if s.is_ours}  # Redis: the local one
    logs = tmp_path / "logs"
    logs.mkdir()
    with protected_redis_server(tmp_path) as (url, password):
        local = compose.Local(repo=repo, redis_url=url, prefix=prefix, port=port, password=password)
        stack = Stack(local, logs, ours)
        try:
            yield stack
        finally:
            stack.kill_all()


def _main_has_add(repo: Path) -> bool:
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", "main:calc/ops.py"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "return a + b" in shown.stdout


def _wait_for_main(stack: Stack, timeout: float) -> None:
    try:
        wait_until(lambda: _main_has_add(stack.local.repo), timeout=timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(
            f"ADD-1 never reached main; the services said:\n{stack.logs_text()}"
        ) from None


def test_compose_up_verifies_on_rq_and_merges_into_main(stack: Stack) -> None:
    stack.up()
    _wait_for_main(stack, timeout=90)
    rq_log = stack.running["rq"].log.read_text()
    assert "gates.jobs.verify_claim" in rq_log, "the rq service ran no verification"

    for r in stack.running.values():
        r.proc.send_signal(signal.SIGTERM)
    for r in stack.running.values():
        code = r.proc.wait(timeout=r.grace_s)
        assert code == 0, f"{r.name} exited {code} on SIGTERM:\n{r.output()}"


def test_kill_9_and_restart_at_each_stage_still_merges_the_task(stack: Stack) -> None:
    """Each stage is held by a service that is down, so every kill lands where it is
    meant to: the claim waiting for a gate, the verdict waiting for the merge queue.
    The `loops` service only coordinates: the iteration is an rq job that the `agents`
    service runs (a kill of that one mid-iteration: tests/deploy/test_agent_jobs.py)."""
    # With the key every role derives from the password: the decisions seen here are
    # the signed ones (an unsigned one would be skipped, and the test would hang).
    password = stack.local.password
    assert password is not None
    bus = RedisBus.from_settings(
        BusSettings(
            url=stack.local.redis_url,
            prefix=stack.local.prefix,
            password=password,
            signing_key=derive_signing_key(password),
        )
    )

    def seen(event_type: str) -> bool:
        return bool(list(bus.replay(types=[event_type])))

    try:
        stack.up("loops", "agents", "rq", "monitor", "pm", "human", "dashboard")
        wait_until(lambda: seen("task.claimed"), timeout=60)
        stack.kill_9("loops", "rq")
        stack.up("loops", "rq", "gate")  # restarted, and the gate comes up late

        wait_until(lambda: seen("verification.passed"), timeout=90)
        assert not _main_has_add(stack.local.repo)  # no merge queue yet
        stack.kill_9("loops", "gate", "rq")
        stack.up("loops", "gate", "rq", "merge")

        _wait_for_main(stack, timeout=90)
        assert not seen("verification.failed")
    finally:
        bus.close()
