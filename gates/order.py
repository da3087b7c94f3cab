"""The merge queue's order: oldest first, with a cost per earlier failed try.

Every waiting claim gains one point per second it waits (ageing); each earlier failed
try of its task (a conflict, failed checks: the `tries` the queue counts) costs
`retry_cost_s` points. The queue takes the highest scores first. A new claim starts at
zero and every claim ages at the same rate, so a claim is overtaken only by claims that
arrived less than `tries * retry_cost_s` seconds after it: a steady stream of new claims
delays an old one by a bounded time and can never strand it (the failure of a
newest-first queue that left mergeable branches waiting for two days)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from events import VerificationPassed


@dataclass(frozen=True)
class Waiting:
    """A verified claim in the queue, and when (wall-clock seconds) it was queued."""

    vp: VerificationPassed
    since: float


def score(waiting: Waiting, tries: int, now: float, retry_cost_s: float) -> float:
    """Seconds waited, less `retry_cost_s` per earlier failed try."""
    return (now - waiting.since) - retry_cost_s * tries


def pick(
    waiting: Sequence[Waiting],
    size: int,
    *,
    now: float,
    tries: Callable[[VerificationPassed], int],
    retry_cost_s: float,
) -> list[Waiting]:
    """The next batch: the `size` highest scores, ties in queue order."""
    ranked = sorted(
        enumerate(waiting),
        key=lambda iw: (-score(iw[1], tries(iw[1].vp), now, retry_cost_s), iw[0]),
    )
    return [w for _, w in ranked[: max(1, size)]]
