"""Agent iterations as rq jobs: the job an agent host runs.

`run_iteration` is the job (importable by path, plain serialisable arguments, a JSON
string as result), run by any `rq worker` on the queue the coordinators use
(`LOOPS_AGENT_QUEUE`, e.g. `loops-agents`). On its own host it keeps a clone of the
project's git remote per loop, fetches the loop's branch at the iteration's base
commit, runs the agent in the sandbox of a `loops.workspace.Workspace` built on that
clone (the same work tree layout, git hygiene and sandbox as a local loop), commits,
pushes the loop's branch (and only it, leased on the base), and returns the evidence:
the agent's result and the pushed commit. The coordinator's side is
`loops.runners.queued.QueuedRunner`.

While it runs, the job holds a lease in Redis (`{prefix}:agentjob:{id}:lease`, renewed
every `LEASE_S / 5`): a job whose lease lapsed has lost its process (a worker or a
container killed), and the coordinator runs it again elsewhere. Through the same keys
it reports the agent's signs of life and reads a cancel (the monitor's abort, a stop).

`run_in_workspace` is the part both modes share: one agent iteration in a given
`Workspace` (the sandbox policy checked and given to the runner, the run, its stray
processes killed, the result redacted, the work committed). The job calls it on its
clone's work tree; a loop that runs its agent in its own process (embedded mode,
`loops.worker.LoopWorker.call_agent`) calls it on the loop's own work tree, as
`gates.jobs.verify_claim` is both the rq job and the in-process verification.

Trust: the agent host gets the prompt, the remote's URL without credentials (its own
git credentials push the loop's branch), and nothing of the bus but rq's queue. What it
returns is evidence for the coordinator, never a verdict: the gate verifies the claimed
commit from a clean checkout with criteria from main.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import TypeAdapter

from events import AgentSign, FailureKind, LoopsError
from infra.files import FileLock
from infra.git import git
from infra.settings import Settings
from loops.runners import AgentRequest, AgentResult, AgentRunner, make_runner, redacted
from loops.runners.process import kill_strays
from loops.sandbox import (
    ENV_MODE,
    SandboxConfig,
    SandboxMode,
    SandboxPolicy,
    SandboxUnavailable,
)
from loops.workspace import IterationCommit, Workspace

log = logging.getLogger("loops.jobs")

ITERATION_JOB = "loops.jobs.run_iteration"
LEASE_S = 10.0  # a job whose lease is this old has lost its process
ENV_HOME = "LOOPS_AGENT_HOME"  # where an agent host keeps its clones (`agent_home`)


class IterationJobError(LoopsError):
    """Raised when an agent host cannot set up or publish an iteration (git, sandbox)."""


def job_id(prefix: str, loop: str, task_id: str, iteration: int, base: str) -> str:
    """The rq job id of one iteration: the same iteration on the same base (a
    coordinator that restarted mid-iteration) finds the job it enqueued before."""
    digest = hashlib.sha256(f"{prefix}\0{loop}\0{task_id}\0{iteration}\0{base}".encode())
    return f"agent-{digest.hexdigest()[:32]}"


def keys(prefix: str, job: str) -> tuple[str, str, str]:
    """The (lease, activity, cancel) keys of job `job`."""
    base = f"{prefix}:agentjob:{job}"
    return f"{base}:lease", f"{base}:live", f"{base}:cancel"


def public_url(url: str) -> str:
    """`url` without user and password: an agent host uses its own credentials, and
    what goes into Redis holds no secret (invariant 7)."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# ---------------------------------------------------------------------- evidence
_RESULT = TypeAdapter(AgentResult)


def result_to_json(result: AgentResult, commit: str | None) -> str:
    return json.dumps({"result": _RESULT.dump_python(result, mode="json"), "commit": commit})


def result_from_json(payload: str) -> tuple[AgentResult, str | None]:
    """The (result, pushed commit) of a job's return value. Raises `IterationJobError`
    for anything else (a job result is the agent host's word: checked, not trusted)."""
    try:
        data = json.loads(payload)
        result = _RESULT.validate_python(data["result"])
        commit = data.get("commit")
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError included
        raise IterationJobError(f"unreadable iteration result: {str(exc)[:300]}") from None
    if commit is not None and not (isinstance(commit, str) and len(commit) == 40):
        raise IterationJobError(f"unreadable iteration result: commit {str(commit)[:50]!r}")
    if not all(c in "0123456789abcdef" for c in commit or ""):
        raise IterationJobError(f"unreadable iteration result: commit {commit!r}")
    return result, commit


# ---------------------------------------------------------------------- the job
def run_iteration(
    *,
    prefix: str,
    job: str,
    remote_url: str,
    loop: str,
    main: str,
    base: str,
    merge_with: str | None,
    prompt: str,
    agent: str,
    model: str | None,
    task_id: str,
    iteration: int,
    task_iteration: int | None,
    timeout_s: float,
    sandbox: dict[str, Any] | None = None,
    hide: list[str] | None = None,
) -> str:
    """Run one agent iteration on `loop`'s branch at `base` (with `merge_with` merged in
    first, conflicts and all, when the loop is resolving a conflict with main), commit
    what the agent changed, push the branch (leased on `base`) and return the evidence
    (`result_to_json`). Raises `IterationJobError` when the iteration cannot be set up
    or published, so rq records the job as failed. `hide`: the coordinator's own paths
    (its checkout and state dir), hidden from the agent where this host has them too
    (compose mounts the project at the same path everywhere)."""
    settings = Settings.from_env()  # this host's (an entry point: rq calls it)
    named = settings.agent_home
    home = Path(named or Path.home() / ".cache" / "coding-loops" / "agents")
    place = home / hashlib.sha256(remote_url.encode()).hexdigest()[:16] / loop
    place.mkdir(parents=True, exist_ok=True)
    # One job per loop at a time on this host (a re-run waits for a killed one's lock
    # to be released, which happens when its process is gone).
    with FileLock(place / ".lock"), _Channel(prefix, job) as channel:
        ws = _checkout(place, remote_url, loop, main, base, merge_with)
        request = AgentRequest(
            prompt=prompt,
            worktree=ws.path,
            loop=loop,
            task_id=task_id,
            iteration=iteration,
            timeout_s=timeout_s,
            model=model,
            task_iteration=task_iteration,
            cancel=channel.cancel,
            on_activity=channel.sign,
        )
        policy = _policy(ws, sandbox, [home, *(Path(p) for p in hide or ())], remote_url)
        refused = unsandboxed_refusal(policy)
        if refused is not None:
            return result_to_json(refused, None)
        result, done = run_in_workspace(
            ws,
            make_runner(agent, model=model, settings=settings),
            request,
            policy,
            f"{loop}: {task_id} iteration {iteration}\n\nLoops-Job: {job}",
        )
        if done.commit:
            _push(ws, remote_url, done.commit, base)
        return result_to_json(result, done.commit)


def run_in_workspace(
    ws: Workspace,
    runner: AgentRunner,
    request: AgentRequest,
    policy: SandboxPolicy,
    message: str,
    keep: str | None = None,
) -> tuple[AgentResult, IterationCommit]:
    """Run one agent iteration in `ws`, the one path of both modes (an rq job on its
    clone, a loop's own process on its work tree): `policy` checked (`SandboxUnavailable`
    when it is required and cannot run here) and given to `runner` with the work tree;
    then the run's stray processes killed (an unsandboxed agent's leftovers, whatever
    the runner did), its result redacted (nothing with a secret in it is published,
    written or returned), and what it changed committed with `message` (`keep`: as that
    task's keep-ref too). Returns the redacted result and the commit."""
    policy.check()
    try:
        result = runner.run(replace(request, worktree=ws.path, sandbox=policy))
    finally:
        kill_strays(ws.path)
    result = redacted(result)  # invariant 7: the one place every reply passes
    return result, ws.commit_iteration(message, keep=keep)


def unsandboxed_refusal(policy: SandboxPolicy) -> AgentResult | None:
    """On an agent host, `auto` means required: the rq worker beside the agent holds
    the bus's password (in its environment and its memory), so an unsandboxed agent
    could write job results and enqueue jobs. Only an explicit `off` (LOOPS_SANDBOX=off
    on the host, or the loop's `sandbox: off`) runs one without the sandbox. Returns
    the iteration's result when this host would have to (unrunnable: the task is
    blocked with the reason, not retried), else None."""
    if policy.mode is not SandboxMode.AUTO:
        return None  # off: the operator's choice; required: policy.check() refuses
    try:
        replace(policy, mode=SandboxMode.REQUIRED).check()
    except SandboxUnavailable as exc:
        return AgentResult(
            reply="",
            exit_code=None,
            failure=FailureKind.AGENT_ERROR,
            failure_detail=(
                f"this agent host runs no agent unsandboxed ({exc.reason}): install "
                "bubblewrap (in a container it also needs user namespaces and a /proc of "
                'its own: docs/ARCHITECTURE.md, "Agent hosts"), or set '
                f"{ENV_MODE}=off in the rq worker's environment"
            ),
            unrunnable=True,
        )
    return None


def _checkout(
    place: Path, url: str, loop: str, main: str, base: str, merge_with: str | None
) -> Workspace:
    """The loop's work tree in this host's clone, at `base` (plus the merge)."""
    clone = place / "repo.git"
    if not (clone / "HEAD").is_file():
        git(place, "init", "-q", "--bare", str(clone))
    branch = f"loop/{loop}"
    tracking = f"refs/remotes/loops/{branch}"
    git(
        clone,
        "fetch",
        "-q",
        "--no-tags",
        url,
        f"+refs/heads/{main}:refs/heads/{main}",
        f"+refs/heads/{branch}:{tracking}",
        timeout=600,
    )
    at = git(clone, "rev-parse", "--verify", "-q", tracking, check=False)
    if at != base:
        raise IterationJobError(
            f"{branch} on the remote is at {at[:12] or 'nothing'}, not at the iteration's "
            f"base {base[:12]}: the coordinator moved it (a newer iteration); not run"
        )
    if merge_with is not None:
        found = git(clone, "rev-parse", "--verify", "-q", f"{merge_with}^{{commit}}", check=False)
        if not found:  # main as the coordinator sees it, ahead of the remote's
            side = f"refs/loops/main/{loop}"
            git(clone, "fetch", "-q", "--no-tags", url, f"+{side}:{side}", timeout=600)
            found = git(clone, "rev-parse", "--verify", "-q", f"{side}^{{commit}}", check=False)
        if found != merge_with:
            raise IterationJobError(f"main's commit {merge_with[:12]} is not on the remote")
        git(clone, "update-ref", f"refs/heads/{main}", merge_with)
    ws = Workspace(clone, loop, main, root=place / "ws" / "worktrees")
    ws.ensure()
    kill_strays(ws.path)  # an agent of a job whose process was killed (unsandboxed)
    ws.reset_to(base)
    if merge_with is not None:
        ws.merge_main()  # conflicts stay in the tree, markers and all, for the agent
    return ws


def _policy(
    ws: Workspace, sandbox: dict[str, Any] | None, hide: list[Path], url: str
) -> SandboxPolicy:
    """The work tree's sandbox (`Workspace.sandbox_policy`: this clone hidden, its
    objects and the loop's git dir shown again), with `hide` (this host's clones of
    every loop and project, the coordinator's checkout and state dir) and the remote,
    when it is a directory here (compose: the project itself, `.loops/` and all),
    hidden too."""
    policy = ws.sandbox_policy(SandboxConfig.model_validate(sandbox or {}))
    hidden = list(hide)
    parts = urlsplit(url)
    if parts.scheme == "file" or (not parts.scheme and Path(url).is_absolute()):
        local = Path(parts.path if parts.scheme else url)
        hidden += [local, local.resolve()]
    return replace(policy, hidden=(*policy.hidden, *(p.absolute() for p in hidden)))


def _push(ws: Workspace, url: str, commit: str, base: str) -> None:
    """Push the loop's branch, and only it, if it is still at `base` (a re-run of this
    iteration elsewhere may have pushed first: then this one's work is not wanted)."""
    ref = f"refs/heads/{ws.branch}"
    try:
        git(ws.repo, "push", "-q", url, f"{commit}:{ref}", f"--force-with-lease={ref}:{base}")
    except LoopsError as exc:
        raise IterationJobError(f"cannot push {ws.branch}: {exc}") from None


class _Channel:
    """The job's lease, signs of life and cancel, through the rq job's own Redis
    connection (none when the job is called in-process: then it is a no-op)."""

    def __init__(self, prefix: str, job: str) -> None:
        from rq import get_current_job

        current = get_current_job()
        self.redis = current.connection if current is not None else None
        self.lease, self.live, self.cancel_key = keys(prefix, job)
        self.cancel = threading.Event()
        self._signs = 0  # signs of life so far, and the last one
        self._last: AgentSign | None = None
        self._sent = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job}", daemon=True)

    def __enter__(self) -> _Channel:
        if self.redis is not None:
            self._renew()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def sign(self, sign: AgentSign) -> None:
        self._last = sign
        self._signs += 1

    def _renew(self) -> None:
        assert self.redis is not None
        pipe = self.redis.pipeline()
        pipe.set(self.lease, "1", px=int(LEASE_S * 1000))
        signs, last = self._signs, self._last
        if last is not None and signs != self._sent:
            pipe.set(self.live, f"{signs} {last.value}", ex=3600)
        pipe.exists(self.cancel_key)
        *_, cancelled = pipe.execute()
        self._sent = signs
        if cancelled:
            self.cancel.set()

    def _beat(self) -> None:
        while not self._done.wait(LEASE_S / 5):
            try:
                self._renew()
            except Exception as exc:  # a Redis hiccup: the next beat tries again
                log.warning("renewing the lease of this iteration: %s", exc)
