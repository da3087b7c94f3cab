"""Task ids and loop directory names that cannot name a git ref are refused up front,
the same way by `loops validate` and `loops up`: one line naming the file, the field
and the fix, never a traceback (issue 9, item 8)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.git import git
from loops.names import component_problem, safe_component
from tests.cli.test_up import LOOPS, env, one_loop_project


def loops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOOPS, *args], capture_output=True, text=True, timeout=60, env=env())


def problem_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        ln
        for ln in (proc.stdout + proc.stderr).splitlines()
        if ": " in ln and not ln.startswith("OK ")
    ]


@pytest.mark.parametrize("task_id", ["a..b", "x.lock", "A 1", "-x", "a/b"])
def test_an_odd_task_id_is_refused_by_validate_and_up_alike(tmp_path: Path, task_id: str) -> None:
    root = one_loop_project(tmp_path / "p", [{"reply": "working"}])
    state_path = root / "loop-1-clean" / "specs" / "test-state.json"
    state = json.loads(state_path.read_text())
    state["tests"][0]["id"] = task_id
    state_path.write_text(json.dumps(state, indent=2))
    validate, up = loops("validate", str(root)), loops("up", str(root))
    for proc in (validate, up):
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    [line] = [ln for ln in problem_lines(validate) if "tests[0].id" in ln]
    assert line.startswith(f"{state_path}: tests[0].id: task id {task_id!r}")
    assert "rename it, e.g." in line
    [up_line] = up.stderr.strip().splitlines()  # one line, and the same problem
    assert up_line.endswith(line)
    assert not (root / ".loops").exists()  # nothing started


def test_an_odd_loop_directory_is_refused_by_validate_and_up_alike(tmp_path: Path) -> None:
    root = one_loop_project(tmp_path / "p", [{"reply": "working"}])
    git(root, "mv", "loop-1-clean", "loop-a b")
    config = root / "loop-a b" / "config.json"
    data = json.loads(config.read_text())
    data["specs_dir"] = "loop-a b/specs"
    config.write_text(json.dumps(data))
    validate, up = loops("validate", str(root)), loops("up", str(root))
    for proc in (validate, up):
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    expected = (
        f"{config}: loop directory name 'loop-a b' contains a space: it names the loop's "
        "branch (loop/NAME), so use letters, digits, '-', '_' and '.' — rename the "
        "directory, e.g. 'loop-a-b'"
    )
    assert expected in problem_lines(validate)
    [up_line] = up.stderr.strip().splitlines()
    assert up_line.endswith(expected)


def test_an_odd_task_id_in_a_spec_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "SPEC.yaml"
    spec.write_text(
        "goal: g\ntasks:\n  - id: 'x.lock'\n    title: t\n    description: d\n"
        "    acceptance_criteria:\n      - criterion: c\n        check: {type: script, run: 'true'}\n"
    )
    proc = loops("validate", str(spec))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{spec}: tasks[0].id: task id 'x.lock' ends with '.lock'" in proc.stdout + proc.stderr


@settings(max_examples=100)
@given(st.text(max_size=12))
def test_names_accepted_are_names_git_accepts_and_the_suggestion_is_one(name: str) -> None:
    """`git check-ref-format` is the oracle (the harness is stricter: no '/', no '-x')."""
    ours_ok = component_problem(name) is None
    if ours_ok or "\x00" not in name:
        git_ok = (
            subprocess.run(
                ["git", "check-ref-format", f"refs/loops/{name}"], capture_output=True
            ).returncode
            == 0
            and "/" not in name
        )
        if ours_ok:
            assert git_ok, name
    assert component_problem(safe_component(name)) is None
