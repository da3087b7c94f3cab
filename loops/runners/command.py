"""`command:CMD`: any agent CLI (codex, aider, gemini, a shell script) under DESIGN.md's contract.

- The command line runs through `/bin/sh -c`, so it may use `$LOOPS_PROMPT_FILE`.
- The prompt arrives on stdin and in the file `$LOOPS_PROMPT_FILE` (in the run's
  private `$TMPDIR`, outside the worktree, removed afterwards).
- Environment: an allow-list (`loops.runners.launch.agent_env`) plus `LOOPS_LOOP`,
  `LOOPS_TASK_ID`, `LOOPS_ITERATION`, `LOOPS_WORKTREE`, `TMPDIR` and the request's own `env`.
- It runs in the loop's worktree, in the sandbox; its stdout is the reply.
- The timeout kills its whole process group (and, sandboxed, its PID namespace).
- Usage: if it prints Claude Code's stream-json, the tokens, `total_cost_usd` and model
  in it are its report (`loops.cost` prices tokens without a cost from the table).
"""

from __future__ import annotations

from datetime import UTC, datetime

from events import FailureKind
from events.secrets import redact
from loops.runners import INTERRUPTED_DETAIL, AgentRequest, AgentResult, last_line
from loops.runners.claude import StreamParser
from loops.runners.launch import agent_env, cannot_start, launch, process_result
from loops.runners.outcome import Failure, classify_run
from loops.sandbox import SandboxUnavailable

__all__ = ["CommandRunner", "agent_env"]

CANNOT_RUN = (126, 127)  # sh: found but not executable; not found
FIX = "fix the command (--agent, or `agent` in the loop's config.json) and run again"


class CommandRunner:
    """Runs `command` (a shell command line) once per iteration."""

    def __init__(self, command: str, *, shell: str = "/bin/sh") -> None:
        self.command = command
        self.shell = shell
        # The name goes into events: a key written on the command line must not.
        self.name = f"command:{redact(command)}"

    def run(self, request: AgentRequest) -> AgentResult:
        with launch(request) as run:
            env = run.env
            try:
                proc = run.run([self.shell, "-c", self.command], stdin_text=request.prompt)
            except (SandboxUnavailable, OSError) as exc:
                return cannot_start(exc, self.command, FIX, env)
        tail = last_line(proc.stderr)
        if proc.exit_code in CANNOT_RUN and not proc.stdout.strip():
            # The shell's own verdict: 127 not found, 126 found but not executable.
            why = "not found" if proc.exit_code == 127 else "not executable (chmod +x it)"
            detail = f"the agent command {self.command!r} cannot start: {why}"
            return AgentResult(
                reply="",
                exit_code=proc.exit_code,
                duration_s=proc.duration_s,
                failure=FailureKind.AGENT_ERROR,
                failure_detail=redact(
                    f"{detail} ({tail}); {FIX}" if tail else f"{detail}; {FIX}", env
                ),
                transcript=redact(proc.stderr, env),
                stderr_tail=redact(tail, env),
                unrunnable=True,
            )
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
        # An agent that prints Claude Code's stream-json reports its usage in it.
        usage = StreamParser()
        for line in proc.stdout.splitlines():
            usage.feed(line)
        return process_result(
            proc,
            failure,
            env,
            reply=proc.stdout,
            session_id=request.session_id,
            tokens=usage.usage,
            cost_usd=usage.cost_usd,
            model=usage.model,
        )
