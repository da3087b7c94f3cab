"""The monitor's auto-unblock policy, declared in YAML (`default-policy.yaml`)."""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from events import MonitorActionKind, Severity, ValidationFailed
from events.view.models import STALE_AFTER


class Rule(StrEnum):
    """The monitor's detection rules."""

    STALE_HEARTBEAT = "stale_heartbeat"
    WORKER_DEAD = "worker_dead"
    NO_CHANGES = "no_changes"
    REPEATED_FAILURE = "repeated_failure"
    PERMISSION_DENIALS = "permission_denials"
    REPLY_COLLAPSE = "reply_collapse"
    VARIED_FAILURES = "varied_failures"
    MASS_DEATH = "mass_death"
    SILENT_AGENT = "silent_agent"


DEATH_RULES = frozenset({Rule.STALE_HEARTBEAT, Rule.WORKER_DEAD})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Thresholds(_Model):
    stale_intervals: float = Field(default=STALE_AFTER, gt=0)  # the read model's
    no_change_iterations: int = Field(default=3, ge=1)
    repeated_failure_count: int = Field(default=3, ge=2)
    failure_similarity: float = Field(default=0.8, gt=0, le=1)
    permission_denial_iterations: int = Field(default=3, ge=1)
    reply_collapse_ratio: float = Field(default=0.2, gt=0, lt=1)
    reply_collapse_consecutive: int = Field(default=2, ge=1)
    reply_collapse_min_samples: int = Field(default=5, ge=2)
    reply_median_window: int = Field(default=20, ge=3)
    varied_failure_count: int = Field(default=5, ge=2)
    restart_grace_s: float = Field(default=60.0, gt=0)
    mass_death_count: int = Field(default=3, ge=2)
    mass_death_window_s: float = Field(default=60.0, gt=0)
    silent_agent_after_s: float = Field(default=600.0, gt=0)


class EscalateAfter(_Model):
    actions: int = Field(default=2, ge=0)  # 0: escalate at once, take no action
    seconds: float | None = Field(default=None, gt=0)


class RulePolicy(_Model):
    enabled: bool = True
    action: MonitorActionKind
    severity: Severity = Severity.MEDIUM
    escalate_after: EscalateAfter = Field(default_factory=EscalateAfter)
    on_escalate: MonitorActionKind | None = None  # pause_loop or block_task

    @field_validator("on_escalate")
    @classmethod
    def _on_escalate(cls, value: MonitorActionKind | None) -> MonitorActionKind | None:
        if value not in (None, MonitorActionKind.PAUSE_LOOP, MonitorActionKind.BLOCK_TASK):
            raise ValueError("on_escalate is pause_loop or block_task (or left out)")
        return value


class RefinePolicy(_Model):
    apply: bool = False


class Policy(_Model):
    """Thresholds of the rules and, per rule, what to do and when to ask a person."""

    version: int = 1
    thresholds: Thresholds = Field(default_factory=Thresholds)
    rules: dict[Rule, RulePolicy]
    refine: RefinePolicy = Field(default_factory=RefinePolicy)

    def for_rule(self, rule: Rule) -> RulePolicy:
        return self.rules.get(rule) or RulePolicy(action=MonitorActionKind.ESCALATE)


def parse_policy(data: Any, path: str = "<policy>") -> Policy:
    """A policy from parsed YAML; `ValidationFailed` names each bad field."""
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{path}: {'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ValidationFailed(problems, path=path) from None


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: _merge(base.get(k), v) if k in base else v for k, v in over.items()} | {
            k: v for k, v in base.items() if k not in over
        }
    return over


def _read(where: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed([f"{where}: not valid YAML: {exc}"], where) from None


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy shipped with the package, with `path`'s settings over it: a policy
    file names only what it changes (a rule it omits keeps its default)."""
    default_where = "agents/default-policy.yaml"
    default = _read(
        default_where, resources.files("agents").joinpath("default-policy.yaml").read_text("utf-8")
    )
    if path is None:
        return parse_policy(default, default_where)
    where = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ValidationFailed(
            [f"{where}: cannot read the policy: {exc.strerror}"], where
        ) from None
    data = _read(where, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationFailed(
            [f"{where}: a policy is a mapping (thresholds:, rules:, refine:)"], where
        )
    return parse_policy(_merge(default, data), where)
