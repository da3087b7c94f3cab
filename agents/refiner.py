"""Refining a task that keeps failing for different reasons: ask a model for a rewrite.

`Refiner` is the seam; `AnthropicRefiner` asks the Messages API through the `anthropic`
SDK (ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY honoured, every call with a timeout).
Tests use a fake refiner, or this one against an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anthropic

from events import LoopsError
from infra.model import DEFAULT_MODEL, model_client

DescribeTask = Callable[[str, str], str | None]
"""(loop, task_id) -> the task's text (title, description, criteria), if known."""


class RefineFailed(LoopsError):
    """Raised when a model could not propose a refinement (timeout, API error, empty reply)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RefineRequest:
    loop: str
    task_id: str
    reason: str
    failures: tuple[str, ...]
    task_text: str | None = None


class Refiner(Protocol):
    """Proposes a rewrite or a split of a task, as text for a person or the loop."""

    def refine(self, request: RefineRequest) -> str: ...


SYSTEM = (
    "You help an unattended coding agent that is stuck on a task. Given the task and the "
    "failures of its recent attempts, propose a clearer version of the task: rewrite it, or "
    "split it into 2-4 smaller steps, each with a checkable outcome. Reply with the proposal "
    "only, as plain text under 1500 characters."
)


def prompt_for(request: RefineRequest) -> str:
    task = request.task_text or f"(task {request.task_id}; its text is not available)"
    failures = "\n".join(f"- {f}" for f in request.failures) or "- (none recorded)"
    return (
        f"Loop: {request.loop}\nTask {request.task_id}:\n{task}\n\n"
        f"Why the monitor stepped in: {request.reason}\n\nRecent failures:\n{failures}\n"
    )


class AnthropicRefiner:
    """A `Refiner` on the Anthropic Messages API."""

    def __init__(
        self,
        *,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_tokens: int = 1024,
        max_retries: int = 1,
        describe_task: DescribeTask | None = None,
    ) -> None:
        self.model = model or DEFAULT_MODEL
        self.max_tokens = max_tokens
        self.describe_task = describe_task
        self.client = model_client(
            api_key=api_key, base_url=base_url, timeout_s=timeout_s, max_retries=max_retries
        )

    def close(self) -> None:
        self.client.close()

    def refine(self, request: RefineRequest) -> str:
        if request.task_text is None and self.describe_task is not None:
            text = self.describe_task(request.loop, request.task_id)
            request = RefineRequest(
                request.loop, request.task_id, request.reason, request.failures, text
            )
        try:
            reply = self.client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=SYSTEM,
                messages=[{"role": "user", "content": prompt_for(request)}],
            )
        except anthropic.APIError as exc:  # includes timeouts and connection errors
            raise RefineFailed(f"model call failed: {type(exc).__name__}: {exc}") from None
        text = "".join(getattr(block, "text", "") for block in reply.content).strip()
        if not text:
            raise RefineFailed("the model returned an empty proposal")
        return text
