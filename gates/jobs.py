"""Verification jobs and where they run.

`verify_claim` is the job: importable by path, plain serialisable arguments, a JSON
string as result. It runs the script checks of a claim in a clean worktree of the
claimed commit. `InlineJobs` calls it in-process (embedded mode, tests); `RqJobs`
enqueues it on an rq queue so that capacity grows with rq workers (distributed mode).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from events import CriterionResult
from gates.checks import DEFAULT_TIMEOUT_S, OUTPUT_TAIL_BYTES, run_script, scrubbed_env
from gates.errors import JobError
from gates.gitutil import cached_clone, scratch
from gates.protect import restore

VERIFY_JOB = "gates.jobs.verify_claim"


def verify_claim(
    repo: str,
    commit: str,
    checks: list[dict[str, Any]],
    default_timeout_s: float = DEFAULT_TIMEOUT_S,
    tail_bytes: int = OUTPUT_TAIL_BYTES,
    remote_url: str | None = None,
    overlay_rev: str | None = None,
    overlay: list[str] | None = None,
    overlay_remove: list[str] | None = None,
) -> str:
    """Run `checks` (`[{"criterion", "run", "timeout_s"}]`) on a clean checkout of
    `commit`, with `overlay_rev`'s version of each path of `overlay` laid over it (main's
    protected files) and the files of `overlay_remove` deleted (new files that shadow a
    check); returns the `CriterionResult`s as a JSON list. `repo` is the gate's
    clone; on a host without it (an rq worker elsewhere) a clone of `remote_url` is used."""
    results: list[dict[str, Any]] = []
    env = scrubbed_env()
    where: str | Path = repo
    if not Path(repo).is_dir() and remote_url:
        where = cached_clone(remote_url)
    with scratch(where, commit, pool="verify") as root:
        if overlay_rev and (overlay or overlay_remove):
            restore(Path(root), overlay_rev, overlay or [], overlay_remove or [])
        for check in checks:
            timeout = check.get("timeout_s") or default_timeout_s
            result = run_script(
                str(check["run"]),
                Path(root),
                criterion=str(check["criterion"]),
                timeout_s=float(timeout),
                tail_bytes=tail_bytes,
                env=env,
                record_group=True,
            )
            results.append(result.model_dump(mode="json"))
    return json.dumps(results)


def parse_results(payload: str) -> list[CriterionResult]:
    return [CriterionResult.model_validate(item) for item in json.loads(payload)]


class JobRunner(Protocol):
    """Runs a job function (named by import path) and returns its result."""

    def run(self, func: str, kwargs: dict[str, Any], *, job_id: str, timeout_s: float) -> str:
        """Run `func(**kwargs)` as job `job_id` and return its result. Running the same
        `job_id` again after a crash reuses a finished result. Raises `JobError`."""


def _resolve(path: str) -> Callable[..., str]:
    module, _, name = path.rpartition(".")
    func: Callable[..., str] = getattr(importlib.import_module(module), name)
    return func


class InlineJobs:
    """Runs jobs in this process, through the same function an rq worker would call."""

    def run(self, func: str, kwargs: dict[str, Any], *, job_id: str, timeout_s: float) -> str:
        return _resolve(func)(**kwargs)


class RqJobs:
    """Runs jobs on an rq queue and waits (polling, up to the job's timeout) for the result.

    A job that failed or was abandoned (its worker was killed) is enqueued again, up
    to `attempts` times in all. With `Queue(is_async=False)` the job runs at enqueue."""

    def __init__(self, queue: Any, *, attempts: int = 3, poll_s: float = 0.05) -> None:
        self.queue = queue
        self.attempts = attempts
        self.poll_s = poll_s

    def _fetch(self, job_id: str) -> Any:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            return Job.fetch(job_id, connection=self.queue.connection)
        except NoSuchJobError:
            return None

    def run(self, func: str, kwargs: dict[str, Any], *, job_id: str, timeout_s: float) -> str:
        from rq.job import JobStatus

        last_error = "not run"
        for _ in range(self.attempts):
            job = self._fetch(job_id)
            status = job.get_status(refresh=True) if job is not None else None
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                last_error = self._error(job)
                job.delete()
                job = None
            if job is None:
                job = self.queue.enqueue_call(
                    func,
                    kwargs=kwargs,
                    job_id=job_id,
                    # rq logs a job's description; the default is the call with its
                    # arguments, which may hold a remote's URL (invariant 7).
                    description=f"{func} {job_id}",
                    timeout=max(1, int(timeout_s)),
                    result_ttl=3600,
                    failure_ttl=3600,
                )
            deadline = time.monotonic() + timeout_s + 30
            while True:
                status = job.get_status(refresh=True)
                if status == JobStatus.FINISHED:
                    return str(job.return_value(refresh=True))
                if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                    last_error = self._error(job)
                    break
                if time.monotonic() > deadline:
                    raise JobError(f"job {job_id} did not finish in {timeout_s:g}s", job_id)
                time.sleep(self.poll_s)
        raise JobError(f"job {job_id} failed {self.attempts} times: {last_error}", job_id)

    @staticmethod
    def _error(job: Any) -> str:
        result = job.latest_result()
        text = getattr(result, "exc_string", None) or "failed"
        return str(text).strip().splitlines()[-1]
