"""The events an operator sends, built in one place (the CLI and the dashboard):
commands addressed to a loop (`loops pause|resume|stop|reset`) and answers to
escalations (`loops answer`)."""

from __future__ import annotations

from typing import Protocol

from events.envelope import Event, Role, Source
from events.models import (
    EscalationAnswered,
    LoopPause,
    LoopResume,
    LoopStop,
    TaskReset,
)
from events.types import Decision

ACTIONS = ("pause", "resume", "stop", "reset")


def build_command(
    action: str,
    loop: str,
    task_id: str | None = None,
    hint: str | None = None,
    source: Source | None = None,
    reason: str = "",
) -> Event:
    """The command event for `action` (pause, resume, stop or reset) on `loop`."""
    source = source or Source(role=Role.OPERATOR)
    if action == "pause":
        return LoopPause(source=source, loop=loop, reason=reason)
    if action == "resume":
        return LoopResume(source=source, loop=loop, reason=reason)
    if action == "stop":
        return LoopStop(source=source, loop=loop, reason=reason)
    if action == "reset":
        if not task_id:
            raise ValueError("reset needs a task id")
        return TaskReset(source=source, loop=loop, task_id=task_id, hint=hint or None)
    raise ValueError(f"unknown control action {action!r}")


class Answerable(Protocol):
    """What an answer needs of the escalation it answers (a read model's view of it)."""

    @property
    def id(self) -> str: ...

    @property
    def loop(self) -> str | None: ...

    @property
    def task_id(self) -> str | None: ...


def build_answer(
    escalation: Answerable,
    text: str,
    decision: Decision | None,
    by: str,
    source: Source | None = None,
) -> EscalationAnswered:
    """A person's answer to `escalation` (text, a decision, or both)."""
    return EscalationAnswered(
        source=source or Source(role=Role.OPERATOR),
        loop=escalation.loop,
        escalation_id=escalation.id,
        answer=text,
        decision=decision,
        by=by,
        task_id=escalation.task_id,
    )
