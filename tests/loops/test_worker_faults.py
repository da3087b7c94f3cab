"""A lost write does not lose a task (invariants 2 and 9): a real TCP proxy in front of
Redis fails exactly one XADD, the worker's `task.passed`. The `merge.completed` that
caused it is delivered again, and the `task.passed` is on the bus exactly once in
effect (one id, whatever the number of copies)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

import events as ev
from bus import BusSettings, PassedLedger, RedisBus, connect
from infra.git import git
from loops.books import SpecBook
from loops.driver import WorkerExit, run_worker
from loops.runners import make_runner
from loops.service import WorkerService
from loops.spec import parse_spec
from tests.conftest import wait_until
from tests.faultproxy import FaultProxy, Mode

GATE = ev.Source(role=ev.Role.MERGE, instance="test-merge")

SPEC = """
goal: "Greet"
tasks:
  - id: hello
    title: "Write hello.py"
    description: "Create hello.py printing hi"
    acceptance_criteria:
      - criterion: "hello.py runs"
        check: {type: script, run: "python hello.py"}
"""


@pytest.mark.parametrize("mode", ["drop_request", "drop_reply"])
def test_a_task_passed_whose_xadd_failed_once_is_published_once_in_effect(
    fault_upstream: str, mode: Mode, tmp_path: Path
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    where = urlparse(fault_upstream)
    direct = RedisBus(connect(fault_upstream), prefix=prefix)
    proxy = FaultProxy(where.hostname or "127.0.0.1", where.port or 6379)
    settings = BusSettings(
        url=proxy.url, prefix=prefix, reclaim_idle_ms=200, reclaim_interval_ms=100
    )
    worker_bus = RedisBus(connect(settings), settings=settings)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("demo\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    script = {
        "tasks": {
            "hello": [{"write": {"hello.py": "print('hi')\n"}, "reply": "<promise>done</promise>"}]
        }
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(script))
    book = SpecBook(parse_spec(SPEC), repo / "SPEC.yaml", repo / ".loops" / "state", 10)
    service = WorkerService(
        worker_bus, book, make_runner(f"script:{tmp_path / 'agent.yaml'}"), repo, heartbeat_s=30
    )
    stop = threading.Event()
    result: list[WorkerExit] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_worker(service.worker, service.poll, stop, idle_block_ms=50)
        ),
        daemon=True,
    )
    thread.start()
    seen_by_consumer: list[ev.Event] = []
    counter = direct.subscribe(
        "counter",
        "c",
        direct.idempotency("counter").wrap(seen_by_consumer.append),
        types={"task.passed"},
    )
    try:
        claim = wait_until(
            lambda: next((e for _, e in direct.replay(types={"task.claimed"})), None)
        )
        assert isinstance(claim, ev.TaskClaimed)
        proxy.arm(b"task.passed", mode)
        direct.publish(
            ev.MergeCompleted(
                source=GATE,
                task_id="hello",
                commit=claim.commit,
                merged_commit="c" * 40,
                main_before="b" * 40,
                **claim.caused(),
            )
        )
        wait_until(proxy.fired.is_set)
        copies = wait_until(lambda: [e for _, e in direct.replay(types={"task.passed"})])
        wait_until(lambda: not service.worker.state.outbox and service.subscription.stats.reclaimed)
        # The failure left the merge.completed pending; its redelivery published.
        assert service.subscription.stats.failed == 1
        wait_until(lambda: direct.client.xpending(direct.stream, "worker:spec")["pending"] == 0)
        copies = [e for _, e in direct.replay(types={"task.passed"})]
        assert len({e.id for e in copies}) == 1
        assert len(copies) == (1 if mode == "drop_request" else 2)
        counter.drain()
        assert len(seen_by_consumer) == 1  # a consumer that dedupes on ids sees it once
        assert PassedLedger(direct.client, prefix).get("spec/hello") == "c" * 40
        assert book.record("hello").status.value == "passed"
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=15)
        proxy.close()
        direct.delete_all()
        worker_bus.client.close()
        direct.client.close()
