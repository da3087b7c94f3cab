"""Receipts: what each merged task cost, as a pure fold over its events.

`ReceiptFold.add` takes events one at a time (any order of tasks, duplicates ignored:
delivery is at least once); `ReceiptFold.receipt` sums what the task's
`iteration.finished` events recorded, so a receipt adds up exactly to the per-call
figures (`math.fsum`: the same sum whatever the order). The merge queue keeps one
fold fed from the stream and puts the receipt into `merge.completed`;
`fold_receipt` is the same fold over a list, for readers and tests."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from events.envelope import Event
from events.models import (
    IterationFinished,
    MergeCompleted,
    TaskClaimed,
    VerificationFailed,
    VerificationPassed,
)
from events.types import IterationOutcome, TokenUsage
from events.usage import Receipt

__all__ = ["RECEIPT_TYPES", "ReceiptFold", "fold_receipt"]

RECEIPT_TYPES = frozenset(
    {
        "iteration.finished",
        "task.claimed",
        "verification.passed",
        "verification.failed",
        "merge.completed",
    }
)
"""The event types a receipt is folded from (for `bus.replay(types=...)`)."""


@dataclass
class _Call:
    cost_usd: float | None
    tokens: TokenUsage
    duration_s: float
    claimed: bool
    commit: str | None


@dataclass
class _Tally:
    calls: list[_Call] = field(default_factory=list)
    claims: dict[str, int] = field(default_factory=dict)  # claimed commit -> its call
    last_claim: int | None = None  # the last call that ended in a claim
    verification_runs: int = 0
    attempts: int = 0

    def winner(self, commit: str) -> int | None:
        """The call whose claim is `commit`."""
        if commit in self.claims:
            return self.claims[commit]
        for i in range(len(self.calls) - 1, -1, -1):
            if self.calls[i].claimed and self.calls[i].commit == commit:
                return i
        return self.last_claim

    def receipt(self, task_id: str, commit: str) -> Receipt:
        won = self.winner(commit)
        failed = [c for i, c in enumerate(self.calls) if i != won]
        return Receipt(
            task_id=task_id,
            commit=commit,
            agent_calls=len(self.calls),
            tokens=_sum_tokens(c.tokens for c in self.calls),
            cost_usd=math.fsum(c.cost_usd for c in self.calls if c.cost_usd is not None),
            uncosted_calls=sum(1 for c in self.calls if c.cost_usd is None),
            wall_time_s=math.fsum(c.duration_s for c in self.calls),
            verification_runs=self.verification_runs,
            attempts=self.attempts,
            failed_calls=len(failed),
            failed_cost_usd=math.fsum(c.cost_usd for c in failed if c.cost_usd is not None),
        )


def _sum_tokens(parts: Iterable[TokenUsage]) -> TokenUsage:
    i = o = r = w = 0
    for t in parts:
        i, o = i + t.input_tokens, o + t.output_tokens
        r, w = r + t.cache_read_tokens, w + t.cache_write_tokens
    return TokenUsage(input_tokens=i, output_tokens=o, cache_read_tokens=r, cache_write_tokens=w)


class ReceiptFold:
    """Every task's calls, claims and verification runs seen so far. A task's tally
    closes when its `merge.completed` comes by: a task reset and merged again gets a
    new receipt for the new work."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], _Tally] = {}
        self._closed: dict[tuple[str, str, str], Receipt] = {}
        self._seen: set[str] = set()

    def add(self, event: Event) -> None:
        if event.type not in RECEIPT_TYPES or event.id in self._seen:
            return
        self._seen.add(event.id)
        key = (event.loop or "", str(getattr(event, "task_id", "")))
        if isinstance(event, MergeCompleted):
            tally = self._open.pop(key, _Tally())
            self._closed.setdefault((*key, event.commit), tally.receipt(key[1], event.commit))
            return
        tally = self._open.setdefault(key, _Tally())
        if isinstance(event, IterationFinished):
            claimed = event.outcome is IterationOutcome.CLAIMED
            tally.calls.append(
                _Call(
                    cost_usd=event.cost_usd,
                    tokens=event.tokens or TokenUsage(),
                    duration_s=event.duration_s,
                    claimed=claimed,
                    commit=event.commit,
                )
            )
            tally.attempts = max(tally.attempts, event.attempt)
            if claimed:
                tally.last_claim = len(tally.calls) - 1
        elif isinstance(event, TaskClaimed):
            if tally.last_claim is not None:
                tally.claims.setdefault(event.commit, tally.last_claim)
            tally.attempts = max(tally.attempts, event.attempt)
        elif isinstance(event, VerificationPassed | VerificationFailed):
            tally.verification_runs += 1

    def receipt(self, loop: str | None, task_id: str, commit: str) -> Receipt:
        """The receipt of `task_id` merged as `commit` (the one already recorded when its
        merge was seen, so a merge reported again gets the same receipt)."""
        closed = self._closed.get((loop or "", task_id, commit))
        if closed is not None:
            return closed
        return self._open.get((loop or "", task_id), _Tally()).receipt(task_id, commit)


def fold_receipt(events: Iterable[Event], loop: str | None, task_id: str, commit: str) -> Receipt:
    """The receipt of `task_id` of `loop`, merged as `commit`, from `events`."""
    fold = ReceiptFold()
    for event in events:
        fold.add(event)
    return fold.receipt(loop, task_id, commit)
