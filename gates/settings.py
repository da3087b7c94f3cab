"""Settings of the gate and the merge queue, and the ids they derive from their causes."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gates.checks import DEFAULT_TIMEOUT_S, OUTPUT_TAIL_BYTES
from gates.protect import DEFAULT_PROTECTED

__all__ = [
    "DEFAULT_PROTECTED",
    "FlakyPolicy",
    "GateSettings",
    "MergeSettings",
    "TamperPolicy",
    "derived_escalation_id",
    "derived_id",
]
_NS = uuid.UUID("6f0c3a52-6c1e-4f5e-9a57-1c0a3f1b2d11")


def derived_id(*parts: str) -> str:
    """An event id determined by its cause, so a republished outcome dedupes."""
    return uuid.uuid5(_NS, "|".join(parts)).hex


def derived_escalation_id(*parts: str) -> str:
    return "e-" + hashlib.sha1("|".join(parts).encode()).hexdigest()[:6]


class TamperPolicy(StrEnum):
    """What happens to a claim whose diff touches its own checks, spec or state."""

    REJECT = "reject"  # verification.failed, verdict tampered
    ESCALATE = "escalate"  # a person approves or rejects (the default)
    ALLOW = "allow"  # verified with the agent's versions; the files are still listed


class FlakyPolicy(StrEnum):
    """What a flaky merge check (failed, then passed on the unchanged tree) does."""

    PASS = "pass"  # the batch lands; the flake is recorded (`check.flaky`) and counted
    BLOCK = "block"  # the batch stays queued and is tried again; the flake is recorded


@dataclass(frozen=True)
class GateSettings:
    """Where the gate works and how strict it is."""

    repo: Path  # the gate's clone (or the repository itself when `remote` is None)
    remote: str | None = "origin"
    main: str = "main"
    policy: TamperPolicy = TamperPolicy.ESCALATE
    # Globs of files a claim must not change (`gates.protect`); a project's extra globs
    # are added to these, never instead of them.
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    default_check: str | None = None  # a config's default check command, for unknown tasks
    check_timeout_s: float = DEFAULT_TIMEOUT_S
    tail_bytes: int = OUTPUT_TAIL_BYTES


@dataclass(frozen=True)
class MergeSettings:
    """Where the merge queue works and what it runs on a merged tree."""

    repo: Path  # the merge manager's clone (or the repository when `remote` is None)
    remote: str | None = "origin"
    main: str = "main"
    test_command: str | None = None  # the repository's configured test command
    default_check: str | None = None  # as the gate's: the check of a task without criteria
    protected: tuple[str, ...] = DEFAULT_PROTECTED  # as the gate's
    check_timeout_s: float = DEFAULT_TIMEOUT_S  # for a check without its own `timeout_s`
    recheck_merged: bool = True  # also run the script checks of every task merged before
    check_workers: int = 2  # checks of one merge run concurrently, at most this many
    tail_bytes: int = OUTPUT_TAIL_BYTES
    max_conflicts: int = 3  # conflicts of one task before a person is asked
    batch_size: int = 10  # claims stacked and tested together (docs/BENCHMARKS.md: why 10)
    fill_wait_s: float = 2.0  # how long a lone claim waits for others to batch with
    flaky_policy: FlakyPolicy = FlakyPolicy.PASS
    flaky_escalate_after: int = 3  # a check flaky more often is put to a person to fix
    retry_cost_s: float = 60.0  # each earlier failed try of a task costs this much age
    max_races: int = 5  # times main may move under one merge before the job is retried
