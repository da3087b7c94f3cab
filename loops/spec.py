"""SPEC.yaml, exactly as ralph_loop reads it: goal, context, instructions, tasks.

The eight validation rules and their messages are ralph_loop's (its README,
"Troubleshooting"). ralph_loop stops at the first problem; `load_spec` reports every
problem, first one first, each prefixed with the file and the field:

    SPEC.yaml: tasks[1].acceptance_criteria[0].check.type: Unknown check type 'shell' ...

Unknown keys are ignored, as ralph_loop ignored them: the spec is read, never
rewritten, so nothing is lost. Scalars YAML reads as numbers (`id: 1`) count as text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from events import Criterion, ValidationFailed
from loops.files import (
    PARSE_ERRORS,
    by_id,
    check_unique_ids,
    problem,
    read_text,
    show,
    translate_errors,
    type_name,
)
from loops.names import task_id_problem

__all__ = [
    "DEFAULT_MAX_ITERATIONS",
    "Spec",
    "Task",
    "check_criteria",
    "load_spec",
    "parse_spec",
    "spec_from_data",
]

DEFAULT_MAX_ITERATIONS = 10

_SPEC_KEYS = ("goal", "context", "instructions", "max_iterations", "tasks")
_TASK_KEYS = ("id", "title", "description", "instructions", "acceptance_criteria")
_CRITERION_KEYS = ("criterion", "check")
_CHECK_KEYS = {"script": ("type", "run", "timeout_s"), "natural": ("type", "description")}


class Task(BaseModel):
    """One task of a spec: what to build and how to verify it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, description="unique identifier across the spec")
    title: str = Field(min_length=1, description="short label")
    description: str = Field(min_length=1, description="what to implement")
    instructions: tuple[str, ...] = Field(default=(), description="task-specific hints")
    acceptance_criteria: tuple[Criterion, ...] = Field(
        min_length=1, description="at least one verifiable criterion"
    )


class Spec(BaseModel):
    """A SPEC.yaml: the goal, shared context and hints, and the tasks."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    goal: str = Field(min_length=1, description="what the spec achieves overall")
    context: str = Field(default="", description="background for the agent")
    instructions: tuple[str, ...] = Field(default=(), description="hints for every task")
    max_iterations: int | None = Field(
        default=None, ge=1, description="overrides the default (10); the CLI flag overrides this"
    )
    tasks: tuple[Task, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Spec:
        check_unique_ids(self.tasks, "task")
        return self

    def task(self, task_id: str) -> Task:
        """The task with this id; `KeyError` if there is none."""
        return by_id(self.tasks, task_id)

    def iterations(self, cli_value: int | None = None) -> int:
        """ralph_loop's priority: CLI flag > spec `max_iterations` > default (10)."""
        if cli_value is not None:
            return cli_value
        return self.max_iterations if self.max_iterations is not None else DEFAULT_MAX_ITERATIONS


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a SPEC.yaml; `ValidationFailed` lists every problem."""
    source = os.fspath(path)
    text = read_text(Path(source), source, f"Spec file not found: {source}")
    return parse_spec(text, source)


def parse_spec(text: str | bytes, source: str = "SPEC.yaml") -> Spec:
    """Validate SPEC.yaml text (`source` names it in messages)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationFailed(
                [problem(source, "", "is not UTF-8 text — save it as UTF-8")], path=source
            ) from None
    if "\x00" in text:
        raise ValidationFailed(
            [problem(source, "", "is binary, not text — give a YAML file")], path=source
        )
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "syntax error"
        raise ValidationFailed(
            [
                problem(
                    source,
                    where,
                    f"invalid YAML: {show(what, 100)} — fix the syntax (check indentation, "
                    "colons and quoting)",
                )
            ],
            path=source,
        ) from None
    except (yaml.YAMLError, *PARSE_ERRORS) as exc:
        raise ValidationFailed(
            [problem(source, "", f"invalid YAML: {show(str(exc), 100)}")], path=source
        ) from None
    return spec_from_data(data, source)


def spec_from_data(data: object, source: str = "SPEC.yaml") -> Spec:
    """Validate an already parsed SPEC.yaml document."""
    if data is None:
        raise ValidationFailed(
            [problem(source, "", "is empty — a spec needs a 'goal' and at least one task")],
            path=source,
        )
    if not isinstance(data, dict):
        raise ValidationFailed(
            [
                problem(
                    source,
                    "",
                    f"must be a YAML mapping with 'goal' and 'tasks', got {type_name(data)}",
                )
            ],
            path=source,
        )
    problems: list[str] = []
    clean = _check_spec(data, source, problems)
    if problems:
        raise ValidationFailed(problems, path=source)
    try:
        return Spec.model_validate(clean)
    except ValidationError as exc:  # a rule the hand checks above missed
        raise ValidationFailed(translate_errors(exc, source), path=source) from None


# -- the hand-written checks (they carry ralph_loop's messages) ----------------------


def _hint(data: Mapping[Any, Any], wanted: str, known: tuple[str, ...]) -> str:
    """` (found 'acceptance_critera' — did you mean 'acceptance_criteria'?)` or ``."""
    unknown = [k for k in data if isinstance(k, str) and k not in known]
    close = get_close_matches(wanted, unknown, n=1, cutoff=0.75)
    return f" (found '{show(close[0])}' — did you mean '{wanted}'?)" if close else ""


def _text(
    data: Mapping[Any, Any], key: str, source: str, where: str, problems: list[str]
) -> str | None:
    """An optional text field: absent -> None; numbers count as text; other types are problems."""
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    fix = " — quote the value" if not isinstance(value, list | dict) else ""
    problems.append(problem(source, where, f"must be text, got {type_name(value)}{fix}"))
    return None


def _required(
    data: Mapping[Any, Any],
    key: str,
    source: str,
    where: str,
    problems: list[str],
    missing: str,
) -> str | None:
    """A required text field: blank or absent -> the `missing` message."""
    before = len(problems)
    value = _text(data, key, source, where, problems)
    if value is not None and value.strip():
        return value
    if len(problems) == before:  # not already reported as the wrong type
        problems.append(problem(source, where, missing))
    return None


def _text_list(
    data: Mapping[Any, Any], key: str, source: str, where: str, problems: list[str]
) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        problems.append(problem(source, where, f"must be a list of text, got {type_name(value)}"))
        return []
    out: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            out.append(str(item))
        else:
            problems.append(
                problem(source, f"{where}[{i}]", f"must be text, got {type_name(item)}")
            )
    return out


def _check_spec(data: Mapping[Any, Any], source: str, problems: list[str]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    goal = _required(
        data,
        "goal",
        source,
        "goal",
        problems,
        "Spec must have a non-empty 'goal'" + _hint(data, "goal", _SPEC_KEYS),
    )
    clean["goal"] = goal
    context = _text(data, "context", source, "context", problems)
    clean["context"] = context or ""
    clean["instructions"] = _text_list(data, "instructions", source, "instructions", problems)

    max_iterations = data.get("max_iterations")
    if max_iterations is not None:
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
            problems.append(
                problem(
                    source,
                    "max_iterations",
                    f"must be a whole number of at least 1, got {type_name(max_iterations)}",
                )
            )
        elif max_iterations < 1:
            problems.append(
                problem(
                    source,
                    "max_iterations",
                    f"must be at least 1, got {max_iterations} — or leave it out for the "
                    f"default ({DEFAULT_MAX_ITERATIONS})",
                )
            )
        else:
            clean["max_iterations"] = max_iterations

    tasks = data.get("tasks")
    clean_tasks: list[dict[str, Any]] = []
    if tasks is None or tasks == []:
        problems.append(
            problem(
                source,
                "tasks",
                "Spec must have at least one task in 'tasks'" + _hint(data, "tasks", _SPEC_KEYS),
            )
        )
    elif not isinstance(tasks, list):
        problems.append(
            problem(source, "tasks", f"must be a list of tasks, got {type_name(tasks)}")
        )
    else:
        seen: set[str] = set()
        for i, raw in enumerate(tasks):
            task = _check_task(raw, i, source, seen, problems)
            if task is not None:
                clean_tasks.append(task)
    clean["tasks"] = clean_tasks
    return clean


def _check_task(
    raw: object, index: int, source: str, seen: set[str], problems: list[str]
) -> dict[str, Any] | None:
    where = f"tasks[{index}]"
    if not isinstance(raw, dict):
        problems.append(
            problem(
                source,
                where,
                "each task must be a mapping with 'id', 'title', 'description' and "
                f"'acceptance_criteria', got {type_name(raw)}",
            )
        )
        return None
    task_id = _required(
        raw,
        "id",
        source,
        f"{where}.id",
        problems,
        f"Task #{index + 1} must have a non-empty 'id'" + _hint(raw, "id", _TASK_KEYS),
    )
    if task_id is None:
        label = f"#{index + 1}"
    else:
        label = f"'{show(task_id)}'"
        if task_id in seen:
            problems.append(problem(source, f"{where}.id", f"Duplicate task id: '{show(task_id)}'"))
        seen.add(task_id)
        odd = task_id_problem(task_id)
        if odd:
            problems.append(problem(source, f"{where}.id", odd))
    clean: dict[str, Any] = {"id": task_id}
    for key in ("title", "description"):
        clean[key] = _required(
            raw,
            key,
            source,
            f"{where}.{key}",
            problems,
            f"Task {label} must have a non-empty '{key}'" + _hint(raw, key, _TASK_KEYS),
        )
    clean["instructions"] = _text_list(
        raw, "instructions", source, f"{where}.instructions", problems
    )
    criteria = raw.get("acceptance_criteria")
    if criteria is None or criteria == []:
        problems.append(
            problem(
                source,
                f"{where}.acceptance_criteria",
                f"Task {label} has no acceptance_criteria — every task must have at least one "
                "verifiable criterion" + _hint(raw, "acceptance_criteria", _TASK_KEYS),
            )
        )
        clean["acceptance_criteria"] = []
    else:
        clean["acceptance_criteria"] = check_criteria(
            criteria, source, f"{where}.acceptance_criteria", label, problems
        )
    return clean


def check_criteria(
    raw: object,
    source: str,
    where: str,
    task_label: str,
    problems: list[str],
    *,
    strict: bool = False,
) -> list[dict[str, Any]]:
    """Check a list of acceptance criteria in the SPEC.yaml form, with ralph_loop's messages.

    Problems are appended to `problems`; the return value is the criteria cleaned for
    `events.Criterion`. `strict` reports unknown keys (files we own, such as a
    test-state entry's criteria) instead of ignoring them (SPEC.yaml, as ralph_loop).
    """
    if not isinstance(raw, list):
        problems.append(problem(source, where, f"must be a list of criteria, got {type_name(raw)}"))
        return []
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.append(
                problem(
                    source,
                    here,
                    f"each criterion must be a mapping with 'criterion' and 'check', got {type_name(item)}",
                )
            )
            continue
        if strict:
            problems.extend(_unknown_keys(item, _CRITERION_KEYS, source, here))
        text = _required(
            item,
            "criterion",
            source,
            f"{here}.criterion",
            problems,
            f"Criterion #{i + 1} of task {task_label} must have a non-empty 'criterion' — "
            "say what must be true",
        )
        name = f"#{i + 1} of task {task_label}" if text is None else f"'{show(text)}'"
        check = _check_check(item.get("check"), name, source, f"{here}.check", problems, strict)
        if text is not None and check is not None:
            out.append({"criterion": text, "check": check})
    return out


def _check_check(
    check: object, name: str, source: str, where: str, problems: list[str], strict: bool
) -> dict[str, Any] | None:
    if check is None:
        problems.append(
            problem(
                source, where, f"Criterion {name} has no 'check' — all criteria must be verifiable"
            )
        )
        return None
    if not isinstance(check, dict):
        problems.append(
            problem(
                source,
                where,
                f"Criterion {name} has a 'check' that is {type_name(check)}, not a mapping — "
                "write {type: script, run: CMD} or {type: natural, description: TEXT}",
            )
        )
        return None
    kind = check.get("type")
    if kind not in _CHECK_KEYS:
        shown = "" if kind is None else show(kind)
        problems.append(
            problem(
                source,
                f"{where}.type",
                f"Unknown check type '{shown}' for criterion {name}. Must be 'script' or 'natural'.",
            )
        )
        return None
    assert isinstance(kind, str)
    if strict:
        problems.extend(_unknown_keys(check, _CHECK_KEYS[kind], source, where))
    field = "run" if kind == "script" else "description"
    what = "Script" if kind == "script" else "Natural"
    fix = "the shell command to run" if kind == "script" else "what to check"
    value = _required(
        check,
        field,
        source,
        f"{where}.{field}",
        problems,
        f"{what} check for criterion {name} must have a non-empty '{field}' — give {fix}",
    )
    if value is None:
        return None
    out: dict[str, Any] = {"type": kind, field: value}
    if kind == "script" and check.get("timeout_s") is not None:
        timeout = check["timeout_s"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            problems.append(
                problem(
                    source,
                    f"{where}.timeout_s",
                    f"must be a number of seconds above 0, got {type_name(timeout)}",
                )
            )
        else:
            out["timeout_s"] = float(timeout)
    return out


def _unknown_keys(
    data: Mapping[Any, Any], known: tuple[str, ...], source: str, where: str
) -> list[str]:
    out = []
    for key in data:
        if key not in known:
            close = get_close_matches(str(key), known, n=1, cutoff=0.75)
            fix = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(known)}"
            out.append(problem(source, f"{where}.{show(key)}", f"unknown field — {fix}"))
    return out
