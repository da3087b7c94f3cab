"""The coordinator's side of agent iterations as rq jobs: a runner that runs nothing here.

`QueuedRunner.run` hands the iteration to `loops.jobs.run_iteration` on an rq queue
(`LOOPS_AGENT_QUEUE`) and waits for it, so any rq worker on any host runs the agent.
Before it enqueues, the loop's branch is on the remote at the iteration's base; after,
the pushed commit is fetched, checked (a descendant of the base), and its tree is laid
into the loop's own work tree, where the worker commits it as it commits a local run's
work. Everything else stays with the coordinator: task choice, prompts, state, claims,
usage-limit waits and budgets (on the bus), the monitor's aborts and the heartbeat (the
job's signs of life and a cancel travel through Redis keys, see `loops.jobs`).

A job whose lease lapsed (its worker or container was killed) is enqueued again, up to
`attempts` times in all, on top of rq's own `Retry` for a job that failed or that rq
found abandoned. The loop loses at most the iteration in flight: it resumes from the
last commit it took in. A failure of the job itself comes back as the iteration's typed
failure (`agent_error`; no agent worker at all: `outage`), never as an exception.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from events import AgentSign, FailureKind, LoopsError
from infra.git import git
from loops.jobs import (
    ITERATION_JOB,
    LEASE_S,
    job_id,
    keys,
    public_url,
    result_from_json,
    run_iteration,
)
from loops.runners import AgentRequest, AgentResult, AgentRunner, interrupted_result
from loops.sandbox import SandboxConfig
from loops.workspace import Workspace

log = logging.getLogger("loops.runners.queued")

QUEUE_WAIT_S = 300.0  # no agent worker took the job: an outage, retried with back-off
CANCEL_WAIT_S = 30.0  # a cancelled job has this long to hand back its work so far
GIT_SETUP_S = 600.0  # the job's own git work (clone, fetch, push) beside the agent's run


@dataclass(frozen=True)
class AgentQueue:
    """Where a loop's iterations run: the rq `queue` (None: in this process, through
    the same job function), the project's `repo` and `main`, and the git `remote` agent
    hosts clone (a remote name or URL; None: the repository's own path, for agent
    workers that see the project directory at the same path, as compose's do)."""

    queue: Any
    prefix: str
    repo: Path
    main: str = "main"
    remote: str | None = None
    worktrees: Path | None = None  # where the loops' work trees are (default repo/.loops)
    attempts: int = 3
    poll_s: float = 0.25
    queue_wait_s: float = QUEUE_WAIT_S  # no agent worker took it: an outage


class QueuedRunner:
    """An `AgentRunner` whose runs are rq jobs (`loops.jobs.run_iteration`)."""

    def __init__(
        self,
        inner: AgentRunner,
        agent: str,
        where: AgentQueue,
        *,
        model: str | None = None,
        sandbox: SandboxConfig | None = None,
    ) -> None:
        self.inner = inner  # the runner the agent hosts build from `agent`
        self.name = inner.name
        self.agent = agent
        self.where = where
        self.model = model
        self.sandbox = sandbox
        if hasattr(inner, "command"):  # the account of a `command:` agent (usage windows)
            self.command = inner.command

    # ------------------------------------------------------------------ git
    def _url(self) -> str:
        remote = self.where.remote
        if remote is None:
            return str(self.where.repo)
        url = git(self.where.repo, "remote", "get-url", remote, check=False) or remote
        if "://" not in url and ":" not in url.split("/")[0] and not Path(url).is_absolute():
            url = str((self.where.repo / url).resolve())  # a path relative to the repo
        return public_url(url)

    def _tracking(self, branch: str) -> str:
        name = self.where.remote
        if name and "/" not in name and ":" not in name:
            return f"refs/remotes/{name}/{branch}"  # what `push --force-with-lease` reads
        return f"refs/loops/fetched/{branch}"

    def _publish_base(self, ws: Workspace, base: str, merge_with: str | None) -> None:
        """The loop's branch on the remote at `base` (the coordinator owns that branch),
        and main as this coordinator sees it when a merge of it is in progress (the
        remote's main may be behind: `refs/loops/main/<loop>`, not a branch)."""
        if self.where.remote is None:
            return  # the repository itself: `loop/<name>` is at base already
        refs = [f"{base}:refs/heads/{ws.branch}"]
        if merge_with is not None:
            refs.append(f"{merge_with}:refs/loops/main/{ws.loop}")
        git(self.where.repo, "push", "-q", "--force", self.where.remote, *refs)
        git(self.where.repo, "update-ref", self._tracking(ws.branch), base)

    def _take(self, ws: Workspace, base: str, commit: str) -> str | None:
        """Bring the job's `commit` in and lay its tree into the work tree; returns why
        not (the commit is missing, or does not descend from `base`)."""
        repo = self.where.repo
        if self.where.remote is not None:
            tracking = self._tracking(ws.branch)
            git(
                repo,
                "fetch",
                "-q",
                "--no-tags",
                self.where.remote,
                f"+refs/heads/{ws.branch}:{tracking}",
                timeout=GIT_SETUP_S,
            )
        if not git(repo, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}", check=False):
            return f"its commit {commit[:12]} is not on the remote"
        if not _descends(repo, base, commit):
            return f"its commit {commit[:12]} does not descend from the base {base[:12]}"
        ws.take_tree(commit)
        return None

    # ------------------------------------------------------------------ running
    def run(self, request: AgentRequest) -> AgentResult:
        ws = Workspace(self.where.repo, request.loop, self.where.main, root=self.where.worktrees)
        base = ws.head()
        merge_head = ws.git_dir / "MERGE_HEAD"
        merge_with = merge_head.read_text().split()[0] if merge_head.is_file() else None
        job = job_id(self.where.prefix, request.loop, request.task_id, request.iteration, base)
        kwargs: dict[str, Any] = {
            "prefix": self.where.prefix,
            "job": job,
            "remote_url": self._url(),
            "loop": request.loop,
            "main": self.where.main,
            "base": base,
            "merge_with": merge_with,
            "prompt": request.prompt,
            "agent": self.agent,
            "model": request.model or self.model,
            "task_id": request.task_id,
            "iteration": request.iteration,
            "task_iteration": request.task_iteration,
            "timeout_s": request.timeout_s,
            "sandbox": self.sandbox.model_dump(mode="json") if self.sandbox else None,
            # Where an agent host sees them too (compose), hidden from its agent.
            "hide": [str(self.where.repo.absolute()), str(ws.root.parent)],
        }
        started = time.monotonic()

        def publish() -> None:  # before each enqueue: a re-run starts from the same base
            self._publish_base(ws, base, merge_with)

        if self.where.queue is None:
            publish()
            payload: str | AgentResult = run_iteration(**kwargs)
        else:
            payload = self._wait(job, kwargs, request, publish)
        if isinstance(payload, AgentResult):
            return payload
        try:
            result, commit = result_from_json(payload)
        except LoopsError as exc:
            return _failed(str(exc), started)
        if commit is not None:
            why = self._take(ws, base, commit)
            if why is not None:
                return _failed(f"the agent host's work was refused: {why}", started)
        return result

    def _enqueue(
        self, job: str, kwargs: dict[str, Any], request: AgentRequest, publish: Callable[[], None]
    ) -> Any:
        from rq import Retry

        publish()
        return self.where.queue.enqueue_call(
            ITERATION_JOB,
            kwargs=kwargs,
            job_id=job,
            # rq logs a job's description; the default is the call with its arguments.
            description=f"{ITERATION_JOB} {request.loop} {request.task_id} #{request.iteration}",
            timeout=int(request.timeout_s + GIT_SETUP_S),
            result_ttl=24 * 3600,
            failure_ttl=24 * 3600,
            retry=Retry(max=max(self.where.attempts - 1, 0)),
        )

    def _wait(
        self, job: str, kwargs: dict[str, Any], request: AgentRequest, publish: Callable[[], None]
    ) -> str | AgentResult:
        """The job's return value, or the result that ends the wait (a failure, a cancel).
        A job of this iteration that is already there (a coordinator restarted while it
        ran) is waited for, not enqueued again."""
        from rq.exceptions import InvalidJobOperation, NoSuchJobError
        from rq.job import Job, JobStatus

        redis = self.where.queue.connection
        lease_key, live_key, cancel_key = keys(self.where.prefix, job)
        never = threading.Event()
        began = time.monotonic()
        try:
            rq_job = Job.fetch(job, connection=redis)
            if rq_job.get_status(refresh=True) in (
                JobStatus.FAILED,
                JobStatus.STOPPED,
                JobStatus.CANCELED,
            ):  # an earlier run's failure, before a restart: this run tries again
                rq_job.delete()
                rq_job = self._enqueue(job, kwargs, request, publish)
        except (NoSuchJobError, InvalidJobOperation):
            rq_job = self._enqueue(job, kwargs, request, publish)
        reruns = 0
        queued_at: float | None = None
        started_at: float | None = None  # when the job was first seen running
        cancelled_at: float | None = None
        signs = None
        while True:
            try:
                status = rq_job.get_status(refresh=True)
            except InvalidJobOperation:  # deleted under us (an operator's `rq empty`): again
                rq_job = self._enqueue(job, kwargs, request, publish)
                continue
            now = time.monotonic()
            if status == JobStatus.FINISHED:
                redis.delete(lease_key, live_key, cancel_key)
                return str(rq_job.return_value(refresh=True))
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                if cancelled_at is not None:
                    return _interrupted()
                return _failed(f"the iteration's job failed: {_error(rq_job)}", began)
            lease, live = redis.pipeline().exists(lease_key).get(live_key).execute()
            if live is not None and live != signs:
                signs = live
                with contextlib.suppress(ValueError):  # the agent host's word: checked
                    request.signal(AgentSign(live.decode(errors="replace").partition(" ")[2]))
            cancel = request.cancel is not None and request.cancel.is_set()
            if cancel and cancelled_at is None:
                cancelled_at = now
                redis.set(cancel_key, "1", ex=3600)
                if status != JobStatus.STARTED:
                    rq_job.cancel()
                    return _interrupted()
            if cancelled_at is not None and now - cancelled_at > CANCEL_WAIT_S:
                return _interrupted()
            if status == JobStatus.STARTED:
                queued_at = None
                # The lease lapses LEASE_S after its last renewal; a job just started
                # gets that long to take it first.
                started_at = started_at if started_at is not None else now
                if not lease and now - started_at > LEASE_S:
                    # Its process is gone (worker or container killed): run it elsewhere.
                    reruns += 1
                    log.warning(
                        "%s %s iteration %d: its agent worker is gone; running it again (%d/%d)",
                        request.loop,
                        request.task_id,
                        request.iteration,
                        reruns,
                        self.where.attempts - 1,
                    )
                    rq_job.delete()
                    if reruns >= self.where.attempts:
                        return _failed(
                            f"its agent worker died {reruns} times running this iteration", began
                        )
                    rq_job = self._enqueue(job, kwargs, request, publish)
                    started_at = None
                    continue
            else:
                started_at = None
                queued_at = queued_at if queued_at is not None else now
                if now - queued_at > self.where.queue_wait_s:
                    return _failed(
                        f"no agent worker took the iteration from rq queue "
                        f"{self.where.queue.name!r} in {self.where.queue_wait_s:g}s; start one with "
                        f'`rq worker -u "$REDIS_URL" -w cli.rqworker.SimpleWorker '
                        f"{self.where.queue.name}`",
                        began,
                        FailureKind.OUTAGE,
                    )
            # Woken at once by a cancel; once cancelled, polled at the usual pace.
            (request.cancel if cancelled_at is None and request.cancel else never).wait(
                self.where.poll_s
            )


def _interrupted() -> AgentResult:
    return interrupted_result(partial(AgentResult, ""))


def _failed(detail: str, began: float, kind: FailureKind = FailureKind.AGENT_ERROR) -> AgentResult:
    log.warning("agent iteration: %s", detail)
    return AgentResult(
        reply="",
        exit_code=None,
        duration_s=time.monotonic() - began,
        failure=kind,
        failure_detail=detail,
    )


def _error(job: Any) -> str:
    result = job.latest_result()
    text = getattr(result, "exc_string", None) or "failed"
    return str(text).strip().splitlines()[-1]


def _descends(repo: Path, base: str, commit: str) -> bool:
    """`commit` is one commit on top of `base` (its first parent: the job committed the
    agent's work, or the merge it resolved, on the base it was given)."""
    parents = git(repo, "rev-list", "--first-parent", "--max-count=2", commit).split()
    return base in parents
