"""What a per-task budget saves on a workload where one task never passes.

The demo project (`loops demo`'s layout) without its question loop: loop-1 and loop-2
merge their tasks; loop-3's agent never gets MUL-1 right: it edits a file every time
(so the monitor's no-progress rules do not stop it) and never claims the task. Every
agent call reports `cost_usd` 0.05 and 2,500 tokens, as a script. `loops up` runs the
project twice, to its end: without a budget (the stuck task runs until its attempts
are spent or the monitor blocks it), then with `{"budget": {"task": {"usd": 0.25}}}` in
project.json. The spend is read from the spend ledger (`bus.spend`) afterwards.

    python bench/budget.py

Prints a table, then as its last line one JSON object:
{"stuck_usd_no_budget": ..., "stuck_usd_task_budget": ..., "stuck_calls_no_budget": ...,
 "stuck_calls_task_budget": ..., "merged_no_budget": ..., "merged_task_budget": ...,
 "cost_per_merged_task_no_budget": ..., "cost_per_merged_task_task_budget": ...,
 "unmerged_usd_no_budget": ..., "unmerged_usd_task_budget": ...}
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import demo
from bus import PassedLedger, RedisBus
from bus.spend import PROJECT, SpendLedger, task_scope
from events import utcnow
from infra.embedded import EmbeddedServer
from loops.workspace import git

LOOPS = str(Path(sys.executable).parent / "loops")
COST = {"cost_usd": 0.05, "tokens": {"input": 2000, "output": 500}}
STUCK = ("loop-3-stuck", "MUL-1")
TASK_BUDGET_USD = 0.25
# Busy but never right: it changes a file every time (so no "no progress" rule of the
# monitor stops it) and never claims the task.
STUCK_STEP = {"append": {"calc/NOTES.md": "Another idea for mul().\n"}, "reply": "Still on it."}


def project(root: Path, budget: dict[str, object] | None) -> Path:
    demo.create(root)
    shutil.rmtree(root / "loop-4-question")
    (root / "loop-3-stuck" / "agent.yaml").write_text(
        yaml.safe_dump({"tasks": {"MUL-1": [STUCK_STEP]}})
    )
    for script in root.glob("loop-*/agent.yaml"):
        data = yaml.safe_load(script.read_text())
        for steps in data["tasks"].values():
            for step in steps:
                step.update(COST)
        script.write_text(yaml.safe_dump(data))
    for config in root.glob("loop-*/config.json"):
        data = json.loads(config.read_text())
        data["auto_continue_delay"] = 0
        config.write_text(json.dumps(data, indent=2))
    if budget is not None:
        (root / "project.json").write_text(json.dumps({"budget": budget}))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "bench")
    return root


def run(root: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "LOOPS_"))}
    started = time.monotonic()
    subprocess.run(
        [LOOPS, "up", str(root), "--port", "0"], capture_output=True, timeout=1800, env=env
    )
    wall = time.monotonic() - started
    with EmbeddedServer(root, kind="redis-server") as server:
        bus = RedisBus.from_settings(server.settings(prefix="loops"))
        try:
            ledger = SpendLedger(bus.client, bus.prefix)
            now = utcnow()
            stuck = ledger.spent(task_scope(*STUCK), now)
            total = ledger.spent(PROJECT, now)
            merged = len(PassedLedger(bus.client, bus.prefix).all())
        finally:
            bus.close()
    return {
        "stuck_usd": round(stuck.usd, 4),
        "stuck_calls": stuck.calls,
        "total_usd": round(total.usd, 4),
        "total_calls": total.calls,
        "merged": merged,
        "per_merged": round(total.usd / merged, 4) if merged else float("nan"),
        "unmerged_usd": round(stuck.usd, 4),  # the only task that never merges
        "wall_s": round(wall, 1),
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        base = run(project(Path(tmp) / "none", None))
        capped = run(project(Path(tmp) / "task", {"task": {"usd": TASK_BUDGET_USD}}))
    print(f"{'':24}{'no budget':>12}{f'task ${TASK_BUDGET_USD}':>12}")
    for key, label in (
        ("stuck_usd", "stuck task $"),
        ("stuck_calls", "stuck task calls"),
        ("total_usd", "project $"),
        ("total_calls", "project calls"),
        ("merged", "tasks merged"),
        ("per_merged", "$ per merged task"),
        ("wall_s", "loops up wall s"),
    ):
        print(f"{label:24}{base[key]:>12}{capped[key]:>12}")
    print(
        json.dumps(
            {
                "stuck_usd_no_budget": base["stuck_usd"],
                "stuck_usd_task_budget": capped["stuck_usd"],
                "stuck_calls_no_budget": base["stuck_calls"],
                "stuck_calls_task_budget": capped["stuck_calls"],
                "merged_no_budget": base["merged"],
                "merged_task_budget": capped["merged"],
                "cost_per_merged_task_no_budget": base["per_merged"],
                "cost_per_merged_task_task_budget": capped["per_merged"],
                "unmerged_usd_no_budget": base["unmerged_usd"],
                "unmerged_usd_task_budget": capped["unmerged_usd"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
