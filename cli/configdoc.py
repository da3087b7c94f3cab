"""Generates docs/CONFIGURATION.md: every field of every file, from the models.

python -m cli.configdoc > docs/CONFIGURATION.md      (or `make docs`)
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agents.policy import EscalateAfter, Policy, RefinePolicy, RulePolicy, Thresholds
from events import Criterion, NaturalCheck, ScriptCheck
from loops.budget_config import Limits, LoopBudget, ProjectBudget
from loops.harness import (
    Health,
    HealthCheckConfig,
    LoopConfig,
    ProjectConfig,
    StateSummary,
    TaskEntry,
)
from loops.runners.script import Replace, Script, Step
from loops.sandbox import SandboxConfig
from loops.spec import Spec, Task

ENVIRONMENT = [
    ("REDIS_URL", "Redis of a distributed system (what docker-compose sets). Unset: the embedded server of the project."),
    ("LOOPS_REDIS_PASSWORD", "Password of that Redis when `REDIS_URL` has none (compose requires it). Embedded: a random one in `.loops/redis.auth` (0600)."),
    ("LOOPS_SIGNING_KEY", "Key (hex, >= 16 bytes) every role signs events with; decisions without a valid signature are dropped. Unset: derived from the Redis password. Embedded: `.loops/signing.key` (0600)."),
    ("LOOPS_PREFIX", "Key prefix of every Redis key and stream (default `loops`): several systems on one Redis."),
    ("CODING_LOOP_PROJECT_DIR", "The project directory (the seed's variable); `specs_dir` is resolved against it."),
    ("LOOPS_CLAUDE_BIN", "The Claude Code CLI binary for the `claude` agent (default `claude` on PATH)."),
    ("ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL", "For the `anthropic` agent, the judge of natural checks and the monitor's task refiner. Never logged."),
    ("LOOPS_JUDGE_MODEL", "Model that judges natural checks (default: the judge's own)."),
    ("LOOPS_DASHBOARD_TOKEN", "Token for the dashboard's actions; else one is generated into `.loops/dashboard.token`."),
    ("LOOPS_WEBHOOK_URLS / LOOPS_WEBHOOK_SECRET", "Comma-separated URLs that get escalation notifications, HMAC-SHA256 signed with the secret."),
    ("LOOPS_MONITOR_POLICY", "The monitor's policy file (default: `monitor-policy.yaml` beside the loop directories, if any); it names only what it changes of `agents/default-policy.yaml`, e.g. `thresholds: {silent_agent_after_s: 300}`."),
    ("LOOPS_AGENT_QUEUE", "rq queue a distributed loop's agent iterations run on (compose: `loops-agents`); any `rq worker -w cli.rqworker.SimpleWorker QUEUE` on any host runs them. Unset: in the loop's own process."),
    ("LOOPS_AGENT_HOME", "Where an agent host (an rq worker on the agent queue) keeps its clones of the remote (default `~/.cache/coding-loops/agents`)."),
    ("LOOPS_REMOTE", "Git remote the gate, merge queue and workers share in distributed mode (e.g. `origin`)."),
    ("LOOPS_SANDBOX", "`auto` (default: agents run in bubblewrap where `bwrap` works, else with a warning), `off` (warned) or `required` (refuse to run without it). Overrides `sandbox.mode`."),
    ("LOOPS_SANDBOX_WRITABLE / LOOPS_SANDBOX_READABLE", "Colon-separated extra paths the agent may write / read (added to `sandbox.writable` / `sandbox.readable`)."),
    ("LOOPS_SANDBOX_ENV", "Comma-separated variable names or globs passed to agents beyond the allow-list (added to `sandbox.env`)."),
]  # fmt: skip

SECTIONS: list[tuple[str, str, list[type[BaseModel]]]] = [
    ("SPEC.yaml (ralph_loop)", "The spec `loops run` takes, exactly as ralph_loop reads it.",
     [Spec, Task, Criterion, ScriptCheck, NaturalCheck]),
    ("config.json (one per loop)", "`DIR/loop-*/config.json`, the seed harness's format plus "
     "`agent`, `check_command`, `branch`, `main_branch`, `sandbox`.",
     [LoopConfig, HealthCheckConfig, SandboxConfig, LoopBudget, Limits]),
    ("test-state.json", "`specs/test-state.json`: the loop's tests; the loop rewrites it "
     "atomically and takes up valid hand edits. `acceptance_criteria` uses the SPEC.yaml form.",
     [TaskEntry, StateSummary]),
    ("health.json", "Written by each loop every heartbeat (seed fields).", [Health]),
    ("project.json (optional, one per project)", "`DIR/project.json`, next to the `loop-*` "
     "directories: settings of the whole project. Unknown fields are errors. CLI flags "
     "(`--test-command`, `--max-cost`, `--max-tokens`) override it.",
     [ProjectConfig, ProjectBudget]),
    ("Monitor policy (YAML)", "The monitor's auto-unblock policy; the default is "
     "`agents/default-policy.yaml`.", [Policy, Thresholds, RulePolicy, EscalateAfter, RefinePolicy]),
    ("script: agent (YAML)", "Deterministic replay for demos and tests "
     "(`loops/runners/README.md`).", [Script, Step, Replace]),
]  # fmt: skip


def _type(field: FieldInfo) -> str:
    plain = not get_args(field.annotation)
    text = (getattr(field.annotation, "__name__", None) if plain else None) or str(field.annotation)
    for noise in (
        "typing.",
        "events.types.",
        "loops.harness.",
        "loops.spec.",
        "agents.policy.",
        "loops.runners.script.",
        "loops.sandbox.",
        "loops.budget_config.",
        "typing_extensions.",
    ):
        text = text.replace(noise, "")
    return text.replace("NoneType", "None").replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "(empty)"
    if field.default is PydanticUndefined:
        return ""
    value: Any = field.default
    value = getattr(value, "value", value)
    return f"`{value!r}`" if value is not None else "`null`"


def model_table(model: type[BaseModel]) -> list[str]:
    doc = inspect.cleandoc(model.__doc__ or "").splitlines()
    lines = [f"### `{model.__name__}`", ""]
    if doc:
        lines += [doc[0], ""]
    lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        shown = field.alias or name
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{shown}` | `{_type(field)}` | {_default(field)} | {meaning} |")
    return [*lines, ""]


def render() -> str:
    out = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m cli.configdoc`; do not edit by hand."
        " tests/cli/test_configdoc.py fails when it is out of date. -->",
        "",
        "Every file coding-loops reads, field by field, from the models that parse them.",
        "JSON Schemas of the same models are in [schemas/](schemas/). Check files with",
        "`loops validate PATH...`.",
        "",
        "## Environment",
        "",
        "| variable | meaning |",
        "| --- | --- |",
        *[f"| `{name}` | {text} |" for name, text in ENVIRONMENT],
        "",
    ]
    for title, intro, models in SECTIONS:
        out += [f"## {title}", "", intro, ""]
        for model in models:
            out += model_table(model)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
