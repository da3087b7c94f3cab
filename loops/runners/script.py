"""`script:FILE`: a deterministic replay of recorded agent steps, for demos and tests.

The format is documented in `loops/runners/README.md`. In short:

```yaml
default:                 # steps for any task not listed under `tasks`
  - reply: "Nothing to do. <promise>done</promise>"
tasks:
  T-1:
    - reply: "Looking around."             # run 1 on T-1
    - write: {hello.py: "print('hi')\\n"}   # run 2
      run: python hello.py
      reply: "<promise>hello works</promise>"
```

Run N on a task replays step N (`AgentRequest.step`); when the steps run out, the last
one repeats. A step with `when_prompt: TEXT` is only taken once the prompt contains TEXT
(a person's answer, the monitor's hint); until then the step before it repeats. A step
failing with `usage_limit` or `outage` does not count as an iteration in the loop
worker, so it is consumed once and remembered in a small state file (inside the
worktree's git directory), which survives a worker restart.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from events import ConfigError, FailureKind, TokenUsage
from events.secrets import redact
from infra.files import write_text_atomic
from loops.runners import (
    AgentRequest,
    AgentResult,
    inside,
    interrupted_result,
    timed_out_result,
)
from loops.runners.launch import Launch, launch
from loops.sandbox import SandboxUnavailable

STATE_NAME = "loops-script-state.json"


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Replace(_Model):
    """Replace the exact text `old` by `new` in `path` (once; `old` must be present)."""

    path: str
    old: str = Field(min_length=1)
    new: str


class Tokens(_Model):
    input: int = Field(default=0, ge=0)
    output: int = Field(default=0, ge=0)


FailName = Literal["usage_limit", "outage", "timeout", "empty", "crash"]


class Step(_Model):
    """One run of the scripted agent. Actions happen in the order of the fields below."""

    write: dict[str, str] = Field(default_factory=dict)
    append: dict[str, str] = Field(default_factory=dict)
    replace: list[Replace] = Field(default_factory=list)
    delete: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    run: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    sleep: float = Field(default=0.0, ge=0)
    reply: str | None = None
    fail: FailName | None = None
    retry_after: float | None = Field(default=None, ge=0)
    detail: str | None = None
    when_prompt: str | None = None  # only once the prompt contains this (a hint, an answer)
    tokens: Tokens = Tokens()
    cost_usd: float | None = Field(default=None, ge=0)


class Script(_Model):
    default: list[Step] = Field(default_factory=list)
    tasks: dict[str, list[Step]] = Field(default_factory=dict)

    def steps_for(self, task_id: str) -> list[Step]:
        return self.tasks.get(task_id) or self.default


def load_script(path: Path) -> Script:
    """Read and validate a script file. Raises ConfigError (one line) when it is unusable."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"agent script {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"agent script {path}: not valid YAML ({_yaml_where(exc)})") from exc
    if isinstance(data, list):
        data = {"default": data}
    try:
        script = Script.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"agent script {path}: {where}: {err['msg']}") from exc
    if not script.default and not any(script.tasks.values()):
        raise ConfigError(f"agent script {path}: no steps; add a `default:` or `tasks:` list")
    return script


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}" if mark is not None else str(exc).splitlines()[0]


_SKIPPED_FAILS = ("usage_limit", "outage")  # the worker does not count these runs


class ScriptRunner:
    """Replays `path` (see the module docstring). Loads and validates it up front."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.script = load_script(path)
        self.name = f"script:{path}"
        self._memory: dict[str, dict[str, list[int]]] = {}

    def run(self, request: AgentRequest) -> AgentResult:
        with launch(request) as agent:
            return self._run(request, agent)

    def _run(self, request: AgentRequest, agent: Launch) -> AgentResult:
        start = time.monotonic()
        steps = self.script.steps_for(request.task_id)
        session = request.session_id or f"script-{request.loop}-{request.task_id}"
        if not steps:
            return AgentResult(
                reply="",
                session_id=session,
                failure=FailureKind.EMPTY_REPLY,
                failure_detail=f"agent script {self.path} has no steps for task {request.task_id}",
            )
        index, step = self._next_step(request, steps)
        env = agent.env
        log: list[str] = [f"# script step {index + 1} of {len(steps)} for {request.task_id}"]
        commands: list[str] = []
        deadline = start + request.timeout_s

        def result(**kwargs: Any) -> AgentResult:
            fields: dict[str, Any] = {
                "reply": "",
                "duration_s": time.monotonic() - start,
                "session_id": session,
                "commands": commands,
                "tokens": TokenUsage(
                    input_tokens=step.tokens.input, output_tokens=step.tokens.output
                ),
                "cost_usd": step.cost_usd,
                "transcript": redact("\n".join(log), env),
            }
            fields.update(kwargs)
            if fields["reply"]:
                log.append(str(fields["reply"]))
                fields["transcript"] = redact("\n".join(log), env)
            return AgentResult(**fields)

        try:
            self._edit(request.worktree, step, log)
        except _StepError as exc:
            return result(exit_code=1, failure=FailureKind.AGENT_ERROR, failure_detail=str(exc))
        for command in step.run:
            commands.append(command)
            remaining = deadline - time.monotonic()
            try:
                proc = agent.run(["/bin/sh", "-c", command], timeout_s=max(remaining, 0.01))
            except SandboxUnavailable as exc:
                return result(
                    exit_code=None, failure=FailureKind.AGENT_ERROR, failure_detail=str(exc)
                )
            log.append(f"$ {command}\n{proc.stdout}{proc.stderr}[exit {proc.exit_code}]")
            if proc.cancelled:
                return interrupted_result(result)
            if proc.timed_out:
                return timed_out_result(result, request)
        if step.sleep:
            wait = threading.Event().wait if request.cancel is None else request.cancel.wait
            if wait(min(step.sleep, max(deadline - time.monotonic(), 0))):
                return interrupted_result(result)
            if time.monotonic() >= deadline:
                return timed_out_result(result, request)
        return self._finish(step, index, request, result)

    def _finish(
        self, step: Step, index: int, request: AgentRequest, result: Callable[..., AgentResult]
    ) -> AgentResult:
        detail = step.detail
        match step.fail:
            case "usage_limit":
                retry_at = (
                    datetime.now(UTC) + timedelta(seconds=step.retry_after)
                    if step.retry_after is not None
                    else None
                )
                stamp = f"|{int(retry_at.timestamp())}" if retry_at else ""
                return result(
                    reply=f"Claude AI usage limit reached{stamp}",
                    exit_code=1,
                    failure=FailureKind.USAGE_LIMIT,
                    failure_detail=detail or "usage limit reached (scripted)",
                    retry_at=retry_at,
                )
            case "outage":
                return result(
                    exit_code=1,
                    failure=FailureKind.OUTAGE,
                    failure_detail=detail or "API Error: 529 overloaded (scripted)",
                )
            case "timeout":
                return timed_out_result(result, request, detail)
            case "empty":
                return result(
                    failure=FailureKind.EMPTY_REPLY,
                    failure_detail=detail or "the agent's reply was empty (scripted)",
                )
            case "crash":
                return result(
                    exit_code=1,
                    failure=FailureKind.AGENT_ERROR,
                    failure_detail=detail or "the agent crashed (scripted)",
                )
        reply = step.reply if step.reply is not None else f"(script step {index + 1})"
        return result(reply=reply, exit_code=0)

    # --- which step -----------------------------------------------------------------

    def _next_step(self, request: AgentRequest, steps: list[Step]) -> tuple[int, Step]:
        """Step index = runs counted on this task + uncounted failures already replayed."""
        state = self._load_state(request.worktree)
        fired = state.setdefault(request.loop, {}).setdefault(request.task_id, [])
        index = max(request.step - 1, 0) + len(fired)
        index = min(index, len(steps) - 1)
        # A step waiting for something in the prompt (a person's answer, the monitor's
        # hint) is not reached before it is there: the agent stays where it was.
        while index > 0:
            wanted = steps[index].when_prompt
            if wanted is None or wanted in request.prompt:
                break
            index -= 1
        step = steps[index]
        if step.fail in _SKIPPED_FAILS and index not in fired:
            fired.append(index)
            self._save_state(request.worktree, state)
        return index, step

    def _state_file(self, worktree: Path) -> Path | None:
        dot_git = worktree / ".git"
        if dot_git.is_dir():
            return dot_git / STATE_NAME
        if dot_git.is_file():  # a linked worktree: "gitdir: /repo/.git/worktrees/<name>"
            text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                gitdir = Path(text.partition(":")[2].strip())
                return (gitdir if gitdir.is_absolute() else worktree / gitdir) / STATE_NAME
        if worktree.parent != worktree:
            return worktree.parent / f".{worktree.name}.{STATE_NAME}"
        return None

    def _load_state(self, worktree: Path) -> dict[str, dict[str, list[int]]]:
        path = self._state_file(worktree)
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}
        return {
            loop: {t: list(f) for t, f in tasks.items()} for loop, tasks in self._memory.items()
        }

    def _save_state(self, worktree: Path, state: dict[str, dict[str, list[int]]]) -> None:
        self._memory = state
        path = self._state_file(worktree)
        if path is None:
            return
        with contextlib.suppress(OSError):
            write_text_atomic(path, json.dumps(state, sort_keys=True))

    # --- file edits -----------------------------------------------------------------

    def _edit(self, worktree: Path, step: Step, log: list[str]) -> None:
        for name, content in step.write.items():
            target = _inside(worktree, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            log.append(f"write {name} ({len(content)} chars)")
        for name, content in step.append.items():
            target = _inside(worktree, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a", encoding="utf-8") as fh:
                fh.write(content)
            log.append(f"append {name} ({len(content)} chars)")
        for edit in step.replace:
            target = _inside(worktree, edit.path)
            try:
                text = target.read_text(encoding="utf-8")
            except OSError as exc:
                raise _StepError(f"script step: cannot read {edit.path}: {exc.strerror}") from exc
            if edit.old not in text:
                raise _StepError(f"script step: text to replace not found in {edit.path}")
            target.write_text(text.replace(edit.old, edit.new, 1), encoding="utf-8")
            log.append(f"replace in {edit.path}")
        for name in step.delete:
            target = _inside(worktree, name)
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            log.append(f"delete {name}")


class _StepError(Exception):
    """Raised when a scripted edit cannot be applied (reported as AGENT_ERROR)."""


def _inside(worktree: Path, name: str) -> Path:
    return inside(worktree, name, lambda message: _StepError(f"script step: {message}"))
