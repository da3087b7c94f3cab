"""The project's exceptions. Every error coding-loops raises derives from `LoopsError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LoopsError(Exception):
    """Root of every error raised by coding-loops."""


class DecodeError(LoopsError):
    """Raised when a stream entry cannot be decoded into a known, valid event."""

    def __init__(self, reason: str, raw: Mapping[Any, Any] | bytes | str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class ValidationFailed(LoopsError):
    """Raised when a user file (SPEC.yaml, config.json, test-state.json, policy) is invalid.

    `problems` holds every problem found, each already phrased for the operator
    (file, field and how to fix it). `str()` of the error is the first one.
    """

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems or ["invalid input"]
        self.path = path
        super().__init__(self.problems[0])


class ConfigError(LoopsError):
    """Raised when settings (environment, CLI flags, state directory) are unusable."""
