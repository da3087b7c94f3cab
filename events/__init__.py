"""Typed events: the only language the roles of coding-loops share.

Imports nothing of the project; only pydantic. See docs/EVENT-CATALOG.md."""

from events.codec import (
    EVENT_CLASSES,
    EVENT_TYPES,
    AnyEvent,
    decode,
    decode_json,
    encode,
    entry_type,
)
from events.envelope import (
    SCHEMA_VERSION,
    Event,
    Frozen,
    Role,
    Source,
    derived_id,
    new_id,
    short_id,
    utcnow,
)
from events.errors import ConfigError, DecodeError, LoopsError, NotBuiltYet, ValidationFailed
from events.models import *  # noqa: F403 - every event class is part of the public API
from events.models import __all__ as _models_all
from events.types import (
    Check,
    Criterion,
    CriterionResult,
    Decision,
    DiffStat,
    EscalationKind,
    FailureKind,
    IterationOutcome,
    LoopStatus,
    MonitorActionKind,
    NaturalCheck,
    ScriptCheck,
    Severity,
    TokenUsage,
    VerificationVerdict,
)

__all__ = [
    "EVENT_CLASSES",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "AnyEvent",
    "Check",
    "ConfigError",
    "Criterion",
    "CriterionResult",
    "DecodeError",
    "Decision",
    "DiffStat",
    "EscalationKind",
    "Event",
    "FailureKind",
    "Frozen",
    "IterationOutcome",
    "LoopStatus",
    "LoopsError",
    "MonitorActionKind",
    "NaturalCheck",
    "NotBuiltYet",
    "Role",
    "ScriptCheck",
    "Severity",
    "Source",
    "TokenUsage",
    "ValidationFailed",
    "VerificationVerdict",
    "decode",
    "derived_id",
    "decode_json",
    "encode",
    "entry_type",
    "new_id",
    "short_id",
    "utcnow",
    *_models_all,
]
