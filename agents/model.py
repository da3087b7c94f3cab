"""The agents' one way to reach the model (the Messages API through the `anthropic` SDK):
the key and `ANTHROPIC_BASE_URL` from the environment unless given, a timeout and
bounded retries on every call."""

from __future__ import annotations

import os

import anthropic


def model_client(
    *, api_key: str | None, base_url: str | None, timeout_s: float, max_retries: int
) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=api_key or os.environ.get("ANTHROPIC_API_KEY") or "unset",
        base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
        timeout=timeout_s,
        max_retries=max_retries,
    )
