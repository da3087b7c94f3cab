"""`anthropic`: a small tool-using coding agent on the Messages API (`anthropic` SDK).

The model gets five tools confined to the worktree: read_file, write_file, edit_file
(exact string replacement), list_files and run_shell (with a timeout and an output
cap). The agent loops until the model answers without a tool call, or `max_steps`.
`ANTHROPIC_BASE_URL` and `ANTHROPIC_API_KEY` are read by the SDK; every request has
an explicit timeout, bounded by what is left of the run's own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic

from events import AgentSign, ConfigError, FailureKind, TokenUsage
from events.secrets import redact
from infra.settings import Settings, secret
from loops.runners import (
    AgentRequest,
    AgentResult,
    inside,
    interrupted_result,
    timed_out_result,
)
from loops.runners.launch import Launch, launch
from loops.runners.outcome import detect_usage_limit, retry_at_from_headers
from loops.sandbox import SandboxUnavailable

DEFAULT_MODEL = "claude-sonnet-4-6"
OUTPUT_CAP = 20_000  # characters of a tool result the model sees
LIST_CAP = 500  # entries of list_files

SYSTEM = """You are a coding agent working in a git worktree at {worktree}.
Use the tools to read, change and test the code; paths are relative to the worktree.
Work until the task in the user's message is done, then reply with a short summary
and the completion marker the task asks for. If you cannot proceed without a person,
reply with a line `BLOCKED: <your question>`."""

TOOLS: list[dict[str, Any]] = [
    {
        "name": "read_file",
        "description": "Read a text file of the worktree.",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    },
    {
        "name": "write_file",
        "description": "Create or overwrite a file of the worktree with `content`.",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    {
        "name": "edit_file",
        "description": "Replace the exact text `old` (which must occur once) by `new` in a file.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old": {"type": "string"},
                "new": {"type": "string"},
            },
            "required": ["path", "old", "new"],
        },
    },
    {
        "name": "list_files",
        "description": "List the files under a directory of the worktree (default: all).",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
    {
        "name": "run_shell",
        "description": "Run a shell command in the worktree; returns exit code and output.",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
]


class ToolError(Exception):
    """Raised when a tool call cannot be carried out; the model sees the message."""


@dataclass
class _Run:
    request: AgentRequest
    deadline: float
    agent: Launch  # TMPDIR, environment and sandbox of the shell tool's commands
    commands: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    tokens: dict[str, int] = field(
        default_factory=lambda: {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    )

    @property
    def env(self) -> dict[str, str]:
        return self.agent.env

    def usage(self) -> TokenUsage:
        t = self.tokens
        return TokenUsage(
            input_tokens=t["input"],
            output_tokens=t["output"],
            cache_read_tokens=t["cache_read"],
            cache_write_tokens=t["cache_write"],
        )


class AnthropicRunner:
    """The `anthropic` agent. `client` is an `anthropic.Anthropic`; built from the key and
    base URL of `settings` (the caller's, `make_runner`) if None."""

    name = "anthropic"

    def __init__(
        self,
        *,
        model: str | None = None,
        client: anthropic.Anthropic | None = None,
        max_retries: int = 2,
        max_steps: int = 50,
        max_tokens: int = 8192,
        request_timeout_s: float = 300.0,
        shell_timeout_s: float = 300.0,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings()  # the caller's, else the defaults
        if client is None and not (settings.api_key or secret(settings.anthropic_auth_token)):
            raise ConfigError(
                "agent 'anthropic' needs ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the environment"
            )
        self.model = model
        self.max_retries = max_retries
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.request_timeout_s = request_timeout_s
        self.shell_timeout_s = shell_timeout_s
        self._client = client
        self._owns_client = client is None
        self._api_key = settings.api_key
        self._auth_token = secret(settings.anthropic_auth_token)
        self._base_url = settings.anthropic_base_url

    @property
    def client(self) -> anthropic.Anthropic:
        if self._client is None:
            self._client = anthropic.Anthropic(
                api_key=self._api_key,
                auth_token=self._auth_token,
                base_url=self._base_url,
                max_retries=self.max_retries,
                timeout=self.request_timeout_s,
            )
        return self._client

    def close(self) -> None:
        """Close the HTTP client this runner built (a client passed in is the caller's)."""
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    def run(self, request: AgentRequest) -> AgentResult:
        with launch(request) as agent:
            return self._run(request, agent)

    def _run(self, request: AgentRequest, agent: Launch) -> AgentResult:
        start = time.monotonic()
        run = _Run(request, start + request.timeout_s, agent)
        model = request.model or self.model or DEFAULT_MODEL
        messages: list[dict[str, Any]] = [{"role": "user", "content": request.prompt}]
        system = SYSTEM.format(worktree=request.worktree)
        reply = ""

        def result(**kw: Any) -> AgentResult:
            text = redact(kw.pop("reply", reply), run.env)
            detail = kw.pop("failure_detail", None)
            return AgentResult(
                reply=text,
                exit_code=kw.pop("exit_code", 0),
                duration_s=time.monotonic() - start,
                commands=run.commands,
                tokens=run.usage(),
                model=model,  # priced from the table: the API reports no cost
                failure_detail=redact(detail, run.env) if detail else None,
                transcript=redact("\n".join(run.log), run.env),
                **kw,
            )

        for _ in range(self.max_steps):
            if _cancelled(request):
                return interrupted_result(result)
            remaining = run.deadline - time.monotonic()
            if remaining <= 0:
                return timed_out_result(result, request)
            try:
                message = self._ask(model, system, messages, min(remaining, self.request_timeout_s))
            except anthropic.APIError as exc:
                return self._api_failure(exc, result, request)
            request.signal(AgentSign.OUTPUT)  # the model answered: a sign of life
            self._count(run, message.usage)
            blocks = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
            messages.append({"role": "assistant", "content": [_param(b) for b in blocks]})
            texts = [b["text"] for b in blocks if b.get("type") == "text"]
            calls = [b for b in blocks if b.get("type") == "tool_use"]
            if texts:
                reply = "\n".join(texts)
                run.log.append(f"assistant: {reply}")
            if not calls:
                return result(reply=reply)
            outputs = []
            for call in calls:
                outputs.append(self._tool(run, call))
                if _cancelled(request):
                    return interrupted_result(result)
                if time.monotonic() > run.deadline:
                    return timed_out_result(result, request)
            messages.append({"role": "user", "content": outputs})
        return result(
            reply=reply,
            exit_code=1,
            failure=None if reply.strip() else FailureKind.AGENT_ERROR,
            failure_detail=None
            if reply.strip()
            else f"the agent used {self.max_steps} tool steps without a final reply",
        )

    def _ask(
        self, model: str, system: str, messages: list[dict[str, Any]], timeout: float
    ) -> anthropic.types.Message:
        with self.client.messages.stream(
            model=model,
            max_tokens=self.max_tokens,
            system=system,
            tools=TOOLS,  # type: ignore[arg-type]
            messages=messages,  # type: ignore[arg-type]
            timeout=timeout,
        ) as stream:
            return stream.get_final_message()

    @staticmethod
    def _count(run: _Run, usage: Any) -> None:
        run.tokens["input"] += usage.input_tokens or 0
        run.tokens["output"] += usage.output_tokens or 0
        run.tokens["cache_read"] += getattr(usage, "cache_read_input_tokens", 0) or 0
        run.tokens["cache_write"] += getattr(usage, "cache_creation_input_tokens", 0) or 0

    @staticmethod
    def _api_failure(
        exc: anthropic.APIError, result: Callable[..., AgentResult], request: AgentRequest
    ) -> AgentResult:
        now = datetime.now(UTC)
        if isinstance(exc, anthropic.APITimeoutError):
            return timed_out_result(result, request, f"the API did not answer in time: {exc}")
        if isinstance(exc, anthropic.APIConnectionError):
            return result(
                exit_code=1,
                failure=FailureKind.OUTAGE,
                failure_detail=f"API connection error: {exc}",
            )
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            detail = f"API error {status}: {exc.message}"
            if status == 429:
                headers = dict(exc.response.headers.items())
                retry_at = retry_at_from_headers(headers, now)
                return result(
                    exit_code=1,
                    failure=FailureKind.USAGE_LIMIT,
                    failure_detail=detail,
                    retry_at=retry_at,
                )
            if status >= 500 or isinstance(exc, anthropic.OverloadedError):
                return result(exit_code=1, failure=FailureKind.OUTAGE, failure_detail=detail)
            limit = detect_usage_limit(exc.message, now)
            if limit is not None and status in (402, 403):
                return result(exit_code=1, failure=FailureKind.USAGE_LIMIT, failure_detail=detail)
            return result(exit_code=1, failure=FailureKind.AGENT_ERROR, failure_detail=detail)
        return result(
            exit_code=1, failure=FailureKind.AGENT_ERROR, failure_detail=f"API error: {exc}"
        )

    # --- tools ----------------------------------------------------------------------

    def _tool(self, run: _Run, call: dict[str, Any]) -> dict[str, Any]:
        name = str(call.get("name"))
        args = call.get("input") if isinstance(call.get("input"), dict) else {}
        assert isinstance(args, dict)
        summary = args.get("command") or args.get("path") or ""
        run.commands.append(f"{name}: {summary}" if summary else name)
        run.request.signal(AgentSign.TOOL_CALL)
        try:
            output = self._dispatch(run, name, args)
            is_error = False
        except ToolError as exc:
            output, is_error = f"error: {exc}", True
        except (OSError, UnicodeDecodeError) as exc:
            output, is_error = f"error: {exc}", True
        output = _cap(output)
        run.log.append(f"tool {name} {json.dumps(args)[:500]}\n-> {output[:2000]}")
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": call["id"],
            "content": output,
        }
        if is_error:
            block["is_error"] = True
        return block

    def _dispatch(self, run: _Run, name: str, args: dict[str, Any]) -> str:
        root = run.request.worktree
        match name:
            case "read_file":
                return _inside(root, _arg(args, "path")).read_text(encoding="utf-8")
            case "write_file":
                target = _inside(root, _arg(args, "path"))
                target.parent.mkdir(parents=True, exist_ok=True)
                content = _arg(args, "content")
                target.write_text(content, encoding="utf-8")
                return f"wrote {len(content)} characters to {args['path']}"
            case "edit_file":
                target = _inside(root, _arg(args, "path"))
                text = target.read_text(encoding="utf-8")
                old, new = _arg(args, "old"), _arg(args, "new")
                count = text.count(old) if old else 0
                if count != 1:
                    raise ToolError(
                        f"`old` must occur exactly once in {args['path']}; found {count}"
                    )
                target.write_text(text.replace(old, new, 1), encoding="utf-8")
                return f"edited {args['path']}"
            case "list_files":
                return _list(root, _inside(root, str(args.get("path") or ".")))
            case "run_shell":
                command = _arg(args, "command")
                remaining = run.deadline - time.monotonic()
                try:
                    proc = run.agent.run(
                        ["/bin/sh", "-c", command],
                        timeout_s=max(min(self.shell_timeout_s, remaining), 0.01),
                    )
                except SandboxUnavailable as exc:
                    raise ToolError(str(exc)) from exc
                status = "timed out (killed)" if proc.timed_out else f"exit code {proc.exit_code}"
                return f"{status}\n{proc.stdout}{proc.stderr}"
        raise ToolError(f"unknown tool {name!r}")


def _arg(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise ToolError(f"missing string argument {key!r}")
    return value


def _inside(root: Path, name: str) -> Path:
    return inside(root, name, ToolError)


def _list(root: Path, start: Path) -> str:
    base = root.resolve()
    if start.is_file():
        return str(start.relative_to(base))
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for filename in sorted(filenames):
            found.append(str((Path(dirpath) / filename).relative_to(base)))
            if len(found) >= LIST_CAP:
                return "\n".join([*found, f"... (more than {LIST_CAP} files)"])
    return "\n".join(found) or "(no files)"


def _cap(text: str) -> str:
    if len(text) <= OUTPUT_CAP:
        return text
    half = OUTPUT_CAP // 2
    return f"{text[:half]}\n... [{len(text) - OUTPUT_CAP} characters cut] ...\n{text[-half:]}"


def _param(block: dict[str, Any]) -> dict[str, Any]:
    """A response content block as a request content block."""
    if block.get("type") == "tool_use":
        return {
            "type": "tool_use",
            "id": block["id"],
            "name": block["name"],
            "input": block["input"],
        }
    if block.get("type") == "text":
        return {"type": "text", "text": block.get("text", "")}
    return block


def _cancelled(request: AgentRequest) -> bool:
    return request.cancel is not None and request.cancel.is_set()
