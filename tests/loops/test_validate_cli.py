"""`loops validate PATH...` run the way an operator runs it: as a real subprocess (and
`loops.validate`, its checks, fuzzed in process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loops.validate import validate_paths

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SEED = FIXTURES / "seed-project"
LOOPS_BIN = Path(sys.executable).parent / "loops"


def validate(*paths: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CODING_LOOP_PROJECT_DIR"}
    return subprocess.run(
        [str(LOOPS_BIN), "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def assert_clean(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stdout + out.stderr
    assert "internal error" not in out.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(SEED, root)
    return root


def test_good_files_and_directories(project: Path) -> None:
    spec = FIXTURES / "ralph_loop" / "SPEC.yaml"
    out = validate(spec, project / "coding-loops")
    assert_clean(out)
    assert out.returncode == 0, out.stdout + out.stderr
    loops = project / "coding-loops"
    lines = out.stdout.splitlines()
    # Tasks no script checks are valid: a note says a judge or a person signs them off.
    notes = [line for line in lines if line.startswith("NOTE ")]
    assert [n.split(": ")[1] for n in notes] == [
        "CP-SPEC-005",  # CP-UFS-001 passed; CP-BUILD-001 is not automatable
        "INF-AUTH-001, INF-CREDIT-001",
        "NEW-TEST-001, PREVIOUS-TEST-ID",
    ]
    assert all("add acceptance_criteria" in n for n in notes)
    assert [line for line in lines if not line.startswith("NOTE ")] == [
        f"OK {spec}",
        f"OK {loops}/loop-1-critical-path/config.json",
        f"OK {loops}/loop-1-critical-path/specs/test-state.json",
        f"OK {loops}/loop-1-critical-path/specs/health.json",
        f"OK {loops}/loop-2-infrastructure/config.json",
        f"OK {loops}/loop-2-infrastructure/specs/test-state.json",
        f"OK {loops}/loop-3-polish/config.json",
        f"OK {loops}/loop-3-polish/specs/test-state.json",
    ]
    assert out.stderr == ""


def test_single_files_by_name_and_by_content(project: Path, tmp_path: Path) -> None:
    loop1 = project / "coding-loops" / "loop-1-critical-path"
    state = tmp_path / "loop1-tests.json"  # not named test-state.json: told by its content
    shutil.copy(loop1 / "specs" / "test-state.json", state)
    out = validate(
        loop1 / "config.json",
        loop1 / "specs" / "test-state.json",
        loop1 / "specs" / "health.json",
        state,
    )
    assert_clean(out)
    assert out.returncode == 0, out.stdout
    assert len(out.stdout.splitlines()) == 4


def test_bad_spec_lists_every_problem_on_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "SPEC.yaml").write_text(
        "goal: ''\n"
        "tasks:\n"
        "  - id: add-endpoint\n"
        "    title: t\n"
        "    description: d\n"
        "    acceptance_criteria:\n"
        "      - criterion: tests pass\n"
        "        check: {type: shell, run: pytest}\n"
    )
    out = validate("SPEC.yaml", cwd=tmp_path)
    assert_clean(out)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        "SPEC.yaml: goal: Spec must have a non-empty 'goal'",
        "SPEC.yaml: tasks[0].acceptance_criteria[0].check.type: Unknown check type 'shell' for "
        "criterion 'tests pass'. Must be 'script' or 'natural'.",
    ]
    assert out.stderr == "loops validate: 2 problems in 1 file\n"


def test_missing_files(tmp_path: Path) -> None:
    out = validate("SPEC.yaml", "config.json", "nothing-here", cwd=tmp_path)
    assert_clean(out)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        "Spec file not found: SPEC.yaml",
        "Config file not found: config.json",
        "nothing-here: not found — check the path",
    ]


def test_good_and_bad_together(project: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"name": "x", "specs_dir": "specs", "max_attempt": 5}))
    (tmp_path / "specs").mkdir()
    out = validate(FIXTURES / "ralph_loop" / "SPEC.yaml", cfg)
    assert_clean(out)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"OK {FIXTURES / 'ralph_loop' / 'SPEC.yaml'}",
        f"{cfg}: max_attempt: unknown field — did you mean 'max_attempts'? (unknown fields are "
        "kept but ignored)",
    ]


def test_project_problems_name_each_file(project: Path) -> None:
    loops = project / "coding-loops"
    cfg = loops / "loop-2-infrastructure" / "config.json"
    cfg.write_text('{"name": "Loop 2", "specs_dir": "coding-loops/loop-2-infrastructure/specs",')
    state = loops / "loop-3-polish" / "specs" / "test-state.json"
    state.write_text(json.dumps({"tests": [{"id": "A", "dependsOn": "loop-1-critical-path/Z"}]}))
    out = validate(project)
    assert_clean(out)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert f"OK {loops}/loop-1-critical-path/config.json" in lines
    assert (
        f"{cfg}: line 1, column 76: invalid JSON: Expecting property name enclosed in double "
        "quotes — fix the syntax (check commas, quotes and brackets)"
    ) in lines
    assert (
        f"{state}: tests[0].dependsOn: depends on 'loop-1-critical-path/Z' but there is no test "
        "'Z' in loop 'loop-1-critical-path' — fix the id, or write 'loop-name/TASK-ID' for "
        "another loop's task"
    ) not in lines  # cross-loop checks wait until every loop loads
    cfg.write_text(
        json.dumps({"name": "Loop 2", "specs_dir": "coding-loops/loop-2-infrastructure/specs"})
    )
    out = validate(project)
    assert out.returncode == 1
    assert out.stdout.splitlines()[-1] == (
        f"{state}: tests[0].dependsOn: depends on 'loop-1-critical-path/Z' but there is no test "
        "'Z' in loop 'loop-1-critical-path' — fix the id, or write 'loop-name/TASK-ID' for "
        "another loop's task"
    )


def test_standalone_state_checks_its_own_dependencies(tmp_path: Path) -> None:
    path = tmp_path / "test-state.json"
    path.write_text(
        json.dumps({"tests": [{"id": "A", "dependsOn": "B"}, {"id": "C", "dependsOn": "l/X"}]})
    )
    out = validate(path)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{path}: tests[0].dependsOn: depends on 'B' but no test in this file has that id — "
        "fix the id, or write 'loop-name/TASK-ID' for another loop's task"
    ]


@pytest.mark.parametrize(
    "name",
    ["SPEC.yaml", "config.json", "test-state.json", "health.json", "garbage.bin", "x.json"],
)
def test_binary_garbage_is_one_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 4)
    out = validate(path)
    assert_clean(out)
    assert out.returncode == 1
    (line,) = out.stdout.splitlines()
    assert line.startswith(str(path) + ": ")


def test_unreadable_things(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    (tmp_path / "SPEC.yaml").mkdir()  # a directory named like a file: searched as a project
    empty = tmp_path / "empty"
    empty.mkdir()
    out = validate(fifo, empty, tmp_path / "SPEC.yaml")
    assert_clean(out)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{fifo}: is not a regular file — give a YAML or JSON file",
        f"{empty}: no SPEC.yaml and no loop-*/config.json here — give a project directory or "
        "the files themselves",
        f"{tmp_path / 'SPEC.yaml'}: no SPEC.yaml and no loop-*/config.json here — give a "
        "project directory or the files themselves",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "SPEC.yaml"
    path.write_text("goal: g\n")
    path.chmod(0)
    out = validate(path)
    assert_clean(out)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{path}: cannot read the file: Permission denied — check its permissions"
    ]


def test_without_paths_is_a_usage_error() -> None:
    out = subprocess.run([str(LOOPS_BIN), "validate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr


# -- in-process fuzzing of the checks (`loops.validate`, what the command prints) -------

NAMES = st.sampled_from(["SPEC.yaml", "config.json", "test-state.json", "health.json", "x.txt"])


@given(name=NAMES, data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_validate_never_raises(
    tmp_path_factory: pytest.TempPathFactory, name: str, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("v") / name
    path.write_bytes(data)
    report = validate_paths([path], None)
    lines = [line for found in report.problems.values() for line in found]
    assert not any("internal error" in line for line in lines)
    assert lines or list(report.problems) == [str(path)]  # good: the file alone, OK
