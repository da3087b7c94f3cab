"""SPEC.yaml: ralph_loop's fields, its eight rules and its messages (seed README)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from events import NaturalCheck, ScriptCheck, ValidationFailed
from loops.spec import DEFAULT_MAX_ITERATIONS, Spec, load_spec, parse_spec, spec_from_data

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SEED_SPEC = FIXTURES / "ralph_loop" / "SPEC.yaml"


def problems_of(text: str, source: str = "SPEC.yaml") -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        parse_spec(textwrap.dedent(text), source)
    assert info.value.path == source
    return info.value.problems


GOOD_TASK = """
  - id: add-endpoint
    title: Add GET /health endpoint
    description: Add the route.
    acceptance_criteria:
      - criterion: tests pass
        check: {type: script, run: pytest}
"""


def test_the_readme_example_loads() -> None:
    spec = load_spec(SEED_SPEC)
    assert spec.goal == "Add a /health endpoint to the Flask API"
    assert spec.context.startswith("The API is a small Flask app")
    assert spec.instructions == (
        "Follow the existing code style in app.py",
        "Do not introduce new dependencies",
    )
    assert spec.max_iterations == 5
    assert [t.id for t in spec.tasks] == ["add-endpoint", "write-test"]
    first = spec.task("add-endpoint")
    assert first.title == "Add GET /health endpoint"
    assert first.instructions == ("Use Flask's jsonify() for the response",)
    script, natural = first.acceptance_criteria
    assert script.criterion == "pytest passes with no failures"
    assert script.check == ScriptCheck(run="pytest tests/ -v")
    assert isinstance(natural.check, NaturalCheck)
    assert "Start the Flask app" in natural.check.description
    assert spec.task("write-test").instructions == ()


def test_iteration_priority_is_cli_then_spec_then_default() -> None:
    spec = load_spec(SEED_SPEC)
    assert spec.iterations(3) == 3
    assert spec.iterations() == 5
    bare = spec.model_copy(update={"max_iterations": None})
    assert bare.iterations() == DEFAULT_MAX_ITERATIONS == 10


def test_spec_file_not_found_is_the_seed_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationFailed) as info:
        load_spec("SPEC.yaml")
    assert info.value.problems == ["Spec file not found: SPEC.yaml"]
    assert str(info.value) == "Spec file not found: SPEC.yaml"


# -- the eight rules, with the seed's messages (Troubleshooting) where it has them ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "goal: ''\ntasks:" + GOOD_TASK,
            "SPEC.yaml: goal: Spec must have a non-empty 'goal'",
            id="1-goal-empty",
        ),
        pytest.param(
            "tasks:" + GOOD_TASK,
            "SPEC.yaml: goal: Spec must have a non-empty 'goal'",
            id="1-goal-missing",
        ),
        pytest.param(
            "goal: g\ntasks: []\n",
            "SPEC.yaml: tasks: Spec must have at least one task in 'tasks'",
            id="2-tasks-empty",
        ),
        pytest.param(
            "goal: g\n",
            "SPEC.yaml: tasks: Spec must have at least one task in 'tasks'",
            id="2-tasks-missing",
        ),
        pytest.param(
            """
            goal: g
            tasks:
              - id: ""
                title: t
                description: d
                acceptance_criteria: [{criterion: c, check: {type: script, run: x}}]
            """,
            "SPEC.yaml: tasks[0].id: Task #1 must have a non-empty 'id'",
            id="3-id-empty",
        ),
        pytest.param(
            "goal: g\ntasks:" + GOOD_TASK + GOOD_TASK,
            "SPEC.yaml: tasks[1].id: Duplicate task id: 'add-endpoint'",
            id="3-id-duplicate",
        ),
        pytest.param(
            """
            goal: g
            tasks:
              - id: my-task
                title: t
                description: d
            """,
            "SPEC.yaml: tasks[0].acceptance_criteria: Task 'my-task' has no acceptance_criteria"
            " — every task must have at least one verifiable criterion",
            id="4-no-criteria",
        ),
        pytest.param(
            """
            goal: g
            tasks:
              - id: my-task
                title: t
                description: d
                acceptance_criteria: []
            """,
            "SPEC.yaml: tasks[0].acceptance_criteria: Task 'my-task' has no acceptance_criteria"
            " — every task must have at least one verifiable criterion",
            id="4-empty-criteria",
        ),
        pytest.param(
            """
            goal: g
            tasks:
              - id: t1
                title: t
                description: d
                acceptance_criteria:
                  - criterion: tests pass
            """,
            "SPEC.yaml: tasks[0].acceptance_criteria[0].check: Criterion 'tests pass' has no "
            "'check' — all criteria must be verifiable",
            id="5-no-check",
        ),
        pytest.param(
            """
            goal: g
            tasks:
              - id: t1
                title: t
                description: d
                acceptance_criteria:
                  - criterion: tests pass
                    check: {type: shell, run: pytest}
            """,
            "SPEC.yaml: tasks[0].acceptance_criteria[0].check.type: Unknown check type 'shell' "
            "for criterion 'tests pass'. Must be 'script' or 'natural'.",
            id="6-unknown-type",
        ),
        pytest.param(
            """
            goal: g
            tasks:
              - id: t1
                title: t
                description: d
                acceptance_criteria:
                  - criterion: tests pass
                    check: {type: script, run: "  "}
            """,
            "SPEC.yaml: tasks[0].acceptance_criteria[0].check.run: Script check for criterion "
            "'tests pass' must have a non-empty 'run' — give the shell command to run",
            id="7-script-run-empty",
        ),
        pytest.param(
            """
            goal: g
            tasks:
              - id: t1
                title: t
                description: d
                acceptance_criteria:
                  - criterion: looks right
                    check: {type: natural}
            """,
            "SPEC.yaml: tasks[0].acceptance_criteria[0].check.description: Natural check for "
            "criterion 'looks right' must have a non-empty 'description' — give what to check",
            id="8-natural-description-empty",
        ),
    ],
)
def test_each_rule_has_its_message(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_seed_messages_are_intact_inside_the_prefixed_lines() -> None:
    seed = [
        "Spec must have a non-empty 'goal'",
        "Task 'my-task' has no acceptance_criteria — every task must have at least one "
        "verifiable criterion",
        "Criterion 'tests pass' has no 'check' — all criteria must be verifiable",
        "Unknown check type 'shell' for criterion 'tests pass'. Must be 'script' or 'natural'.",
        "Duplicate task id: 'add-endpoint'",
    ]
    text = """
    goal: ""
    tasks:
      - id: my-task
        title: t
        description: d
      - id: add-endpoint
        title: t
        description: d
        acceptance_criteria:
          - criterion: tests pass
          - criterion: tests pass
            check: {type: shell}
      - id: add-endpoint
        title: t
        description: d
        acceptance_criteria: [{criterion: c, check: {type: natural, description: n}}]
    """
    found = problems_of(text)
    messages = [line.split(": ", 2)[2] for line in found]
    assert messages == seed  # every problem, first one first


def test_every_problem_is_reported_in_document_order() -> None:
    text = """
    goal: g
    max_iterations: 0
    tasks:
      - id: a
        title: ""
        description: [x]
        acceptance_criteria: [{criterion: c, check: {type: script, run: ""}}]
      - "just a string"
      - id: b
        titel: typo
        description: d
        acceptance_critera: []
    """
    assert problems_of(text) == [
        "SPEC.yaml: max_iterations: must be at least 1, got 0 — or leave it out for the "
        "default (10)",
        "SPEC.yaml: tasks[0].title: Task 'a' must have a non-empty 'title'",
        "SPEC.yaml: tasks[0].description: must be text, got a list",
        "SPEC.yaml: tasks[0].acceptance_criteria[0].check.run: Script check for criterion 'c' "
        "must have a non-empty 'run' — give the shell command to run",
        "SPEC.yaml: tasks[1]: each task must be a mapping with 'id', 'title', 'description' "
        "and 'acceptance_criteria', got text ('just a string')",
        "SPEC.yaml: tasks[2].title: Task 'b' must have a non-empty 'title' (found 'titel' — "
        "did you mean 'title'?)",
        "SPEC.yaml: tasks[2].acceptance_criteria: Task 'b' has no acceptance_criteria — every "
        "task must have at least one verifiable criterion (found 'acceptance_critera' — did "
        "you mean 'acceptance_criteria'?)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "SPEC.yaml: is empty — a spec needs a 'goal' and at least one task"),
        ("- a\n- b\n", "SPEC.yaml: must be a YAML mapping with 'goal' and 'tasks', got a list"),
        ("goal: [a]\ntasks:" + GOOD_TASK, "SPEC.yaml: goal: must be text, got a list"),
        (
            "goal: yes\ntasks:" + GOOD_TASK,
            "SPEC.yaml: goal: must be text, got a boolean (true) — quote the value",
        ),
        ("goal: g\ntasks: {a: 1}\n", "SPEC.yaml: tasks: must be a list of tasks, got a mapping"),
        (
            "goal: g\ninstructions: {a: 1}\ntasks:" + GOOD_TASK,
            "SPEC.yaml: instructions: must be a list of text, got a mapping",
        ),
        (
            "goal: g\nmax_iterations: many\ntasks:" + GOOD_TASK,
            "SPEC.yaml: max_iterations: must be a whole number of at least 1, got text ('many')",
        ),
        (
            "goal: g\ntasks:\n  - id: t\n    title: t\n    description: d\n"
            "    acceptance_criteria: [pytest]\n",
            "SPEC.yaml: tasks[0].acceptance_criteria[0]: each criterion must be a mapping with "
            "'criterion' and 'check', got text ('pytest')",
        ),
        (
            "goal: g\ntasks:\n  - id: t\n    title: t\n    description: d\n"
            "    acceptance_criteria: [{criterion: c, check: pytest}]\n",
            "SPEC.yaml: tasks[0].acceptance_criteria[0].check: Criterion 'c' has a 'check' that "
            "is text ('pytest'), not a mapping — write {type: script, run: CMD} or "
            "{type: natural, description: TEXT}",
        ),
        (
            "goal: g\ntasks:\n  - id: t\n    title: t\n    description: d\n"
            "    acceptance_criteria: [{check: {type: script, run: x}}]\n",
            "SPEC.yaml: tasks[0].acceptance_criteria[0].criterion: Criterion #1 of task 't' must "
            "have a non-empty 'criterion' — say what must be true",
        ),
        (
            "goal: g\ntasks:\n  - id: t\n    title: t\n    description: d\n"
            "    acceptance_criteria: [{criterion: c, check: {run: x}}]\n",
            "SPEC.yaml: tasks[0].acceptance_criteria[0].check.type: Unknown check type '' for "
            "criterion 'c'. Must be 'script' or 'natural'.",
        ),
    ],
)
def test_wrong_shapes_and_types(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_yaml_syntax_error_names_line_and_column() -> None:
    text = "goal: g\ntasks:\n  - id: a\n   title: b: c\n"
    (line,) = problems_of(text, "my/SPEC.yaml")
    assert line.startswith("my/SPEC.yaml: line 4, column ")
    assert "invalid YAML" in line and "fix the syntax" in line


def test_binary_and_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "SPEC.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ValidationFailed) as info:
        load_spec(path)
    assert info.value.problems == [f"{path}: is binary, not text — give a YAML or JSON file"]
    path.write_bytes(b"goal: caf\xe9\n")
    with pytest.raises(ValidationFailed) as info:
        load_spec(path)
    assert "is not UTF-8 text" in info.value.problems[0]


def test_a_directory_is_not_a_spec(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        load_spec(tmp_path)
    assert info.value.problems == [f"{tmp_path}: is a directory, not a file — give the file's path"]


def test_ralph_loop_leniency_is_kept() -> None:
    """Unknown keys are ignored; numbers read as text; one instruction may be a string."""
    spec = parse_spec(
        textwrap.dedent(
            """
            goal: g
            owner: me
            instructions: be careful
            tasks:
              - id: 1
                title: 2
                description: d
                estimate: 3h
                acceptance_criteria:
                  - criterion: c
                    note: extra
                    check: {type: script, run: "true", timeout_s: 30}
            """
        )
    )
    assert spec.instructions == ("be careful",)
    assert spec.tasks[0].id == "1" and spec.tasks[0].title == "2"
    check = spec.tasks[0].acceptance_criteria[0].check
    assert isinstance(check, ScriptCheck) and check.timeout_s == 30.0


def test_models_are_frozen_and_check_ids_when_built_directly() -> None:
    spec = load_spec(SEED_SPEC)
    with pytest.raises(ValueError):
        spec.goal = "x"  # type: ignore[misc]
    data = spec.model_dump()
    data["tasks"] = [data["tasks"][0], data["tasks"][0]]
    with pytest.raises(ValueError, match="Duplicate task id: 'add-endpoint'"):
        Spec.model_validate(data)


def test_problems_are_single_lines() -> None:
    text = 'goal: g\ntasks:\n  - id: "a\\nb"\n    title: t\n    description: d\n'
    lines = problems_of(text)
    assert all("\n" not in line for line in lines)
    assert any("Task 'a\\nb' has no acceptance_criteria" in line for line in lines)
    assert any("task id 'a\\nb' contains a control character" in line for line in lines)


# -- fuzzing: no input raises anything but ValidationFailed ----------------------------

KEYS = st.sampled_from(
    [
        "goal",
        "context",
        "instructions",
        "max_iterations",
        "tasks",
        "id",
        "title",
        "description",
        "acceptance_criteria",
        "criterion",
        "check",
        "type",
        "run",
        "timeout_s",
        "script",
        "natural",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["script", "natural", "", " ", "x"])
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=30,
)


def _only_validation_failed(fn: object, *args: object) -> None:
    assert callable(fn)
    try:
        result = fn(*args)
    except ValidationFailed as exc:
        assert exc.problems and all(isinstance(p, str) and "\n" not in p for p in exc.problems)
    else:
        assert isinstance(result, Spec)


@given(DOCS)
def test_fuzz_structures(doc: object) -> None:
    _only_validation_failed(spec_from_data, doc, "SPEC.yaml")


@given(DOCS)
def test_fuzz_structures_through_yaml(doc: object) -> None:
    _only_validation_failed(parse_spec, yaml.safe_dump(doc), "SPEC.yaml")


@given(st.binary(max_size=300))
def test_fuzz_bytes(data: bytes) -> None:
    _only_validation_failed(parse_spec, data, "SPEC.yaml")


@given(st.text(alphabet=st.sampled_from(list("goal:tasks- \n[]{}'\"&*!|>#?,%@`1.")), max_size=80))
def test_fuzz_yaml_like_text(text: str) -> None:
    _only_validation_failed(parse_spec, text, "SPEC.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000,
        "a: &a [*a]\n",
        "goal: 1" + "0" * 5000 + "\n",
        "goal: 2024-13-45\n",
        "!!python/object:os.system x\n",
        "goal: !!binary aGVsbG8=\ntasks: []\n",
        "? [a]\n: b\n",
        "\ufeffgoal: g\n",
    ],
)
def test_nasty_yaml(text: str) -> None:
    _only_validation_failed(parse_spec, text, "SPEC.yaml")
