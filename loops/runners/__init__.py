"""Agent runners: one seam (`AgentRunner`), four implementations.

A runner runs a coding agent once on a prompt in a worktree and reports what
happened as an `AgentResult`. It never raises for a failed run: a usage limit, an
outage, a timeout, an empty reply or a crash is a typed `failure` on the result,
so the loop worker applies one policy per kind (DESIGN.md invariant 6).

Specs accepted by `make_runner` (DESIGN.md, "Agents"):

- `claude`: the Claude Code CLI (`LOOPS_CLAUDE_BIN` overrides the binary);
- `anthropic`: a small tool-using agent on the Messages API;
- `command:CMD`: any program; the prompt on stdin and in `$LOOPS_PROMPT_FILE`;
- `script:FILE`: deterministic replay of a YAML script (see `loops/runners/README.md`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from events import AgentSign, ConfigError, FailureKind, TokenUsage
from events.secrets import redact
from infra.settings import Settings
from loops.sandbox import SandboxPolicy

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "INTERRUPTED_DETAIL",
    "AgentRequest",
    "AgentResult",
    "AgentRunner",
    "interrupted_result",
    "last_line",
    "make_runner",
    "redacted",
    "timed_out_result",
]

DEFAULT_TIMEOUT_S = 30 * 60.0
INTERRUPTED_DETAIL = "interrupted: the loop was stopped"  # failure_detail of a cancelled run


@dataclass(frozen=True)
class AgentRequest:
    """One run of an agent on one task.

    `iteration` is the loop's iteration number; `task_iteration` (1-based) counts the
    runs on this task only, and `script:` replays steps by it (it falls back to
    `iteration` when not given). `session_id` is the loop's own session, resumed by
    id (`--resume`), never "the newest one". `env` adds variables to the agent's
    environment. `sandbox` is how the agent is isolated (the worker always sets it);
    None runs its processes unsandboxed, for a runner used on its own. `on_activity`
    is told of each sign of life (a line of output, a tool call) and `on_spawn` of the
    pid of each agent process started (the worker's liveness; both from any thread).
    """

    prompt: str
    worktree: Path
    loop: str
    task_id: str
    iteration: int
    timeout_s: float = DEFAULT_TIMEOUT_S
    session_id: str | None = None
    model: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    task_iteration: int | None = None
    cancel: threading.Event | None = field(default=None, compare=False)  # set: stop the agent
    sandbox: SandboxPolicy | None = field(default=None, compare=False)
    on_activity: Callable[[AgentSign], None] | None = field(default=None, compare=False)
    on_spawn: Callable[[int], None] | None = field(default=None, compare=False)

    def signal(self, sign: AgentSign) -> None:
        """Report a sign of life of this run (no-op without a listener)."""
        if self.on_activity is not None:
            self.on_activity(sign)

    @property
    def step(self) -> int:
        """The 1-based number of this run on this task (for replay)."""
        return self.task_iteration if self.task_iteration is not None else self.iteration


@dataclass(frozen=True)
class AgentResult:
    """What one agent run produced. `failure` is None when the run itself worked.

    `reply` is the agent's final text (parse it with `loops.runners.outcome`);
    `commands` lists the tool calls and shell commands the agent ran, as one line
    each; `retry_at` is set for a usage limit when the agent said when it resets;
    `transcript` is the raw output, with secrets already redacted. `unrunnable`: the
    agent could not be started at all, and `failure_detail` says how to fix that; no
    retry helps until a person does.
    """

    reply: str
    exit_code: int | None = 0
    duration_s: float = 0.0
    session_id: str | None = None
    commands: list[str] = field(default_factory=list)
    permission_denials: int = 0
    tokens: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = None  # as the agent reported it (checked by `loops.cost`)
    model: str | None = None  # the model the agent said it ran
    failure: FailureKind | None = None
    failure_detail: str | None = None
    retry_at: datetime | None = None
    transcript: str = ""
    stderr_tail: str = ""  # the last non-empty line the agent printed on stderr
    unrunnable: bool = False  # the agent cannot start at all (missing, not executable)

    @property
    def ok(self) -> bool:
        return self.failure is None


def redacted(result: AgentResult) -> AgentResult:
    """`result` with every text the agent wrote redacted (invariant 7): what the worker
    publishes, prompts with and writes to transcripts, and what an agent host returns."""
    return replace(
        result,
        reply=redact(result.reply),
        failure_detail=redact(result.failure_detail) if result.failure_detail else None,
        transcript=redact(result.transcript),
        commands=[redact(c) for c in result.commands],
        stderr_tail=redact(result.stderr_tail),
    )


def inside(worktree: Path, name: str, error: Callable[[str], Exception]) -> Path:
    """The path `name` names in `worktree`, links resolved; `error(message)` is raised
    when it is outside (an agent's tool call or a script's step may name any path)."""
    root = worktree.resolve()
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise error(f"path {name!r} is outside the worktree")
    return target


def last_line(text: str) -> str:
    """The last non-empty line of `text`, stripped (for a one-line warning)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def interrupted_result(result: Callable[..., AgentResult]) -> AgentResult:
    """The result of a run cancelled because the loop is stopping (not counted)."""
    return result(
        exit_code=None, failure=FailureKind.AGENT_ERROR, failure_detail=INTERRUPTED_DETAIL
    )


def timed_out_result(
    result: Callable[..., AgentResult], request: AgentRequest, detail: str | None = None
) -> AgentResult:
    """The result of a run that exceeded `request.timeout_s`."""
    return result(
        exit_code=None,
        failure=FailureKind.TIMEOUT,
        failure_detail=detail or f"the agent exceeded its timeout of {request.timeout_s:g}s",
    )


@runtime_checkable
class AgentRunner(Protocol):
    """Runs a coding agent once. Implementations never raise for a failed run."""

    name: str

    def run(self, request: AgentRequest) -> AgentResult: ...


def make_runner(
    spec: str,
    *,
    model: str | None = None,
    permission_mode: str | None = None,
    skip_permissions: bool = False,
    base_dir: Path | None = None,
    client: Any = None,
    max_retries: int | None = None,
    max_steps: int | None = None,
    settings: Settings | None = None,
) -> AgentRunner:
    """Build the runner an agent spec names (`claude`, `anthropic`, `command:CMD`, `script:FILE`).

    `model` is the default model (a request's own `model` wins). `permission_mode` and
    `skip_permissions` apply to `claude`; `client`, `max_retries` and `max_steps` to
    `anthropic`; `base_dir` resolves a relative `script:` path; `settings` configure
    `claude` and `anthropic`. Raises `ConfigError` with a one-line message for anything
    else.

    Without `settings`, the defaults: callers pass theirs (built once by the CLI, or by
    `loops.jobs.run_iteration` from its host's environment).
    """
    text = spec.strip()
    kind, sep, arg = text.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind in {"claude", "anthropic"} and not sep:
        settings = settings or Settings()  # the caller's, else the defaults
    if kind == "claude" and not sep:
        from loops.runners.claude import ClaudeRunner

        return ClaudeRunner(
            model=model,
            permission_mode=permission_mode,
            skip_permissions=skip_permissions,
            settings=settings,
        )
    if kind == "anthropic" and not sep:
        from loops.runners.anthropic_agent import AnthropicRunner

        return AnthropicRunner(
            model=model,
            client=client,
            max_retries=2 if max_retries is None else max_retries,
            max_steps=max_steps or 50,
            settings=settings,
        )
    if kind == "command" and sep:
        if not arg:
            raise ConfigError("agent 'command:' needs a command line, e.g. 'command:codex exec -'")
        from loops.runners.command import CommandRunner

        return CommandRunner(arg)
    if kind == "script" and sep:
        if not arg:
            raise ConfigError("agent 'script:' needs a file, e.g. 'script:demo/agent.yaml'")
        from loops.runners.script import ScriptRunner

        path = Path(arg).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        return ScriptRunner(path)
    raise ConfigError(
        f"unknown agent {spec!r}: use 'claude', 'anthropic', 'command:CMD' or 'script:FILE'"
    )
