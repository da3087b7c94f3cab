"""Signed events: what stops a forged decision, even from someone with bus access
(DESIGN.md invariant 8).

Every event published through a bus with a `signing_key` carries a fourth stream
field, `sig`: the hex HMAC-SHA256 of its `data` field (the event's JSON, byte for
byte as stored) under the project's key. The key lives where an agent cannot read it
(`DIR/.loops/signing.key`, mode 0600, hidden by the sandbox; `$LOOPS_SIGNING_KEY` or
derived from the Redis password in distributed mode; never in an agent's environment).

Consumers with a key drop a *decision* event whose signature is missing or wrong:
it goes to the dead-letter stream (`unsigned decision` / `bad signature`) and never
reaches a handler; `replay` and `tail` skip it, so no view shows it either. Other
events (heartbeats, iterations, claims: what the worker reports of the agent's work,
which the gate re-verifies anyway) are signed too but not checked.

Why a stream field rather than a field of the envelope: the MAC covers the exact
bytes a consumer decodes, so there is no canonical form to agree on (a re-serialized
model could differ in a float or a timestamp and fail honest events), the event
models stay as they are (old entries decode), and verifying costs one HMAC over bytes
the consumer already holds.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

SIG_FIELD = "sig"

UNSIGNED = "unsigned decision"
BAD_SIGNATURE = "bad signature"

DECISION_TYPES: frozenset[str] = frozenset(
    {
        # verdicts and their consequences
        "verification.passed",
        "verification.failed",
        "merge.queued",
        "merge.completed",
        "merge.conflicted",
        "task.passed",
        "task.failed",
        "task.blocked",
        "state.rejected",
        # a person's side, and the questions put to them
        "escalation.raised",
        "escalation.answered",
        "escalation.expired",
        # commands and what the monitor decides
        "loop.pause",
        "loop.resume",
        "loop.stop",
        "task.reset",
        "task.hint",
        "task.held",
        "task.released",
        "command.acknowledged",
        "monitor.action",
        "iteration.abort",
        # a shared pause of every loop on one account: never on someone else's word
        "usage.limited",
        # budgets: a warning, a held loop, a person's raise
        "budget.warned",
        "budget.exhausted",
        "budget.raised",
    }
)
"""Event types a consumer with a key accepts only with a valid signature."""

REPORT_TYPES: frozenset[str] = frozenset(
    {
        "loop.started",
        "loop.heartbeat",
        "loop.stopped",
        "task.started",
        "iteration.started",
        "iteration.finished",
        "task.claimed",
        "verification.started",
        "check.flaky",
        "progress.reported",
        "escalation.acknowledged",
        "escalation.delivered",
    }
)
"""Event types that are signed but not checked: reports of work in progress. Every
type is in exactly one of the two sets (a test keeps new types from slipping by)."""


def sign(key: bytes, data: bytes) -> bytes:
    """The `sig` field for an entry whose `data` field is `data` (hex, ASCII)."""
    return hmac.digest(key, data, "sha256").hex().encode()  # a name: OpenSSL's one-shot path


def _field(fields: Mapping[Any, Any], name: str) -> Any:
    value = fields.get(name.encode())
    return fields.get(name) if value is None else value


def _bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return None


def check(key: bytes, event_type: str, fields: Mapping[Any, Any]) -> str | None:
    """Why the entry with `fields` (of decoded type `event_type`) must be dropped, or
    None when it may be handled: a report type, or a decision whose `sig` matches."""
    if event_type not in DECISION_TYPES:
        return None
    sig = _bytes(_field(fields, SIG_FIELD))
    if sig is None:
        return UNSIGNED
    data = _bytes(_field(fields, "data"))
    if data is None or not hmac.compare_digest(sign(key, data), sig):
        return BAD_SIGNATURE
    return None
