"""The merge queue's receipts: one `events.ReceiptFold` fed from the stream.

The queue builds a task's receipt when it lands the task. It may not have seen the
task's earlier events in this process (it restarted, or runs on another machine), so it
reads them from the stream: everything once on the first merge, then only what was
appended since. A merge reported again (a redelivery after a crash) gets the same
receipt. A stream trimmed before the merge loses the calls it trimmed."""

from __future__ import annotations

from bus.api import Bus
from events import RECEIPT_TYPES, Receipt, ReceiptFold

__all__ = ["StreamReceipts"]


class StreamReceipts:
    """Receipts of merged tasks, from the events on `bus`."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.fold = ReceiptFold()
        self.cursor = "-"  # inclusive: the entry read last comes again, and dedupes

    def receipt(self, loop: str | None, task_id: str, commit: str) -> Receipt:
        """The receipt of `task_id` of `loop`, merged as `commit`."""
        for stream_id, event in self.bus.replay(self.cursor, types=RECEIPT_TYPES):
            self.fold.add(event)
            self.cursor = stream_id
        return self.fold.receipt(loop, task_id, commit)
