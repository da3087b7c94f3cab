"""The coding-loops harness files: config.json, test-state.json, health.json, and the
optional project-wide project.json.

Fields and statuses are the seed's (`seeds/coding-loops-README.md`). Extensions are
additive: a config may name its `agent`, a default `check_command` and its branches;
a test-state entry may carry `acceptance_criteria` in the SPEC.yaml form, a
`priority`, a `title` and a `description`, and its `dependsOn` may name another
loop's task (`loop-name/TASK-ID`) or be a list.

Which models keep unknown fields, deliberately:
- config.json, test-state.json (document, entries, summary) and health.json keep
  them (`extra="allow"`) and write them back: these are the seed harness's files,
  the loop rewrites the state file, and a user's data must never be lost.
- `acceptance_criteria` and `sandbox` are new input we own, so they forbid unknown
  keys: a misspelt `chek` is an error, not a silently unverified criterion, and a
  misspelt `writeable` is not a silently read-only path. So does project.json (ours
  too: a misspelt `test_comand` must not silently skip the tests).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from events import Criterion, LoopStatus, ModelPrice, ValidationFailed
from events.secrets import redact_obj
from infra.files import write_json_atomic
from loops.budget_config import LoopBudget, ProjectBudget
from loops.files import (
    by_id,
    check_unique_ids,
    parse_json,
    problem,
    read_text,
    show,
    translate_errors,
    type_name,
)
from loops.names import ref_problem, task_id_problem
from loops.sandbox import SandboxConfig
from loops.spec import check_criteria

__all__ = [
    "AGENT_PATTERN",
    "PROJECT_FILE",
    "Health",
    "HealthCheckConfig",
    "LoopConfig",
    "LoopState",
    "Progress",
    "ProjectConfig",
    "StateSummary",
    "TaskEntry",
    "TaskStatus",
    "config_from_data",
    "health_from_data",
    "load_config",
    "load_health",
    "load_project_config",
    "load_state",
    "project_config_from_data",
    "save_state",
    "state_from_data",
    "write_health",
]

_KEEP = ConfigDict(
    frozen=True,
    extra="allow",
    validate_by_name=True,
    validate_by_alias=True,
    serialize_by_alias=True,
)

AGENT_PATTERN = re.compile(r"^(claude|anthropic|command:\s*\S.*|script:\s*\S.*)$", re.DOTALL)


M = TypeVar("M", bound=BaseModel)


class TaskStatus(StrEnum):
    """A test's state in test-state.json (the seed's four)."""

    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"
    BLOCKED = "blocked"


# -- config.json ----------------------------------------------------------------------


class HealthCheckConfig(BaseModel):
    """`health_check` of config.json: where and how often the loop writes health.json."""

    model_config = _KEEP

    enabled: bool = True
    interval_seconds: float = Field(default=30, gt=0)
    file: str = Field(default="health.json", min_length=1)


class LoopConfig(BaseModel):
    """A loop's config.json (seed fields, plus `agent`, `check_command`, branches)."""

    model_config = _KEEP

    name: str = Field(min_length=1, description="display name, e.g. 'Loop 1: Critical Path'")
    specs_dir: str = Field(
        min_length=1,
        description="directory of test-state.json and *.md specs, relative to the project root",
    )
    test_state_file: str = Field(default="test-state.json", min_length=1)
    model: str | None = Field(default=None, description="model for the agent")
    max_attempts: int = Field(default=3, ge=1, description="failed attempts before blocking")
    auto_continue_delay: float = Field(default=3, ge=0, description="seconds between iterations")
    priority: int = Field(default=10, description="lower runs first (1 = critical)")
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    agent: str | None = Field(
        default=None, description="claude, anthropic, command:CMD or script:FILE"
    )
    check_command: str | None = Field(
        default=None,
        min_length=1,
        description="shell command that verifies tasks without acceptance_criteria",
    )
    branch: str | None = Field(default=None, description="the loop's branch (default loop/<dir>)")
    main_branch: str | None = Field(default=None, description="the branch merges go to")
    agent_timeout_s: float = Field(
        default=30 * 60,
        gt=0,
        description="seconds one agent run may take before its process group is killed "
        "(`loops run --agent-timeout` sets it for a run)",
    )
    account: str | None = Field(
        default=None,
        min_length=1,
        description="the agent account this loop calls; loops naming the same account wait "
        "out one usage limit together (default: from the agent's credentials or program)",
    )
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig,
        description="what the agent may see, write and reach (mode, network, writable, "
        'readable, env); a bare "off" or "required" sets the mode',
    )
    budget: LoopBudget | None = Field(
        default=None,
        description="what this loop may spend: `task` and `loop` limits of `usd`, `tokens`, "
        "`calls`, `wall_s` (any subset), `warn_at`, `hard_ceiling`; over project.json's",
    )

    @field_validator("agent")
    @classmethod
    def _agent(cls, value: str | None) -> str | None:
        if value is not None and not AGENT_PATTERN.match(value):
            raise ValueError(
                f"unknown agent '{show(value)}' — use 'claude', 'anthropic', "
                "'command:CMD' or 'script:FILE'"
            )
        return value

    @field_validator("branch", "main_branch")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None:
            why = ref_problem(value)
            if why:
                raise ValueError(f"'{show(value)}' is not a valid git branch name: it {why}")
        return value

    @field_validator("check_command")
    @classmethod
    def _check_command(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a shell command, or leave it out")
        return value


def load_config(path: str | os.PathLike[str]) -> LoopConfig:
    """Read and validate a config.json; `ValidationFailed` lists every problem."""
    source = os.fspath(path)
    text = read_text(Path(source), source, f"Config file not found: {source}")
    return config_from_data(parse_json(text, source), source)


def config_from_data(data: object, source: str = "config.json") -> LoopConfig:
    return _validated(LoopConfig, data, source, "a loop config with 'name' and 'specs_dir'")


# -- project.json ---------------------------------------------------------------------

PROJECT_FILE = "project.json"


class ProjectConfig(BaseModel):
    """`DIR/project.json`, next to the `loop-*` directories: settings of the whole
    project (optional; every field has a default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    test_command: str | None = Field(
        default=None,
        min_length=1,
        description="the project's full test suite, run on every merged tree "
        "(`--test-command` overrides it)",
    )
    protected: tuple[str, ...] = Field(
        default=(),
        description="extra globs of files a claim must not change, added to the defaults "
        "(tests/checks dirs, spec/state files, Makefile, pyproject.toml, conftest.py ...); "
        "`**` spans directories, a name without `/` matches at any depth",
    )
    recheck_merged: bool = Field(
        default=True,
        description="re-run the script checks of every task already merged on each merge, "
        "so a later merge cannot break an earlier task",
    )
    check_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="timeout of a check that has no `timeout_s` of its own (default 600)",
    )
    check_workers: int = Field(
        default=2, ge=1, description="checks of one merge run concurrently, at most this many"
    )
    merge_batch_size: int = Field(
        default=10,
        ge=1,
        description="verified claims the merge queue stacks and checks together at the tip "
        "(a red stack is retried once, then bisected); 1 merges one at a time",
    )
    merge_fill_wait_s: float = Field(
        default=2.0,
        ge=0,
        description="how long a claim waits for others to fill a batch before it merges",
    )
    flaky_policy: Literal["pass", "block"] = Field(
        default="pass",
        description="a merge check that fails, then passes on the unchanged tree is flaky: "
        "`pass` lands the batch and records it, `block` keeps the batch queued for a clean run",
    )
    flaky_escalate_after: int = Field(
        default=3,
        ge=0,
        description="a check flaky more often than this is put to a person to fix",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="per-model prices in US dollars per million tokens (`input`, `output`, "
        "`cache_read`, `cache_write`), over the built-in table; an agent call is priced from "
        "them when the agent reports tokens but no cost",
    )
    budget: ProjectBudget | None = Field(
        default=None,
        description="what the project may spend: `project` and `day` (rolling 24 h) limits, "
        "and defaults of every loop's `task` and `loop` limits; each of `usd`, `tokens`, "
        "`calls`, `wall_s`; `warn_at` (default 0.8), `hard_ceiling` (default false)",
    )
    merge_retry_cost_s: float = Field(
        default=60.0,
        ge=0,
        description="merge order is oldest first; each earlier failed try of a task costs it "
        "this many seconds of waiting",
    )

    @field_validator("test_command")
    @classmethod
    def _test_command(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a shell command, or leave it out")
        return value

    @field_validator("protected")
    @classmethod
    def _protected(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for glob in value:
            if not glob.strip():
                raise ValueError("globs must not be empty")
        return value


def load_project_config(path: str | os.PathLike[str]) -> ProjectConfig:
    """Read and validate a project.json; `ValidationFailed` lists every problem."""
    source = os.fspath(path)
    text = read_text(Path(source), source, f"Project file not found: {source}")
    return project_config_from_data(parse_json(text, source), source)


def project_config_from_data(data: object, source: str = PROJECT_FILE) -> ProjectConfig:
    return _validated(ProjectConfig, data, source, "project settings such as 'test_command'")


# -- test-state.json ------------------------------------------------------------------


class TaskEntry(BaseModel):
    """One entry of `tests` in test-state.json."""

    model_config = _KEEP

    id: str = Field(min_length=1)
    category: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = Field(
        default=0,
        ge=0,
        description="failed attempts: claims that failed verification, or attempts whose "
        "iterations ran out (`loops status` shows the same number; reset sets it to 0)",
    )
    last_result: str | None = Field(default=None, alias="lastResult")
    depends_on: str | list[str] | None = Field(
        default=None,
        alias="dependsOn",
        description="a test id, 'loop-name/TASK-ID' for another loop's task, or a list",
    )
    automatable: bool = True
    notes: str | None = None
    title: str | None = None
    description: str | None = None
    priority: int | None = Field(default=None, description="lower runs first")
    acceptance_criteria: tuple[Criterion, ...] | None = Field(
        default=None, min_length=1, description="in the SPEC.yaml form"
    )

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends_on(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ValueError(
            f"must be a test id, 'loop-name/TASK-ID', a list of those, or null; "
            f"got {type_name(value)}"
        )

    @property
    def dependencies(self) -> list[str]:
        """The non-empty dependency strings, whatever form `dependsOn` took."""
        raw = [self.depends_on] if isinstance(self.depends_on, str) else self.depends_on or []
        return [d.strip() for d in raw if d.strip()]


class StateSummary(BaseModel):
    """`summary` of test-state.json; recomputed whenever the loop writes the file."""

    model_config = _KEEP

    total: int = 0
    passed: int = 0
    failed: int = 0
    blocked: int = 0
    pending: int = 0


class LoopState(BaseModel):
    """A loop's test-state.json: its tests, in order, and their summary."""

    model_config = _KEEP

    tests: tuple[TaskEntry, ...]
    summary: StateSummary | None = None

    @model_validator(mode="after")
    def _unique(self) -> LoopState:
        check_unique_ids(self.tests, "test")
        return self

    def task(self, task_id: str) -> TaskEntry:
        """The entry with this id; `KeyError` if there is none."""
        return by_id(self.tests, task_id)

    def computed_summary(self) -> StateSummary:
        """The counts as they are now, keeping any extra fields of the old summary."""
        counts = {s.value: 0 for s in TaskStatus}
        for entry in self.tests:
            counts[entry.status.value] += 1
        extra = dict(self.summary.model_extra or {}) if self.summary else {}
        return StateSummary.model_validate({**extra, "total": len(self.tests), **counts})

    def recomputed(self) -> LoopState:
        """This state with its summary brought up to date."""
        return self.model_copy(update={"summary": self.computed_summary()})

    def with_task(self, entry: TaskEntry) -> LoopState:
        """Replace the entry with the same id (or append it); summary recomputed."""
        tests = list(self.tests)
        for i, old in enumerate(tests):
            if old.id == entry.id:
                tests[i] = entry
                break
        else:
            tests.append(entry)
        return self.model_copy(update={"tests": tuple(tests)}).recomputed()


def load_state(path: str | os.PathLike[str]) -> LoopState:
    """Read and validate a test-state.json; `ValidationFailed` lists every problem."""
    source = os.fspath(path)
    text = read_text(Path(source), source, f"Test state file not found: {source}")
    return state_from_data(parse_json(text, source), source)


def state_from_data(data: object, source: str = "test-state.json") -> LoopState:
    data = _need_object(data, source, 'test state with a "tests" list')
    problems: list[str] = []
    tests = data.get("tests")
    if "tests" not in data:
        problems.append(problem(source, "tests", 'is required — add "tests": [ ... ]'))
    elif not isinstance(tests, list):
        problems.append(problem(source, "tests", f"must be a list, got {type_name(tests)}"))
    else:
        seen: set[str] = set()
        for i, raw in enumerate(tests):
            _check_entry(raw, i, source, seen, problems)
    if "summary" in data and data["summary"] is not None:
        try:
            StateSummary.model_validate(data["summary"])
        except ValidationError as exc:
            problems.extend(translate_errors(exc, source, ("summary",)))
    if not problems:
        try:
            return LoopState.model_validate(data)
        except ValidationError as exc:
            problems.extend(translate_errors(exc, source))
    raise ValidationFailed(problems, path=source)


def _check_entry(raw: object, i: int, source: str, seen: set[str], problems: list[str]) -> None:
    where = f"tests[{i}]"
    if not isinstance(raw, dict):
        problems.append(
            problem(source, where, f'must be an object like {{"id": ...}}, got {type_name(raw)}')
        )
        return
    task_id = raw.get("id")
    label = f"'{show(task_id)}'" if isinstance(task_id, str) and task_id else f"#{i + 1}"
    if "acceptance_criteria" in raw:
        criteria = raw["acceptance_criteria"]
        if criteria == []:
            problems.append(
                problem(
                    source,
                    f"{where}.acceptance_criteria",
                    "is empty — list at least one criterion, or leave the field out "
                    "to use the loop's check_command",
                )
            )
        elif criteria is not None:
            check_criteria(
                criteria, source, f"{where}.acceptance_criteria", label, problems, strict=True
            )
    try:
        TaskEntry.model_validate(raw)
    except ValidationError as exc:
        problems.extend(
            translate_errors(exc, source, ("tests", i), skip_fields=("acceptance_criteria",))
        )
    if isinstance(task_id, str) and task_id:
        if task_id in seen:
            problems.append(
                problem(
                    source,
                    f"{where}.id",
                    f"Duplicate test id: '{show(task_id)}' — ids must be unique in the file",
                )
            )
        seen.add(task_id)
        odd = task_id_problem(task_id)
        if odd:
            problems.append(problem(source, f"{where}.id", odd))


def save_state(path: str | os.PathLike[str], state: LoopState) -> LoopState:
    """Write test-state.json atomically with a fresh summary; returns what was written."""
    state = state.recomputed()
    # Invariant 7: lastResult and notes can quote what an agent or a check printed.
    data = state.model_dump(mode="json", by_alias=True, exclude_unset=True)
    write_json_atomic(Path(path), redact_obj(data))
    return state


# -- health.json ----------------------------------------------------------------------


class Progress(BaseModel):
    model_config = _KEEP

    passed: int = Field(default=0, ge=0)
    total: int = Field(default=0, ge=0)


class Health(BaseModel):
    """health.json, as the seed writes it; `cat health.json | jq` keeps working."""

    model_config = _KEEP

    loop_name: str
    status: LoopStatus
    current_test: str | None = None
    progress: Progress = Field(default_factory=Progress)
    last_heartbeat: datetime
    pid: int | None = None

    @field_validator("last_heartbeat")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(microsecond=0)


def load_health(path: str | os.PathLike[str]) -> Health:
    source = os.fspath(path)
    text = read_text(Path(source), source, f"Health file not found: {source}")
    return health_from_data(parse_json(text, source), source)


def health_from_data(data: object, source: str = "health.json") -> Health:
    return _validated(Health, data, source, "health status with 'loop_name' and 'status'")


def _validated(model: type[M], data: object, source: str, what: str) -> M:
    """`data` as `model`, or `ValidationFailed` with every problem, one line each."""
    _need_object(data, source, what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(translate_errors(exc, source), path=source) from None


def write_health(path: str | os.PathLike[str], health: Health) -> None:
    """Write health.json atomically (every field, so readers see the seed's shape)."""
    write_json_atomic(Path(path), redact_obj(health.model_dump(mode="json", by_alias=True)))


def _need_object(data: object, source: str, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed(
            [problem(source, "", f"must be a JSON object ({what}), got {type_name(data)}")],
            path=source,
        )
    return data
