"""Keep secrets out of transcripts, events and logs (DESIGN.md invariant 7).

Two nets: the values of secret-looking environment variables (whatever they look
like), and well-known token shapes (Anthropic, OpenAI, GitHub, Slack, AWS, bearer
headers) for secrets that never passed through our environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "[REDACTED]"

_SECRET_NAME = re.compile(
    r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION_KEY|PRIVATE)",
    re.IGNORECASE,
)
# Shorter values are too likely to be ordinary words ("true", "1234").
_MIN_SECRET_LEN = 8

_TOKEN_SHAPES = re.compile(
    r"""
    sk-ant-[A-Za-z0-9_\-]{8,}                # Anthropic keys
  | sk-(?:proj-)?[A-Za-z0-9_\-]{20,}         # OpenAI-style keys
  | gh[pousr]_[A-Za-z0-9]{20,}               # GitHub tokens
  | github_pat_[A-Za-z0-9_]{20,}
  | xox[abprs]-[A-Za-z0-9\-]{10,}            # Slack
  | AKIA[0-9A-Z]{16}                         # AWS access key id
  | (?<=[Bb]earer\s)[A-Za-z0-9._\-~+/=]{12,}  # Authorization: Bearer ...
  | (?<=x-api-key:\s)\S{8,}
    """,
    re.VERBOSE,
)


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The values of secret-looking variables in `env` (default: os.environ), longest first."""
    source = os.environ if env is None else env
    values = {
        value
        for name, value in source.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LEN
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None, extra: list[str] | None = None) -> str:
    """`text` with every secret replaced by `[REDACTED]`.

    `env` defaults to os.environ; pass the agent's own environment when it differs.
    `extra` adds literal values to hide.
    """
    if not text:
        return text
    for value in [*secret_values(env), *(extra or [])]:
        if value:
            text = text.replace(value, MASK)
    return _TOKEN_SHAPES.sub(MASK, text)
