"""The compose `rq` service's worker class stops its pubsub thread at once, even when
the thread has already taken the unsubscribe reply and gone back into a read (with
rq's own class that read lasts 60 s, and `docker compose stop` killed the worker)."""

from __future__ import annotations

import uuid

from bus import connect
from cli.rqworker import Worker
from tests.conftest import require_real_redis, wait_until


def test_warm_shutdown_does_not_wait_out_a_pubsub_read() -> None:
    client = connect(require_real_redis())
    worker = Worker([f"test-rqworker-{uuid.uuid4().hex[:8]}"], connection=client)
    try:
        worker.subscribe()
        thread = worker.pubsub_thread
        assert thread is not None
        wait_until(lambda: worker.pubsub.subscribed)
        worker.pubsub.unsubscribe()
        # The thread reads the reply (then nothing is subscribed) and reads again.
        wait_until(lambda: not worker.pubsub.subscribed)
        thread.stop()  # as rq's teardown calls it: no timeout
        assert not thread.is_alive()
    finally:
        client.close()
