"""The envelope every event shares, and the small value types events carry."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, TypedDict

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


def new_id() -> str:
    """A fresh, globally unique id (32 hex chars)."""
    return uuid.uuid4().hex


_DERIVED_NS = uuid.UUID("6f0c3a52-6c1e-4f5e-9a57-1c0a3f1b2d11")


def derived_id(*parts: str) -> str:
    """An event id determined by its cause (32 hex chars), so that an outcome
    published again after a lost reply or a redelivery dedupes at every consumer."""
    return uuid.uuid5(_DERIVED_NS, "|".join(parts)).hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(StrEnum):
    """The process roles of the system (DESIGN.md), plus the operator's own tools."""

    WORKER = "worker"
    MONITOR = "monitor"
    PM = "pm"
    HUMAN = "human"
    GATE = "gate"
    MERGE = "merge"
    DASHBOARD = "dashboard"
    OPERATOR = "operator"  # the `loops` CLI acting for a person (answer, pause, reset ...)


class Causation(TypedDict):
    """Envelope fields linking an event to the one that caused it."""

    loop: str | None
    correlation_id: str | None
    causation_id: str | None


class Frozen(BaseModel):
    """Base for every value carried on the bus: immutable, no unknown fields, no NaN or
    Infinity (JSON has neither; a consumer must never fold one into sums or views)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Source(Frozen):
    """Who published an event: a role and the instance of it (host:pid or a name)."""

    role: Role
    instance: str = Field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


class Event(Frozen):
    """The envelope. Concrete events subclass it and pin `type` with a Literal.

    - `id`: unique per event; consumers dedupe on it (an XADD may land twice).
    - `version`: schema version of the event's fields.
    - `loop`: the loop the event concerns, where one applies.
    - `correlation_id`: links every event of one task attempt.
    - `causation_id`: the id of the event that caused this one.
    """

    type: str
    id: str = Field(default_factory=new_id)
    version: int = SCHEMA_VERSION
    ts: datetime = Field(default_factory=utcnow)
    source: Source
    loop: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None

    # Catalog metadata, read by events.catalog to generate docs/EVENT-CATALOG.md.
    producers: ClassVar[tuple[Role, ...]] = ()
    consumers: ClassVar[tuple[Role, ...]] = ()
    is_command: ClassVar[bool] = False

    def caused(self) -> Causation:
        """Envelope fields for an event caused by this one (same loop and attempt)."""
        return {
            "loop": self.loop,
            "correlation_id": self.correlation_id,
            "causation_id": self.id,
        }


def short_id(prefix: str) -> str:
    """A short id a person can type (`loops answer e-3f9a1c ...`)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
