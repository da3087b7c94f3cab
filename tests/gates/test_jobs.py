"""Verification jobs on rq: in-process (`is_async=False`) and on a worker process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from rq import Queue

from bus import connect
from events import VerificationVerdict
from gates import RqJobs
from gates.errors import JobError
from gates.gitutil import cached_clone, remove_scratch
from gates.jobs import VERIFY_JOB, parse_results, verify_claim
from infra.git import git
from tests.conftest import require_real_redis
from tests.gates.conftest import PYTEST, Project
from tests.gates.test_flow import MUL

ROOT = Path(__file__).resolve().parents[2]


def flaky(counter: str) -> str:
    """A job that fails on its first run (the worker 'crashed'), then succeeds."""
    path = Path(counter)
    runs = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs == 1:
        raise RuntimeError("first run fails")
    return json.dumps({"runs": runs})


def test_the_gate_runs_its_checks_as_rq_jobs(project: Project) -> None:
    client = fakeredis.FakeRedis()
    try:
        project.start()
        assert project.gate is not None
        project.gate.jobs = RqJobs(Queue("verify", connection=client, is_async=False))
        a = project.loop("a")
        a.claim("mul", a.write({"app.py": MUL}, "mul"))
        project.pump()
        (passed,) = project.events("verification.passed")
        assert passed.criteria[0].exit_code == 0  # type: ignore[attr-defined]
        assert len(project.events("merge.completed")) == 1
    finally:
        client.close()


def test_a_failed_job_is_run_again(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    try:
        jobs = RqJobs(Queue("verify", connection=client, is_async=False), attempts=2)
        counter = str(tmp_path / "runs")
        out = jobs.run(f"{__name__}.flaky", {"counter": counter}, job_id="j1", timeout_s=10)
        assert json.loads(out) == {"runs": 2}
        # The same job id again (a redelivered claim) reuses the finished result.
        assert jobs.run(f"{__name__}.flaky", {"counter": counter}, job_id="j1", timeout_s=10) == out
        once = RqJobs(Queue("verify", connection=client, is_async=False), attempts=1)
        with pytest.raises(JobError, match="first run fails"):
            once.run(
                f"{__name__}.flaky", {"counter": str(tmp_path / "b")}, job_id="j2", timeout_s=5
            )
    finally:
        client.close()


@pytest.fixture
def real_queue() -> Iterator[Queue]:
    url = require_real_redis()
    client = connect(url)
    queue = Queue(f"test-verify-{uuid.uuid4().hex[:8]}", connection=client)
    try:
        yield queue
    finally:
        queue.delete(delete_jobs=True)
        client.close()


def test_a_worker_process_runs_the_verification_job(
    project: Project, real_queue: Queue, tmp_path: Path
) -> None:
    loop = project.loop("a")
    commit = loop.write({"app.py": MUL}, "mul")
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, require_real_redis(), real_queue.name],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        jobs = RqJobs(real_queue)
        checks = [{"criterion": "mul", "run": f"{PYTEST} tests/test_mul.py", "timeout_s": 60}]
        out = jobs.run(
            VERIFY_JOB,
            {"repo": str(loop.path), "commit": commit, "checks": checks},
            job_id=f"verify-{uuid.uuid4().hex}",
            timeout_s=120,
        )
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    (result,) = parse_results(out)
    assert result.passed and result.exit_code == 0
    assert git(loop.path, "status", "--porcelain") == ""  # ran beside, not in, the checkout
    remove_scratch(loop.path)


# A SimpleWorker (no fork) polling until terminated; what `rq worker` does, minus the CLI
# (our class: rq's own may wait out a 60 s pubsub read when it is terminated).
_WORKER = """
import sys
from redis import Redis
from rq import Queue
from cli.rqworker import SimpleWorker
conn = Redis.from_url(sys.argv[1])
SimpleWorker([Queue(sys.argv[2], connection=conn)], connection=conn).work(with_scheduler=False)
"""


class LostJobs:
    """A `JobRunner` whose every job fails (its workers keep dying)."""

    def run(self, func: str, kwargs: dict[str, object], *, job_id: str, timeout_s: float) -> str:
        raise JobError(f"job {job_id} failed 3 times: worker lost", job_id)


def test_a_job_that_keeps_failing_fails_the_verification(project: Project) -> None:
    project.start()
    assert project.gate is not None
    project.gate.jobs = LostJobs()
    a = project.loop("a")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    project.pump()
    (failed,) = project.events("verification.failed")
    assert failed.verdict == VerificationVerdict.CHECKS_FAILED  # type: ignore[attr-defined]
    assert "worker lost" in failed.reason  # type: ignore[attr-defined]


def test_a_worker_without_the_gates_clone_uses_its_own_clone_of_the_remote(
    project: Project,
) -> None:
    loop = project.loop("a")
    commit = loop.write({"app.py": MUL}, "mul")
    checks = [{"criterion": "mul", "run": f"{PYTEST} tests/test_mul.py", "timeout_s": 60}]
    url = str(project.origin)
    try:
        out = verify_claim(str(project.root / "not-on-this-host"), commit, checks, remote_url=url)
        (result,) = parse_results(out)
        assert result.passed and result.exit_code == 0
    finally:
        clone = cached_clone(url)
        remove_scratch(clone)
        shutil.rmtree(clone)
