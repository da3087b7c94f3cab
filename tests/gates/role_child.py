"""A gate or merge-queue process for crash tests: `python -m tests.gates.role_child CONFIG`.

Runs one role on a real Redis until the file `stop` exists. With `hook`, the merge queue
writes the merged commit to that file once its checks passed and then blocks before
moving main, waiting to be killed."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from bus import BusSettings, RedisBus
from gates import (
    GateSettings,
    MergeQueue,
    MergeSettings,
    VerificationGate,
)
from infra.store import Store
from tests.gates.conftest import load_tasks


def main() -> None:
    cfg = json.loads(sys.argv[1])
    settings = BusSettings.from_dsn(
        cfg["url"], prefix=cfg["prefix"], reclaim_idle_ms=200, reclaim_interval_ms=100
    )
    bus = RedisBus.from_settings(settings)
    store = Store(bus.client, cfg["prefix"], "gates")
    repo = Path(cfg["repo"])
    if cfg["role"] == "gate":
        gate = VerificationGate(
            bus,
            GateSettings(repo=repo, protected=tuple(cfg["protected"])),
            loader=load_tasks,
            store=store,
        )
        sub = gate.subscribe("gate-child")
    else:
        hook_file = cfg.get("hook")

        def hook(merged: str) -> None:
            Path(hook_file).write_text(merged)
            threading.Event().wait()  # until SIGKILL

        queue = MergeQueue(
            bus,
            MergeSettings(repo=repo, test_command=cfg["test_command"]),
            loader=load_tasks,
            store=store,
            before_main_moves=hook if hook_file else None,
        )
        sub = queue.subscribe("merge-child")
    stop = Path(cfg["stop"])
    while not stop.exists():
        sub.poll(block_ms=100)
    bus.close()


if __name__ == "__main__":
    main()
