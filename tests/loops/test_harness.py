"""config.json, test-state.json and health.json: the seed's fields, additive extensions."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import Criterion, LoopStatus, ScriptCheck, TaskStatus, ValidationFailed
from infra.files import write_json_atomic
from loops.harness import (
    FileStatus,
    Health,
    LoopConfig,
    LoopState,
    Progress,
    TaskEntry,
    config_from_data,
    health_from_data,
    load_config,
    load_health,
    load_state,
    save_state,
    state_from_data,
    write_health,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOOPS = FIXTURES / "seed-project" / "coding-loops"
LOOP1 = LOOPS / "loop-1-critical-path"


def problems(fn: object, data: object, source: str) -> list[str]:
    assert callable(fn)
    with pytest.raises(ValidationFailed) as info:
        fn(data, source)
    return list(info.value.problems)


# -- config.json ------------------------------------------------------------------------


def test_seed_config_loads() -> None:
    config = load_config(LOOP1 / "config.json")
    assert config.name == "Loop 1: Critical Path"
    assert config.specs_dir == "coding-loops/loop-1-critical-path/specs"
    assert config.test_state_file == "test-state.json"
    assert config.model == "claude-opus-4-5-20251101"
    assert (config.max_attempts, config.auto_continue_delay, config.priority) == (3, 3, 1)
    assert config.health_check.enabled and config.health_check.interval_seconds == 30
    assert config.health_check.file == "health.json"
    assert config.agent is None and config.check_command is None


def test_template_config_gets_defaults() -> None:
    config = load_config(LOOPS / "loop-3-polish" / "config.json")
    assert config.priority == 5 and config.max_attempts == 3
    assert config.health_check.file == "health.json"


def test_config_extensions_and_unknown_fields_are_kept() -> None:
    config = config_from_data(
        {
            "name": "n",
            "specs_dir": "s",
            "agent": "command:aider --yes",
            "check_command": "pytest -q",
            "branch": "loop/n",
            "main_branch": "trunk",
            "owner": "team-a",
        }
    )
    assert config.agent == "command:aider --yes" and config.check_command == "pytest -q"
    assert config.main_branch == "trunk"
    assert config.model_extra == {"owner": "team-a"}
    for agent in ("claude", "anthropic", "script:demo.json"):
        assert config_from_data({"name": "n", "specs_dir": "s", "agent": agent}).agent == agent


def test_config_problems_name_file_and_field() -> None:
    found = problems(
        config_from_data,
        {
            "specs_dir": 3,
            "max_attempts": 0,
            "auto_continue_delay": "soon",
            "health_check": {"interval_seconds": -1},
            "agent": "gpt",
            "check_command": " ",
        },
        "loop-1/config.json",
    )
    assert found == [
        "loop-1/config.json: name: is required but missing — add it",
        "loop-1/config.json: specs_dir: must be text, got a number (3)",
        "loop-1/config.json: max_attempts: input should be greater than or equal to 1, got 0",
        "loop-1/config.json: auto_continue_delay: must be a number, got text ('soon')",
        "loop-1/config.json: health_check.interval_seconds: input should be greater than 0, got -1",
        "loop-1/config.json: agent: unknown agent 'gpt' — use 'claude', 'anthropic', "
        "'command:CMD' or 'script:FILE'",
        "loop-1/config.json: check_command: must be a shell command, or leave it out",
    ]


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        load_config(tmp_path / "config.json")
    assert info.value.problems == [f"Config file not found: {tmp_path / 'config.json'}"]
    path = tmp_path / "config.json"
    path.write_text('{\n  "name": "x",\n  "specs_dir": "s",\n}\n')
    with pytest.raises(ValidationFailed) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: line 4, column 1: invalid JSON: Expecting property name enclosed in double quotes "
        "— fix the syntax (check commas, quotes and brackets)"
    ]
    path.write_text("[1, 2]")
    with pytest.raises(ValidationFailed) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: must be a JSON object (a loop config with 'name' and 'specs_dir'), got a list"
    ]


# -- test-state.json -------------------------------------------------------------------


def test_seed_state_loads() -> None:
    state = load_state(LOOP1 / "specs" / "test-state.json")
    assert [t.id for t in state.tests] == ["CP-UFS-001", "CP-SPEC-005", "CP-BUILD-001"]
    spec5 = state.task("CP-SPEC-005")
    assert spec5.status is FileStatus.PENDING and spec5.attempts == 0
    assert spec5.last_result is None and spec5.depends_on == "CP-UFS-001"
    assert spec5.automatable and spec5.category == "spec"
    assert spec5.notes == "Specification agent extracts requirements from ideation"
    blocked = state.task("CP-BUILD-001")
    assert blocked.status is FileStatus.BLOCKED and blocked.attempts == 3
    assert state.summary is not None and state.summary.total == 3


def test_readme_new_test_example_loads() -> None:
    entry = TaskEntry.model_validate(
        {
            "id": "NEW-TEST-001",
            "category": "category",
            "status": "pending",
            "attempts": 0,
            "lastResult": None,
            "dependsOn": "PREVIOUS-TEST-ID",
            "automatable": True,
            "notes": "Description of what to implement",
        }
    )
    assert entry.dependencies == ["PREVIOUS-TEST-ID"]


def test_reset_example_from_the_runbook() -> None:
    """The seed's runbook resets a test with only id, status and attempts."""
    state = state_from_data({"tests": [{"id": "TEST-ID", "status": "pending", "attempts": 0}]})
    assert state.tests[0].status is FileStatus.PENDING and state.summary is None


def test_state_extensions() -> None:
    state = state_from_data(
        {
            "tests": [
                {"id": "A", "dependsOn": ["B", "loop-2-infrastructure/INF-1", ""], "priority": 1},
                {
                    "id": "B",
                    "title": "Bee",
                    "description": "the b",
                    "acceptance_criteria": [
                        {"criterion": "tests pass", "check": {"type": "script", "run": "pytest"}}
                    ],
                },
            ]
        }
    )
    assert state.task("A").dependencies == ["B", "loop-2-infrastructure/INF-1"]
    assert state.task("A").priority == 1
    b = state.task("B")
    assert b.acceptance_criteria == (
        Criterion(criterion="tests pass", check=ScriptCheck(run="pytest")),
    )


def test_state_problems() -> None:
    found = problems(
        state_from_data,
        {
            "tests": [
                {"id": "A", "status": "done", "attempts": -1},
                {"id": "A", "dependsOn": 7},
                "B",
                {"status": "pending", "automatable": "maybe"},
                {
                    "id": "C",
                    "acceptance_criteria": [
                        {"criterion": "tests pass"},
                        {"criterion": "lint", "check": {"type": "shell", "run": "ruff"}},
                        {"criterion": "x", "chek": 1, "check": {"type": "script", "run": "x"}},
                    ],
                },
                {"id": "D", "acceptance_criteria": []},
            ],
            "summary": {"total": "many"},
        },
        "specs/test-state.json",
    )
    assert found == [
        "specs/test-state.json: tests[0].status: must be one of 'pending', 'passed', 'failed', "
        "'blocked', got text ('done')",
        "specs/test-state.json: tests[0].attempts: input should be greater than or equal to 0, "
        "got -1",
        "specs/test-state.json: tests[1].dependsOn: must be a test id, 'loop-name/TASK-ID', a "
        "list of those, or null; got a number (7)",
        "specs/test-state.json: tests[1].id: Duplicate test id: 'A' — ids must be unique in the "
        "file",
        "specs/test-state.json: tests[2]: must be an object like {\"id\": ...}, got text ('B')",
        "specs/test-state.json: tests[3].id: is required but missing — add it",
        "specs/test-state.json: tests[3].automatable: must be true or false, got text ('maybe')",
        "specs/test-state.json: tests[4].acceptance_criteria[0].check: Criterion 'tests pass' "
        "has no 'check' — all criteria must be verifiable",
        "specs/test-state.json: tests[4].acceptance_criteria[1].check.type: Unknown check type "
        "'shell' for criterion 'lint'. Must be 'script' or 'natural'.",
        "specs/test-state.json: tests[4].acceptance_criteria[2].chek: unknown field — did you "
        "mean 'check'?",
        "specs/test-state.json: tests[5].acceptance_criteria: is empty — list at least one "
        "criterion, or leave the field out to use the loop's check_command",
        "specs/test-state.json: summary.total: must be a whole number, got text ('many')",
    ]
    assert problems(state_from_data, {"summary": {}}, "s.json") == [
        's.json: tests: is required — add "tests": [ ... ]'
    ]
    assert problems(state_from_data, {"tests": {}}, "s.json") == [
        "s.json: tests: must be a list, got a mapping"
    ]


def test_round_trip_preserves_every_field(tmp_path: Path) -> None:
    original = {
        "project": "vibe",
        "tests": [
            {
                "id": "T-1",
                "category": "c",
                "status": "pending",
                "attempts": 0,
                "lastResult": None,
                "dependsOn": None,
                "automatable": True,
                "notes": "n",
                "specFile": "01-ufs.md",
                "history": [{"at": "2026-01-07", "result": "FAILED"}],
            },
            {"id": "T-2", "status": "failed", "attempts": 2, "dependsOn": "T-1"},
        ],
        "summary": {"total": 99, "passed": 0, "failed": 0, "blocked": 0, "pending": 0, "note": "x"},
        "lastUpdated": "2026-01-07T09:15:00Z",
    }
    path = tmp_path / "test-state.json"
    path.write_text(json.dumps(original, indent=2))
    state = load_state(path)
    entry = state.task("T-2").model_copy(
        update={"status": FileStatus.PASSED, "attempts": 3, "last_result": "PASSED"}
    )
    written = save_state(path, state.with_task(entry))
    data = json.loads(path.read_text())
    assert data["project"] == "vibe" and data["lastUpdated"] == "2026-01-07T09:15:00Z"
    assert data["tests"][0] == original["tests"][0]  # untouched entry: byte-for-byte the same
    assert data["tests"][1] == {
        "id": "T-2",
        "status": "passed",
        "attempts": 3,
        "dependsOn": "T-1",
        "lastResult": "PASSED",
    }
    assert data["summary"] == {
        "total": 2,
        "passed": 1,
        "failed": 0,
        "blocked": 0,
        "pending": 1,
        "note": "x",
    }
    assert written.summary is not None and written.summary.passed == 1
    assert load_state(path) == written


def test_seed_state_round_trips_unchanged(tmp_path: Path) -> None:
    src = LOOP1 / "specs" / "test-state.json"
    path = tmp_path / "test-state.json"
    shutil.copy(src, path)
    save_state(path, load_state(path))
    assert json.loads(path.read_text()) == json.loads(src.read_text())


def test_with_task_appends_new_entries_and_recomputes() -> None:
    state = state_from_data({"tests": [{"id": "A", "status": "passed"}]})
    state = state.with_task(TaskEntry.model_validate({"id": "B", "status": "blocked"}))
    assert [t.id for t in state.tests] == ["A", "B"]
    assert state.summary is not None
    assert (state.summary.total, state.summary.passed, state.summary.blocked) == (2, 1, 1)


def test_duplicate_ids_rejected_when_built_directly() -> None:
    with pytest.raises(ValueError, match="Duplicate test id: 'A'"):
        LoopState.model_validate({"tests": [{"id": "A"}, {"id": "A"}]})


# -- atomic JSON writes ----------------------------------------------------------------


def test_atomic_write_is_jq_readable_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "test-state.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    write_json_atomic(path, {"tests": [], "summary": {"total": 0}, "é": "ü"})
    text = path.read_text(encoding="utf-8")
    assert (
        text
        == json.dumps(
            {"tests": [], "summary": {"total": 0}, "é": "ü"}, indent=2, ensure_ascii=False
        )
        + "\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test-state.json"]
    jq = shutil.which("jq")
    if jq:
        out = subprocess.run(
            [jq, "-c", ".summary"], input=text, capture_output=True, text=True, timeout=10
        )
        assert out.stdout.strip() == '{"total":0}'


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_new_file_gets_the_umask_mode(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_json_atomic(path, {})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# -- health.json -----------------------------------------------------------------------


def test_seed_health_loads_and_writes_the_seed_shape(tmp_path: Path) -> None:
    health = load_health(LOOP1 / "specs" / "health.json")
    assert health.status is LoopStatus.RUNNING and health.current_test == "CP-SPEC-005"
    assert health.progress == Progress(passed=12, total=45) and health.pid == 12345
    assert health.last_heartbeat == datetime(2026, 1, 7, 9, 15, tzinfo=UTC)
    out = tmp_path / "health.json"
    write_health(out, health)
    assert json.loads(out.read_text()) == json.loads((LOOP1 / "specs" / "health.json").read_text())


def test_health_statuses_and_timestamps(tmp_path: Path) -> None:
    for status in ("starting", "running", "stopped", "error"):
        health = health_from_data(
            {"loop_name": "L", "status": status, "last_heartbeat": "2026-01-07T10:15:00+01:00"}
        )
        assert health.last_heartbeat == datetime(2026, 1, 7, 9, 15, tzinfo=UTC)
    health = Health(
        loop_name="L",
        status=LoopStatus.STARTING,
        last_heartbeat=datetime(2026, 1, 7, 9, 15, 0, 123456, tzinfo=UTC),
    )
    path = tmp_path / "health.json"
    write_health(path, health)
    assert json.loads(path.read_text()) == {
        "loop_name": "L",
        "status": "starting",
        "current_test": None,
        "progress": {"passed": 0, "total": 0},
        "last_heartbeat": "2026-01-07T09:15:00Z",
        "pid": None,
    }
    status, heartbeat = problems(health_from_data, {"loop_name": "L", "status": "zombie"}, "h.json")
    assert status.startswith(
        "h.json: status: must be one of 'starting', 'running', 'stopped', 'error', "
    )
    assert status.endswith(", got text ('zombie')")
    assert heartbeat == "h.json: last_heartbeat: is required but missing — add it"


# -- fuzzing ---------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "tests",
        "summary",
        "id",
        "status",
        "attempts",
        "lastResult",
        "dependsOn",
        "automatable",
        "notes",
        "acceptance_criteria",
        "criterion",
        "check",
        "type",
        "run",
        "description",
        "name",
        "specs_dir",
        "health_check",
        "agent",
        "loop_name",
        "progress",
        "last_heartbeat",
        "total",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["pending", "passed", "script", "natural", "running", "claude", ""])
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=6)
    ),
    max_leaves=40,
)


@pytest.mark.parametrize(
    ("fn", "model"),
    [
        (state_from_data, LoopState),
        (config_from_data, LoopConfig),
        (health_from_data, Health),
    ],
)
@given(doc=DOCS)
def test_fuzz_structures(fn: object, model: type, doc: object) -> None:
    assert callable(fn)
    try:
        result = fn(doc, "f.json")
    except ValidationFailed as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)
    else:
        assert isinstance(result, model)


@pytest.mark.parametrize("loader", [load_state, load_config, load_health])
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_files(tmp_path_factory: pytest.TempPathFactory, loader: object, data: bytes) -> None:
    assert callable(loader)
    path = tmp_path_factory.mktemp("fuzz") / "file.json"
    path.write_bytes(data)
    try:
        loader(path)
    except ValidationFailed as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)


@pytest.mark.parametrize(
    "text",
    ["[" * 100000, '{"tests": [' + "1" * 5000 + "]}", '{"tests": NaN}', '{"a": 1e999}'],
)
def test_nasty_json(tmp_path: Path, text: str) -> None:
    path = tmp_path / "test-state.json"
    path.write_text(text)
    with pytest.raises(ValidationFailed):
        load_state(path)


def test_a_hand_edit_read_half_written_is_read_again_before_it_is_rejected(tmp_path: Path) -> None:
    import threading

    from events import ValidationFailed
    from infra.files import HAND_EDIT_SETTLE_S, load_settled
    from loops.harness import load_state

    path = tmp_path / "test-state.json"
    whole = '{"tests": [{"id": "T1", "status": "pending"}]}'
    path.write_text(whole[:17])  # an editor half-way through its write
    finisher = threading.Timer(HAND_EDIT_SETTLE_S / 3, path.write_text, args=(whole,))
    finisher.start()
    try:
        assert load_settled(load_state, path).tests[0].id == "T1"
    finally:
        finisher.join()
    path.write_text(whole[:17])  # nobody finishes it: the problem stands
    with pytest.raises(ValidationFailed):
        load_settled(load_state, path)


def test_the_files_statuses_are_the_seeds_four_and_a_projection_of_the_vocabulary() -> None:
    """One vocabulary (`events.TaskStatus`); test-state.json says it in the seed's words."""
    assert [s.value for s in FileStatus] == ["pending", "passed", "failed", "blocked"]
    assert {FileStatus.of(s) for s in TaskStatus} == set(FileStatus)
    assert FileStatus.of(TaskStatus.MERGED) is FileStatus.PASSED
    for status in (TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.HELD):
        assert FileStatus.of(status) is FileStatus.PENDING  # not done, nor failed
    for file_status in FileStatus:
        assert FileStatus.of(file_status.task_status) is file_status
