"""The one way the roles reach the model outside an agent's run (the gate's judge, the
monitor's refiner, the human agent's answer reader): the Messages API through the
`anthropic` SDK, with a timeout and bounded retries on every call. The key and base
URL are passed down from `infra.settings.Settings`; nothing here reads the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import anthropic

DEFAULT_MODEL = "claude-sonnet-4-6"
"""The judge's, the refiner's and the answer reader's model unless one is set."""


def model_client(
    *, api_key: str | None, base_url: str | None, timeout_s: float, max_retries: int
) -> anthropic.Anthropic:
    """A client of the Messages API at `base_url` (default: Anthropic's) with `api_key`
    (a base URL may need none)."""
    import anthropic  # the SDK is loaded only by a process that asks a model

    return anthropic.Anthropic(
        api_key=api_key or "unset",
        base_url=base_url,
        timeout=timeout_s,
        max_retries=max_retries,
    )
