"""Small event factories shared by the bus tests."""

from __future__ import annotations

from events import Event, Role, Source, TaskHint, TaskStarted

SOURCE = Source(role=Role.OPERATOR, instance="test")


def hint(n: int, loop: str | None = "alpha") -> TaskHint:
    """A `task.hint` numbered `n` (its text is `str(n)`)."""
    return TaskHint(source=SOURCE, loop=loop, task_id=f"T-{n}", text=str(n))


def started(n: int, loop: str | None = "alpha") -> TaskStarted:
    return TaskStarted(source=SOURCE, loop=loop, task_id=f"T-{n}", attempt=1)


def numbers(events: list[Event]) -> list[int]:
    """The numbers of `hint` events, in order."""
    return [int(e.text) for e in events if isinstance(e, TaskHint)]
