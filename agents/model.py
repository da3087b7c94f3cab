"""The agents' one way to reach the model (the Messages API through the `anthropic` SDK):
the key and base URL given, else those of `infra.settings.Settings`, a timeout and
bounded retries on every call."""

from __future__ import annotations

import anthropic

from infra.settings import Settings


def model_client(
    *, api_key: str | None, base_url: str | None, timeout_s: float, max_retries: int
) -> anthropic.Anthropic:
    settings = Settings.from_env()
    return anthropic.Anthropic(
        api_key=api_key or settings.api_key or "unset",
        base_url=base_url or settings.anthropic_base_url,
        timeout=timeout_s,
        max_retries=max_retries,
    )
