"""Issue 9's audit items on limits: a ~50 MB reply that ends with an honest promise,
and task ids or loop directories that make bad git ref names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.security.conftest import (
    LOOPS,
    Findings,
    Loop,
    Task,
    Up,
    agent,
    assert_kept_running,
    assert_merged,
    make_project,
    state_statuses,
    up,
    up_env,
)


def assert_all_merged(f: Findings, root: Path, result: Up, keys: list[str]) -> None:
    with f.check():
        assert result.code == 0, f"exit {result.code}:\n{result.output[-3000:]}"
    with f.check():
        assert_merged(root, "    return a + b")
    with f.check():
        statuses = state_statuses(root)
        assert all(statuses.get(k) == "passed" for k in keys), statuses


def test_50_mb_reply_then_promise_still_merges(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("honest", "--big", "50"))])
    result = up(root)
    f = Findings()
    assert_all_merged(f, root, result, ["loop-1/ADD-1"])
    with f.check():
        assert_kept_running(result)
    f.done()


ODD = {
    "dots": ("loop-1", "a..b"),
    "lock": ("loop-1", "x.lock"),
    "space": ("loop-1", "A 1"),
    "loop_dir_space": ("loop-a b", "ADD-1"),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_names_validate_and_up_agree(tmp_path: Path, case: str) -> None:
    loop_dir, task_id = ODD[case]
    root = make_project(tmp_path / "p", [Loop(loop_dir, agent("honest"), tasks=[Task(task_id)])])
    validate = subprocess.run(
        [LOOPS, "validate", str(root)], capture_output=True, text=True, timeout=60, env=up_env()
    )
    result = up(root)
    f = Findings()
    with f.check():
        out = validate.stdout + validate.stderr
        assert "Traceback" not in out, f"loops validate shows a traceback:\n{out[-3000:]}"
    if validate.returncode == 0:
        # Accepted: then `loops up` runs it like any other task.
        assert_all_merged(f, root, result, [f"{loop_dir}/{task_id}"])
        with f.check():
            assert_kept_running(result)
    else:
        # Refused: `loops up` refuses it too, with one line, before starting anything.
        with f.check():
            assert "Traceback" not in result.output, result.output[-3000:]
            assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1, (
                f"validate said:\n{out}\nbut up said:\n{result.output[-3000:]}"
            )
    f.done()
