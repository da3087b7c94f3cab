"""`loops run --trust-agent`: ralph_loop's old behaviour, chosen by the operator. A
claim is taken as verified without running its checks, and the merge queue's only
check of every task is `true`."""

from __future__ import annotations

from pathlib import Path

from bus import RedisBus, Subscription
from events import Criterion, Event, Role, ScriptCheck, Source, TaskClaimed, VerificationPassed
from gates.gate import GROUP


class TrustingGate:
    """The gate of `--trust-agent`: every claim passes, with no criteria."""

    def __init__(self, bus: RedisBus, instance: str = "trust-agent") -> None:
        self.bus = bus
        self.source = Source(role=Role.GATE, instance=instance)

    def subscribe(self, consumer: str) -> Subscription:
        """This gate as consumer `consumer` of the `gate` group."""
        return self.bus.subscribe(GROUP, consumer, self.handle, types={"task.claimed"})

    def handle(self, event: Event) -> None:
        if isinstance(event, TaskClaimed):
            self.bus.publish(
                VerificationPassed(
                    source=self.source,
                    task_id=event.task_id,
                    commit=event.commit,
                    attempt=event.attempt,
                    criteria=[],
                    **event.caused(),
                )
            )


def trusting_loader(root: Path, loop: str, task_id: str) -> list[Criterion]:
    """Every task's only check is `true` (what the merge queue runs under
    `--trust-agent`: a claim is taken as verified)."""
    return [Criterion(criterion="trusted (--trust-agent)", check=ScriptCheck(run="true"))]
