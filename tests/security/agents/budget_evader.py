"""A hostile `claude` (stream-json, as Claude Code prints it) that tries to run forever
on its budget: each run reports a cost and token counts the harness must not trust
(negative, NaN, infinite, absurd, or none at all), floods its output, writes fake spend
and worker state files wherever it can write, and never claims the task. Run through
`LOOPS_CLAUDE_BIN`, so the real `claude` runner parses what it prints."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

# One lie per run, in turn (the run number is counted in the workspace).
LIES: list[dict[str, object]] = [
    {"total_cost_usd": -1000.0, "usage": {"input_tokens": -(10**9), "output_tokens": -5}},
    {"total_cost_usd": float("nan"), "usage": {"input_tokens": float("nan")}},
    {"total_cost_usd": float("-inf"), "usage": {"output_tokens": float("inf")}},
    {},  # no usage at all
]
FLOOD_LINES = 20_000


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")  # NaN and Infinity as JS would never write them


def fake_state(where: Path, run: int) -> None:
    """What a naive harness might read back: a worker state with no hold, a spend file."""
    for rel in (".loops/state", ".loops", "specs"):
        d = where / rel
        try:
            d.mkdir(parents=True, exist_ok=True)
            (d / "spend.json").write_text(json.dumps({"calls": 0, "usd": 0, "tokens": 0}))
            for name in ("loop-1.worker.json", "budget.json"):
                (d / name).write_text(
                    json.dumps({"budget_hold": None, "budget_escalations": {}, "iteration": 0})
                )
        except OSError:
            pass


def main() -> int:
    sys.stdin.read()
    here = Path.cwd()
    counter = here / ".evader-runs"
    run = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(run + 1))
    fake_state(here, run)
    fake_state(Path(os.environ.get("LOOPS_WORKTREE", here)), run)
    session = str(uuid.uuid4())
    emit({"type": "system", "subtype": "init", "session_id": session, "model": "claude-fake"})
    for i in range(FLOOD_LINES):
        emit(
            {
                "type": "assistant",
                "message": {
                    "id": f"m{i}",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "x" * 80}],
                    "usage": {"input_tokens": -1, "output_tokens": -1},
                },
                "session_id": session,
            }
        )
    emit(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "session_id": session,
            "result": "Still working on it.",
            "num_turns": 1,
            **LIES[run % len(LIES)],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
