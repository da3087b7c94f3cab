"""`docker compose up` without an engine: every service of docker-compose.yml as a local
process on one Redis, on the demo project. A task goes the whole distributed way:
worker claim -> gate -> verification as an rq job on the `rq` service -> merge queue ->
main. Then `docker compose down`: every process exits 0 on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from bus import connect
from cli import demo
from tests.conftest import require_real_redis, wait_until
from tests.deploy import compose

LOOP = "loop-1-clean"  # the demo loop that implements add() and finishes cleanly


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


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[list[Running], Path]]:
    url = require_real_redis()
    repo = demo.create(tmp_path / "demo")
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    local = compose.Local(repo=repo, redis_url=url, prefix=prefix, port=port)
    running: list[Running] = []
    try:
        for service in compose.services(compose.load({"LOOPS_LOOP": LOOP})):
            if not service.is_ours:
                continue  # Redis: the local one plays it
            env = local.env(service, os.environ)
            log = tmp_path / f"{service.name}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    local.argv([*service.entrypoint, *service.command]),
                    env=env,
                    cwd=local.cwd(service),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            running.append(
                Running(
                    service.name,
                    proc,
                    log,
                    local.argv(service.healthcheck),
                    env,
                    service.stop_grace_s(),
                )
            )
        yield running, repo
    finally:
        for r in running:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait(timeout=10)
        client: redis.Redis = connect(url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def _main_has_add(repo: Path) -> bool:
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", "main:calc/ops.py"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "return a + b" in shown.stdout


def test_compose_up_verifies_on_rq_and_merges_into_main(
    up: tuple[list[Running], Path],
) -> None:
    running, repo = up
    for r in running:
        wait_until(r.healthy, timeout=60, interval=0.2)

    try:
        wait_until(lambda: _main_has_add(repo), timeout=90, interval=0.2)
    except AssertionError:
        logs = "\n".join(f"--- {r.name}\n{r.output()}" for r in running)
        raise AssertionError(f"ADD-1 never reached main; the services said:\n{logs}") from None
    rq = next(r for r in running if r.name == "rq")
    assert "gates.jobs.verify_claim" in rq.log.read_text(), "the rq service ran no verification"

    for r in running:
        r.proc.send_signal(signal.SIGTERM)
    for r in running:
        code = r.proc.wait(timeout=r.grace_s)
        assert code == 0, f"{r.name} exited {code} on SIGTERM:\n{r.output()}"
