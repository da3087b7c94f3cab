"""`rq worker --worker-class cli.rq_worker.Worker loops-verify`: rq's worker, with a
pub/sub thread that notices a stop within a second.

rq 2's worker reads its command channel with `run_in_thread(sleep_time=60)`. When
`UNSUBSCRIBE`'s reply reaches that thread before `stop()` clears its flag, it waits
for a new subscription for up to 60 s, so SIGTERM (`docker compose down`) took a
minute and ran into the stop grace period. The same thread, polling every second,
stops at once; nothing else changes."""

from __future__ import annotations

from rq.worker import Worker as RqWorker

STOP_POLL_S = 1.0


class Worker(RqWorker):
    """rq's `Worker`, whose pub/sub thread stops within `STOP_POLL_S`."""

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=STOP_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )
