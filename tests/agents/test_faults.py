"""The agents' publishes survive a lost write: a TCP proxy in front of Redis fails the
one XADD of the PM's `task.released`; it still reaches the bus, once in effect."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import pytest

from agents.pm import ProjectManager
from bus import BusSettings, RedisBus, connect
from events import TaskBlocked, TaskHeld, TaskPassed, TaskReleased
from tests.agents.helpers import WORKER, Clock
from tests.agents.test_on_bus import Counting, of_type, running, settle
from tests.conftest import wait_until
from tests.faultproxy import FaultProxy, Mode


@pytest.mark.parametrize("mode", ["drop_request", "drop_reply"])
def test_a_release_whose_xadd_failed_once_is_published_once_in_effect(
    fault_upstream: str, mode: Mode
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    where = urlparse(fault_upstream)
    direct = RedisBus(connect(fault_upstream), prefix=prefix)
    with FaultProxy(where.hostname or "127.0.0.1", where.port or 6379) as proxy:
        settings = BusSettings(
            url=proxy.url, prefix=prefix, reclaim_idle_ms=200, reclaim_interval_ms=100
        )
        pm_bus = RedisBus(connect(settings), settings=settings)
        try:
            direct.publish(
                TaskBlocked(
                    source=WORKER, loop="ui", task_id="U1", reason="dep", blocked_by="api/A1"
                )
            )
            pm = Counting(ProjectManager(clock=Clock()))
            with running(pm, pm_bus, Clock(), "pm"):
                wait_until(lambda: len(of_type(direct, TaskHeld)) == 1)
                proxy.arm(b"task.released", mode)
                direct.publish(
                    TaskPassed(
                        source=WORKER,
                        loop="api",
                        task_id="A1",
                        attempt=1,
                        commit="c",
                        merged_commit="m",
                    )
                )
                wait_until(proxy.fired.is_set)
                wait_until(lambda: of_type(direct, TaskReleased))
                settle(pm, 10)
                wait_until(lambda: direct.client.xpending(direct.stream, "pm")["pending"] == 0)
            released = of_type(direct, TaskReleased)
            assert len({e.id for e in released}) == 1
            assert len(released) == (1 if mode == "drop_request" else 2)
            assert len(of_type(direct, TaskHeld)) == 1
        finally:
            direct.delete_all()
            pm_bus.client.close()
            direct.client.close()
