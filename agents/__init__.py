"""The coordinating agents: the monitor (stuck and dead loops, auto-unblock policy),
the PM (dependencies, priorities, file overlap, progress) and the human interface
(escalations, webhooks). Each is a plain class with `handle(event)` and `tick(now)`
returning the events to publish; `agents.runner.run` puts one on a bus.

Imports `events` and `bus` only (of this project)."""

from agents.answers import AnswerReader, AnthropicAnswerReader, read_by_rules
from agents.escalations import (
    ESCALATION_TYPES,
    Escalation,
    EscalationStatus,
    fold_escalations,
    open_escalations,
    open_escalations_on,
)
from agents.health import Finding, LoopHealth
from agents.human import HumanAgent, HumanConfig
from agents.monitor import Monitor, local_pid_alive
from agents.pm import PMConfig, ProjectManager
from agents.policy import Policy, Rule, load_policy, parse_policy
from agents.refiner import AnthropicRefiner, RefineFailed, Refiner, RefineRequest
from agents.runner import Agent, run
from agents.webhooks import (
    BackgroundNotifier,
    Notifier,
    WebhookNotifier,
    WebhookTarget,
    sign,
    verify,
)
from infra.store import Store

__all__ = [
    "ESCALATION_TYPES",
    "Agent",
    "AnswerReader",
    "AnthropicAnswerReader",
    "AnthropicRefiner",
    "BackgroundNotifier",
    "Escalation",
    "EscalationStatus",
    "Finding",
    "HumanAgent",
    "HumanConfig",
    "LoopHealth",
    "Monitor",
    "Notifier",
    "PMConfig",
    "Policy",
    "ProjectManager",
    "RefineFailed",
    "RefineRequest",
    "Refiner",
    "Rule",
    "Store",
    "WebhookNotifier",
    "WebhookTarget",
    "fold_escalations",
    "load_policy",
    "local_pid_alive",
    "open_escalations",
    "open_escalations_on",
    "parse_policy",
    "read_by_rules",
    "run",
    "sign",
    "verify",
]
