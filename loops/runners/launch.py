"""The one way a runner starts an agent process (DESIGN.md invariant 8).

`launch(request)` gives a run its private `TMPDIR` (fresh, removed afterwards; the
prompt file goes there), its allow-listed environment (`events.secrets.allowed_env`:
what programs need, the agent's model credentials, the LOOPS_* contract, the
operator's passthrough names; never the harness's credentials), and `Launch.run`,
which starts a program through the request's sandbox (`loops.sandbox`).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events import AgentSign, FailureKind
from events.secrets import allowed_env, redact
from loops.runners import AgentRequest, AgentResult, last_line
from loops.runners.outcome import Failure
from loops.runners.process import ProcessResult, kill_strays, run_process
from loops.sandbox import SandboxPolicy, SandboxUnavailable

__all__ = ["Launch", "agent_env", "cannot_start", "launch", "process_result"]


def agent_env(
    request: AgentRequest, policy: SandboxPolicy | None = None, **extra: str
) -> dict[str, str]:
    """The environment of an agent process: the allow-list of the harness's own
    environment, the request's `env`, the LOOPS_* contract, then `extra`."""
    policy = policy or request.sandbox or SandboxPolicy.build()
    return allowed_env(
        policy.environ,
        agent=True,
        passthrough=policy.env,
        extra={
            **request.env,
            "LOOPS_LOOP": request.loop,
            "LOOPS_TASK_ID": request.task_id,
            "LOOPS_ITERATION": str(request.iteration),
            "LOOPS_WORKTREE": str(request.worktree),
            **extra,
        },
    )


@dataclass(frozen=True)
class Launch:
    """One agent run's TMPDIR, prompt file and environment, and the sandbox to run in."""

    request: AgentRequest
    policy: SandboxPolicy | None  # None: no sandbox (a runner used on its own)
    tmpdir: Path
    prompt_file: Path
    env: dict[str, str]

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin_text: str = "",
        timeout_s: float | None = None,
        on_stdout_line: Callable[[str], None] | None = None,
        writable: Iterable[Path] = (),
        cancel: threading.Event | None = None,
    ) -> ProcessResult:
        """Run `argv` in the work tree, sandboxed. Raises OSError when it cannot start
        and `SandboxUnavailable` when the sandbox is required and missing."""
        cwd = self.request.worktree
        if self.policy is not None:
            argv = self.policy.wrap(argv, cwd=cwd, writable=[self.tmpdir, *writable])
        return run_process(
            argv,
            cwd=cwd,
            env=self.env,
            stdin_text=stdin_text,
            timeout_s=self.request.timeout_s if timeout_s is None else timeout_s,
            on_stdout_line=on_stdout_line,
            cancel=self.request.cancel if cancel is None else cancel,
            on_output=(
                None
                if self.request.on_activity is None
                else lambda: self.request.signal(AgentSign.OUTPUT)
            ),
            on_spawn=self.request.on_spawn,
        )


@contextmanager
def launch(request: AgentRequest, **extra_env: str) -> Iterator[Launch]:
    """A private TMPDIR with the prompt in `prompt.md`, and the agent's environment
    (`LOOPS_PROMPT_FILE` and `TMPDIR` set); the directory is removed afterwards."""
    policy = request.sandbox
    root = policy.tmp_root if policy is not None else None
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    # Short: programs put unix sockets in TMPDIR, whose paths have a 108-byte limit.
    prefix = "run-" if root is not None else "loops-agent-"
    tmpdir = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        prompt_file = tmpdir / "prompt.md"
        prompt_file.write_text(request.prompt, encoding="utf-8")
        env = agent_env(
            request,
            policy,
            LOOPS_PROMPT_FILE=str(prompt_file),
            TMPDIR=str(tmpdir),
            **extra_env,
        )
        yield Launch(request, policy, tmpdir, prompt_file, env)
    finally:
        if policy is None or not policy.status().active:
            kill_strays(request.worktree)  # no PID namespace took them down
        shutil.rmtree(tmpdir, ignore_errors=True)


def cannot_start(
    exc: OSError | SandboxUnavailable, what: str, fix: str, env: Mapping[str, str] | None = None
) -> AgentResult:
    """The result of a run whose process could not start: the sandbox was required and
    missing, or the program (`what`) is missing or not executable (`fix`: how to mend it)."""
    if isinstance(exc, SandboxUnavailable):
        return AgentResult(
            reply="", exit_code=None, failure=FailureKind.AGENT_ERROR, failure_detail=str(exc)
        )
    return AgentResult(
        reply="",
        exit_code=None,
        failure=FailureKind.AGENT_ERROR,
        failure_detail=redact(f"could not start {what!r} ({exc.strerror}); {fix}", env),
        unrunnable=True,
    )


def process_result(
    proc: ProcessResult,
    failure: Failure | None,
    env: Mapping[str, str],
    *,
    reply: str,
    session_id: str | None,
    **fields: Any,
) -> AgentResult:
    """The result of an agent process that ran: its `reply`, exit and time, the typed
    `failure`, and its transcript (stdout, then stderr), every text redacted of `env`'s
    secrets. `fields` are the runner's own (`tokens`, `commands`, ...)."""
    transcript = proc.stdout
    if proc.stderr.strip():
        transcript += f"\n--- stderr ---\n{proc.stderr}"
    return AgentResult(
        reply=redact(reply, env),
        exit_code=proc.exit_code,
        duration_s=proc.duration_s,
        session_id=session_id,
        failure=failure.kind if failure else None,
        failure_detail=redact(failure.detail, env) if failure else None,
        retry_at=failure.retry_at if failure else None,
        transcript=redact(transcript, env),
        stderr_tail=redact(last_line(proc.stderr), env),
        **fields,
    )
