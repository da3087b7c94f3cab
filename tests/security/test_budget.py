"""Issue 14: an agent that tries to evade its budget. It runs as `claude` (the real
runner parses its stream-json) and reports negative, NaN, infinite or no usage, floods
its output and writes fake spend and state files in its workspace. The harness counts
its calls and wall time whatever it says, refuses the lies, and stops it at the budget:
`loops up` ends by itself with the task held and a question for a person."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.security.conftest import (
    AGENTS,
    Findings,
    Loop,
    assert_kept_running,
    commit,
    loops_cmd,
    make_project,
    state_statuses,
    stream_events,
    up,
    up_env,
)

CALLS = 4


def test_an_agent_that_lies_about_its_usage_is_stopped_at_its_budget(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", [Loop("loop-1", "claude", max_attempts=5)])
    budget = {"budget": {"task": {"usd": 0.01, "tokens": 1000, "calls": CALLS}}}
    (root / "project.json").write_text(json.dumps(budget))
    commit(root, "a budget")
    env = up_env(LOOPS_CLAUDE_BIN=f"{sys.executable} {AGENTS / 'budget_evader.py'}")
    result = up(root, env=env)
    f = Findings()
    with f.check():
        assert_kept_running(result)
    with f.check():
        assert result.code == 1, result.output[-3000:]
        assert f"task budget of loop-1/ADD-1: {CALLS} calls of {CALLS} calls" in result.output
    events = stream_events(root, env=env)
    with f.check():
        started = [e for e in events if e.get("type") == "iteration.started"]
        assert len(started) == CALLS, f"{len(started)} agent calls for a budget of {CALLS}"
    with f.check():
        spent = [e for e in events if e.get("type") == "budget.exhausted"]
        assert [(e["level"], e["metric"]) for e in spent] == [("task", "calls")], spent
    with f.check():
        # The lies reached no event: no negative, NaN or infinite cost, no negative tokens.
        for e in events:
            if e.get("type") == "iteration.finished":
                assert e.get("cost_usd") is None, e.get("cost_usd")
                assert all(v >= 0 for v in (e.get("tokens") or {}).values()), e["tokens"]
    with f.check():
        shown = loops_cmd(root, "budget", "--json", env=env)
        assert shown.code == 0, shown.output
        rows = {r["scope"]: r["spent"] for r in json.loads(shown.stdout)["scopes"]}
        assert rows["project"]["calls"] == CALLS and rows["project"]["usd"] == 0
        assert rows["project"]["tokens"] == 0 and rows["project"]["wall_s"] > 0
    with f.check():
        assert state_statuses(root).get("loop-1/ADD-1") == "pending"
    f.done()
