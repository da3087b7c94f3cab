"""Placeholder: replaced by the real runner in the next commit."""

from __future__ import annotations

from typing import Any

from events import NotBuiltYet
from loops.runners import AgentRequest, AgentResult


class ClaudeRunner:
    name = "claude"

    def __init__(self, **kwargs: Any) -> None:
        self.options = kwargs

    def run(self, request: AgentRequest) -> AgentResult:
        raise NotBuiltYet("agent runner 'claude' is not built yet")
