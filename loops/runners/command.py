"""`command:CMD`: any agent CLI (codex, aider, gemini, a shell script) under DESIGN.md's contract.

- The command line runs through `/bin/sh -c`, so it may use `$LOOPS_PROMPT_FILE`.
- The prompt arrives on stdin and in the file `$LOOPS_PROMPT_FILE` (outside the worktree,
  removed afterwards).
- Environment: `LOOPS_LOOP`, `LOOPS_TASK_ID`, `LOOPS_ITERATION`, `LOOPS_WORKTREE`, plus
  the request's own `env`.
- It runs in the loop's worktree; its stdout is the reply.
- The timeout kills its whole process group.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from events import FailureKind
from events.secrets import redact
from loops.runners import INTERRUPTED_DETAIL, AgentRequest, AgentResult
from loops.runners.outcome import Failure, classify_run
from loops.runners.process import run_process


def agent_env(request: AgentRequest, **extra: str) -> dict[str, str]:
    """The environment of an agent process: ours, the request's, and the LOOPS_* contract."""
    env = dict(os.environ)
    env.update(request.env)
    env.update(
        LOOPS_LOOP=request.loop,
        LOOPS_TASK_ID=request.task_id,
        LOOPS_ITERATION=str(request.iteration),
        LOOPS_WORKTREE=str(request.worktree),
    )
    env.update(extra)
    return env


class CommandRunner:
    """Runs `command` (a shell command line) once per iteration."""

    def __init__(self, command: str, *, shell: str = "/bin/sh") -> None:
        self.command = command
        self.shell = shell
        # The name goes into events: a key written on the command line must not.
        self.name = f"command:{redact(command)}"

    def run(self, request: AgentRequest) -> AgentResult:
        tmp = Path(tempfile.mkdtemp(prefix="loops-prompt-"))
        try:
            prompt_file = tmp / "prompt.md"
            prompt_file.write_text(request.prompt, encoding="utf-8")
            env = agent_env(request, LOOPS_PROMPT_FILE=str(prompt_file))
            try:
                proc = run_process(
                    [self.shell, "-c", self.command],
                    cwd=request.worktree,
                    env=env,
                    stdin_text=request.prompt,
                    timeout_s=request.timeout_s,
                    cancel=request.cancel,
                )
            except OSError as exc:
                return AgentResult(
                    reply="",
                    exit_code=None,
                    failure=FailureKind.AGENT_ERROR,
                    failure_detail=redact(f"could not start {self.command!r}: {exc}", env),
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        failure = (
            Failure(FailureKind.AGENT_ERROR, INTERRUPTED_DETAIL)
            if proc.cancelled
            else classify_run(
                exit_code=proc.exit_code,
                reply=proc.stdout,
                stderr=proc.stderr,
                timed_out=proc.timed_out,
                timeout_s=request.timeout_s,
                now=datetime.now(UTC),
            )
        )
        transcript = proc.stdout
        if proc.stderr.strip():
            transcript += f"\n--- stderr ---\n{proc.stderr}"
        return AgentResult(
            reply=redact(proc.stdout, env),
            exit_code=proc.exit_code,
            duration_s=proc.duration_s,
            session_id=request.session_id,
            failure=failure.kind if failure else None,
            failure_detail=redact(failure.detail, env) if failure else None,
            retry_at=failure.retry_at if failure else None,
            transcript=redact(transcript, env),
        )
