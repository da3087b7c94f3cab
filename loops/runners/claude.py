"""`claude`: the Claude Code CLI, driven headless with `--output-format stream-json`.

- The prompt goes on stdin with `-p`; `--verbose` is required by stream-json.
- Each loop resumes its own session with `--resume <session-id>`; never `--continue`,
  which takes whichever session on the machine is newest.
- The stream is parsed as it arrives (`StreamParser`): the session id (system init),
  tool calls (assistant `tool_use` blocks), the final `result` with its text, cost,
  token usage and permission denials, API errors (`"error": "rate_limit"`,
  `api_error_status`) and `rate_limit_event`s.
- A per-call timeout kills the CLI's whole process group.
- `LOOPS_CLAUDE_BIN` overrides the binary (it may hold arguments: `node /x/cli.js`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from events import AgentSign, ConfigError, FailureKind, TokenUsage, checked_tokens
from infra.settings import Settings
from loops.runners import INTERRUPTED_DETAIL, AgentRequest, AgentResult
from loops.runners.launch import cannot_start, launch, process_result
from loops.runners.outcome import (
    Failure,
    classify_run,
    detect_outage,
    detect_usage_limit,
    parse_reset,
)
from loops.sandbox import SandboxUnavailable

PERMISSION_MODES = (
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "default",
    "dontAsk",
    "manual",
    "plan",
)
# `LOOPS_CLAUDE_PERMISSION_MODE=skip` means --dangerously-skip-permissions.
SKIP_PERMISSIONS = ("skip", "dangerously-skip-permissions")
DEFAULT_PERMISSION_MODE = "acceptEdits"
_UNKNOWN_SESSION = re.compile(
    r"no conversation found with session id|session .{0,40}not found|unknown session",
    re.IGNORECASE,
)


@dataclass
class StreamParser:
    """Reads Claude Code's stream-json one line at a time (thread-safe)."""

    session_id: str | None = None
    model: str | None = None
    result_text: str | None = None
    last_text: str = ""
    is_error: bool = False
    subtype: str | None = None
    api_error_status: int | None = None
    api_error: str | None = None  # the assistant message's "error" ("rate_limit", ...)
    tools: list[str] = field(default_factory=list)
    permission_denials: int = 0
    tokens: TokenUsage | None = None
    cost_usd: float | None = None
    rate_limited: bool = False
    resets_at: datetime | None = None
    _usage_by_message: dict[str, TokenUsage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def feed(self, line: str) -> None:
        line = line.strip()
        if not line.startswith("{"):
            return
        try:
            event = json.loads(line)
        except ValueError:
            return  # a torn line (a rate_limit_event written into another); skip it
        if isinstance(event, dict):
            with self._lock:
                self._handle(event)

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if isinstance(event.get("session_id"), str) and event["session_id"]:
            self.session_id = event["session_id"]
        if kind == "system" and event.get("subtype") == "init":
            self.model = event.get("model") or self.model
        elif kind == "assistant":
            self._assistant(event)
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info") or {}
            if isinstance(info, dict) and info.get("status") not in (
                None,
                "allowed",
                "allowed_warning",
            ):
                self.rate_limited = True
                self.resets_at = _epoch(info.get("resetsAt")) or self.resets_at
        elif kind == "result":
            self._result(event)

    def _assistant(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("error"), str):
            self.api_error = event["error"]
        if isinstance(event.get("api_error_status"), int):
            self.api_error_status = event["api_error_status"]
        message = event.get("message") or {}
        if not isinstance(message, dict):
            return
        texts = []
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_use":
                self.tools.append(_tool_line(block))
        if texts:
            self.last_text = "\n".join(texts)
        usage = message.get("usage")
        if isinstance(usage, dict) and message.get("id"):
            # One event per content block, each repeating the message's usage: keep one.
            self._usage_by_message[str(message["id"])] = _tokens(usage)

    def _result(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("result"), str):
            self.result_text = event["result"]
        self.is_error = bool(event.get("is_error"))
        self.subtype = event.get("subtype")
        if isinstance(event.get("api_error_status"), int):
            self.api_error_status = event["api_error_status"]
        cost = event.get("total_cost_usd", event.get("cost_usd"))
        if isinstance(cost, int | float) and math.isfinite(cost):
            self.cost_usd = float(cost)
        if isinstance(event.get("usage"), dict):
            self.tokens = _tokens(event["usage"])
        denials = event.get("permission_denials")
        if isinstance(denials, list):
            self.permission_denials = len(denials)

    @property
    def reply(self) -> str:
        return self.result_text if self.result_text is not None else self.last_text

    @property
    def usage(self) -> TokenUsage:
        if self.tokens is not None:
            return self.tokens
        parts = list(self._usage_by_message.values())
        return TokenUsage(
            input_tokens=sum(p.input_tokens for p in parts),
            output_tokens=sum(p.output_tokens for p in parts),
            cache_read_tokens=sum(p.cache_read_tokens for p in parts),
            cache_write_tokens=sum(p.cache_write_tokens for p in parts),
        )

    def failure(self, exit_code: int | None, stderr: str, now: datetime) -> Failure | None:
        """The typed failure of the run this stream came from, or None."""
        text = self.reply
        # Error markers seen on the way only count when the run did not end well: the
        # CLI may hit a limit, retry, and still finish the work.
        ended_badly = self.is_error or self.result_text is None or exit_code not in (0, None)
        limited = (
            self.rate_limited or self.api_error == "rate_limit" or self.api_error_status == 429
        )
        if ended_badly and limited:
            retry_at = self.resets_at or parse_reset(f"{text}\n{stderr}", now)
            detail = _first_line(text) or "rate limit reached"
            return Failure(FailureKind.USAGE_LIMIT, detail, retry_at)
        status = self.api_error_status
        if ended_badly and (
            (status is not None and status >= 500)
            or self.api_error in ("server_error", "overloaded")
        ):
            return Failure(FailureKind.OUTAGE, _first_line(text) or f"API error {status}")
        if self.is_error:
            combined = f"{text}\n{stderr}"
            found = detect_usage_limit(combined, now) or detect_outage(combined)
            if found is None:
                detail = _first_line(text) or f"claude reported an error ({self.subtype})"
                return Failure(FailureKind.AGENT_ERROR, detail)
        else:
            found = classify_run(exit_code=exit_code, reply=text, stderr=stderr, now=now)
        if found is not None and found.kind is FailureKind.USAGE_LIMIT and found.retry_at is None:
            return Failure(found.kind, found.detail, self.resets_at)
        return found


class ClaudeRunner:
    """The `claude` agent. `permission_mode` or `skip_permissions` decide what it may do.

    Without either, the settings' `LOOPS_CLAUDE_PERMISSION_MODE` decides (a mode, or
    `skip`), else `acceptEdits`. `LOOPS_CLAUDE_ARGS` adds arguments (e.g. `--allowedTools
    "Bash(pytest *)"`). `settings` come from the caller (`make_runner`).
    """

    name = "claude"

    def __init__(
        self,
        *,
        model: str | None = None,
        permission_mode: str | None = None,
        skip_permissions: bool = False,
        binary: str | None = None,
        extra_args: list[str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings()  # the caller's, else the defaults
        if permission_mode is None and not skip_permissions:
            permission_mode = settings.claude_permission_mode
        if permission_mode in SKIP_PERMISSIONS:
            permission_mode, skip_permissions = None, True
        if permission_mode is not None and permission_mode not in PERMISSION_MODES:
            raise ConfigError(
                f"unknown Claude Code permission mode {permission_mode!r}: use one of "
                f"{', '.join(PERMISSION_MODES)}, or 'skip' for --dangerously-skip-permissions"
            )
        self.model = model
        self.permission_mode = permission_mode
        self.skip_permissions = skip_permissions
        self.binary = _split("LOOPS_CLAUDE_BIN", binary or settings.claude_bin or "claude") or [
            "claude"
        ]
        env_args = _split("LOOPS_CLAUDE_ARGS", settings.claude_args)
        self.extra_args = list(extra_args if extra_args is not None else env_args)
        self.is_sandbox = settings.is_sandbox

    def command(self, request: AgentRequest, *, resume: bool = True) -> list[str]:
        """The argv for one run (the prompt goes on stdin)."""
        argv = [*self.binary, "-p", "--output-format", "stream-json", "--verbose"]
        if self.skip_permissions:
            argv.append("--dangerously-skip-permissions")
        else:
            argv += ["--permission-mode", self.permission_mode or DEFAULT_PERMISSION_MODE]
        model = request.model or self.model
        if model:
            argv += ["--model", model]
        if resume and request.session_id:
            argv += ["--resume", request.session_id]
        return argv + self.extra_args

    def run(self, request: AgentRequest) -> AgentResult:
        result = self._run_once(request, resume=True)
        cancelled = request.cancel is not None and request.cancel.is_set()
        if request.session_id and not cancelled and _session_unknown(result):
            # The session is gone (another machine, a wiped config dir): start afresh
            # rather than failing every iteration on a stale id.
            fresh = self._run_once(request, resume=False)
            return AgentResult(
                **{**fresh.__dict__, "transcript": result.transcript + "\n" + fresh.transcript}
            )
        return result

    def _run_once(self, request: AgentRequest, *, resume: bool) -> AgentResult:
        argv = self.command(request, resume=resume)
        parser = StreamParser()
        # Claude Code skips permission prompts as root only with IS_SANDBOX=1; an
        # operator who set it means it for the agent, so it passes the allow-list.
        marked = (
            {"IS_SANDBOX": self.is_sandbox}
            if self.is_sandbox is not None and "IS_SANDBOX" not in request.env
            else {}
        )

        def feed(line: str) -> None:
            tools = len(parser.tools)
            parser.feed(line)
            if len(parser.tools) > tools:
                request.signal(AgentSign.TOOL_CALL)

        with launch(request, **marked) as run:
            env = run.env
            missing = _cannot_run(argv[0], env.get("PATH"))
            if missing:  # inside the sandbox this would only be bwrap's exit 1
                return AgentResult(
                    reply="",
                    exit_code=None,
                    failure=FailureKind.AGENT_ERROR,
                    failure_detail=f"could not start {argv[0]!r}: {missing}; install Claude "
                    "Code (npm install -g @anthropic-ai/claude-code) or point LOOPS_CLAUDE_BIN "
                    "at it",
                    unrunnable=True,
                )
            try:
                proc = run.run(
                    argv,
                    stdin_text=request.prompt,
                    on_stdout_line=feed,
                    writable=config_paths(env) if request.sandbox is not None else (),
                )
            except (SandboxUnavailable, OSError) as exc:
                return cannot_start(exc, argv[0], "install Claude Code or set LOOPS_CLAUDE_BIN")
        now = datetime.now(UTC)
        if proc.cancelled:
            failure: Failure | None = Failure(FailureKind.AGENT_ERROR, INTERRUPTED_DETAIL)
        elif proc.timed_out:
            failure = Failure(
                FailureKind.TIMEOUT,
                f"claude exceeded its timeout of {request.timeout_s:g}s; its process group was killed",
            )
        else:
            failure = parser.failure(proc.exit_code, proc.stderr, now)
        return process_result(
            proc,
            failure,
            env,
            reply=parser.reply,
            session_id=parser.session_id or request.session_id,
            commands=list(parser.tools),
            permission_denials=parser.permission_denials,
            tokens=parser.usage,
            cost_usd=parser.cost_usd,
            model=parser.model,
        )


def _cannot_run(program: str, path: str | None) -> str | None:
    """Why `program` cannot be started (not found on PATH, not executable), or None."""
    if os.sep in program:
        if not os.path.isfile(program):
            return "no such file"
        return None if os.access(program, os.X_OK) else "not executable (chmod +x it)"
    if shutil.which(program, path=path) is not None:
        return None
    if shutil.which(program, mode=os.F_OK, path=path) is not None:
        return "found on PATH but not executable (chmod +x it)"
    return "not found on PATH"


def config_paths(env: Mapping[str, str]) -> list[Path]:
    """Where Claude Code keeps its settings, logins and sessions (writable in the
    sandbox, so `--resume` and subscription logins work): `$CLAUDE_CONFIG_DIR`, else
    `~/.claude` and `~/.claude.json`. Created when missing, so they can be mounted."""
    configured = env.get("CLAUDE_CONFIG_DIR")
    if configured:
        paths = [Path(configured).expanduser()]
    else:
        home = Path(env.get("HOME") or Path.home())
        paths = [home / ".claude", home / ".claude.json"]
    found: list[Path] = []
    for path in paths:
        try:
            if path.suffix == ".json":
                if not path.exists():
                    path.write_text("{}\n", encoding="utf-8")
            else:
                path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue  # a read-only home: the CLI then runs without saving
        found.append(path)
    return found


def _split(name: str, value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} cannot be split into arguments: {exc}") from exc


def _session_unknown(result: AgentResult) -> bool:
    if result.failure is not FailureKind.AGENT_ERROR:
        return False
    return bool(_UNKNOWN_SESSION.search(f"{result.failure_detail}\n{result.transcript}"))


def _tool_line(block: dict[str, Any]) -> str:
    name = str(block.get("name") or "tool")
    args = block.get("input") if isinstance(block.get("input"), dict) else {}
    assert isinstance(args, dict)
    for key in ("command", "file_path", "path", "pattern", "url", "description", "prompt"):
        value = args.get(key)
        if isinstance(value, str) and value:
            return f"{name}: {_first_line(value)[:300]}"
    return name


def _tokens(usage: dict[str, Any]) -> TokenUsage:
    def n(key: str) -> int:
        return checked_tokens(usage.get(key))

    return TokenUsage(
        input_tokens=n("input_tokens"),
        output_tokens=n("output_tokens"),
        cache_read_tokens=n("cache_read_input_tokens"),
        cache_write_tokens=n("cache_creation_input_tokens"),
    )


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value / 1000 if value > 10**11 else value, UTC)
    return None


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""
