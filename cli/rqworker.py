"""The rq worker class the compose `rq` service runs (`rq worker --worker-class
cli.rqworker.Worker ...`): rq's own worker, with a warm shutdown that ends at once.

rq reads its command channel on a pubsub thread that blocks up to 60 s per read, and
on shutdown unsubscribes, then stops that thread. With redis-py >= 8.2, stopping waits
for the thread; when the thread has already taken the unsubscribe reply and gone back
into its read, that wait is the rest of the 60 s, longer than a container's stop grace
period, and the engine kills the worker (exit 137). Reading in 1 s slices bounds the
wait; commands (`rq` stop-job, shutdown) still arrive within a second.
"""

from __future__ import annotations

from rq.worker import BaseWorker
from rq.worker import SimpleWorker as RqSimpleWorker
from rq.worker import Worker as RqWorker

PUBSUB_READ_S = 1.0


class _ShortReads(BaseWorker):
    """The pubsub thread reads in `PUBSUB_READ_S` slices (mixed into rq's classes; on
    `BaseWorker`, so that `SimpleWorker` keeps rq's own `execute_job`, which runs the job
    in the worker process instead of a forked work horse)."""

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_READ_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )


class Worker(_ShortReads, RqWorker):
    """rq's worker whose warm shutdown does not wait out a 60 s pubsub read."""


class SimpleWorker(_ShortReads, RqSimpleWorker):
    """rq's `SimpleWorker` (jobs in the worker process, no fork), same fix."""
