"""`app.compose.ProcessJobs`: embedded `loops up` runs verification jobs in worker
processes, through the same job function (an import path) an rq worker calls."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from app.compose import ProcessJobs
from gates.jobs import VERIFY_JOB, parse_results


def test_a_job_runs_in_another_process() -> None:
    jobs = ProcessJobs(workers=1)
    try:
        pid = jobs.run("os.getpid", {}, job_id="j1", timeout_s=30)
        assert pid != os.getpid()
    finally:
        jobs.close()


def test_the_verification_job_runs_the_checks_in_a_worker_process(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@t"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    subprocess.run(["git", "config", "user.name", "t"], cwd=repo, check=True)
    (repo / "ok.txt").write_text("yes\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    checks = [
        {"criterion": "file exists", "run": "test -f ok.txt", "timeout_s": 30},
        {"criterion": "never", "run": "false", "timeout_s": 30},
    ]
    jobs = ProcessJobs(workers=1)
    try:
        payload = jobs.run(
            VERIFY_JOB,
            {"repo": str(repo), "commit": commit, "checks": checks},
            job_id="v1",
            timeout_s=60,
        )
    finally:
        jobs.close()
    assert [r.passed for r in parse_results(payload)] == [True, False]
    assert json.loads(payload)[0]["criterion"] == "file exists"
