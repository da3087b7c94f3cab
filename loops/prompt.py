"""The prompt for one iteration, bounded in size however long a task keeps failing.

Each section has a byte budget; what does not fit is cut from the end that matters
least (the oldest attempts, the head of a long failure output), and the cut is said.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from events import Criterion, NaturalCheck, ScriptCheck

DEFAULT_LIMIT = 16_000

# Shares of the limit for each section, in order of appearance.
_BUDGET = {
    "goal": 0.20,
    "task": 0.25,
    "failure": 0.20,
    "guidance": 0.15,
    "history": 0.12,
    "footer": 0.08,
}


@dataclass
class PromptInput:
    """Everything the worker knows that the agent should see for this iteration."""

    task_id: str
    title: str
    description: str
    criteria: list[Criterion]
    goal: str = ""
    context: str = ""
    instructions: list[str] = field(default_factory=list)
    task_instructions: list[str] = field(default_factory=list)
    spec_content: str = ""
    last_failure: str = ""  # the failing criteria's output from the last verification
    guidance: list[str] = field(default_factory=list)  # answers and hints, oldest first
    history: list[str] = field(default_factory=list)  # one line per earlier iteration
    conflict_files: list[str] = field(default_factory=list)
    conflict_with: str | None = None  # what landed on main first in those files


def _clip_tail(text: str, budget: int) -> str:
    """Keep the end of `text` (where errors are) within `budget` bytes."""
    data = text.encode()
    if len(data) <= budget:
        return text
    keep = data[-max(budget - 40, 0) :].decode(errors="ignore")
    return f"[... {len(data) - len(keep.encode())} bytes cut ...]\n{keep}"


def _clip_head(text: str, budget: int) -> str:
    """Keep the start of `text` within `budget` bytes."""
    data = text.encode()
    if len(data) <= budget:
        return text
    keep = data[: max(budget - 40, 0)].decode(errors="ignore")
    return f"{keep}\n[... {len(data) - len(keep.encode())} bytes cut ...]"


def _recent_lines(lines: list[str], budget: int) -> str:
    """As many of the most recent lines as fit, oldest of them first."""
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        size = len(line.encode()) + 1
        if used + size > budget:
            break
        kept.append(line)
        used += size
    omitted = len(lines) - len(kept)
    head = [f"({omitted} earlier entries omitted)"] if omitted else []
    return "\n".join(head + list(reversed(kept)))


def _criterion_line(n: int, c: Criterion) -> str:
    if isinstance(c.check, ScriptCheck):
        how = f"run `{c.check.run}` (passes when it exits 0)"
    else:
        assert isinstance(c.check, NaturalCheck)
        how = f"judged: {c.check.description.strip()}"
    return f"{n}. {c.criterion} — {how}"


def build_prompt(p: PromptInput, limit: int = DEFAULT_LIMIT) -> str:
    """The prompt text; its UTF-8 size never exceeds `limit`."""
    budget = {k: int(v * limit) for k, v in _BUDGET.items()}
    parts: list[str] = []

    goal = [f"# Goal\n{p.goal.strip()}"] if p.goal.strip() else []
    if p.context.strip():
        goal.append(f"## Context\n{p.context.strip()}")
    if p.instructions:
        goal.append("## Instructions\n" + "\n".join(f"- {i}" for i in p.instructions))
    if goal:
        parts.append(_clip_head("\n\n".join(goal), budget["goal"]))

    task = [f"# Task {p.task_id}: {p.title.strip()}", p.description.strip()]
    if p.task_instructions:
        task.append("## Task instructions\n" + "\n".join(f"- {i}" for i in p.task_instructions))
    if p.spec_content.strip():
        task.append(f"## Spec\n{p.spec_content.strip()}")
    criteria = "\n".join(_criterion_line(i + 1, c) for i, c in enumerate(p.criteria))
    # Criteria go last so that a long description is cut before them.
    crit_text = "## Acceptance criteria (the harness re-runs these itself)\n" + (
        criteria or "(none given: make the repository's checks pass)"
    )
    crit_text = _clip_head(crit_text, budget["task"] // 2)
    body = _clip_head("\n\n".join(t for t in task if t), budget["task"] - len(crit_text.encode()))
    parts.append(f"{body}\n\n{crit_text}")

    if p.conflict_files:
        first = f" {p.conflict_with} landed there first;" if p.conflict_with else ""
        parts.append(
            f"# Merge conflict\nMain moved on:{first} merging main into your branch left "
            "conflict markers in: "
            + ", ".join(p.conflict_files)
            + ". The merge is in progress in your work tree: resolve every conflict (remove "
            "all <<<<<<< ======= >>>>>>> lines), keep both sides' intent (main's side has "
            "already passed its checks), do not abort the merge, and make the criteria pass "
            "again. Claim only once no markers remain."
        )
    if p.last_failure.strip():
        parts.append(
            "# Last verification failed\nThe harness ran the checks on a clean checkout:\n"
            + _clip_tail(p.last_failure.strip(), budget["failure"] - 80)
        )
    if p.guidance:
        parts.append(
            "# Answers and hints for this task\n"
            + _recent_lines([f"- {g.strip()}" for g in p.guidance], budget["guidance"] - 60)
        )
    if p.history:
        parts.append(
            "# Earlier iterations on this task\n" + _recent_lines(p.history, budget["history"] - 60)
        )
    parts.append(
        _clip_head(
            "# How to finish\n"
            "Work in the current directory (a git work tree of your own). Do not commit: "
            "the harness commits your changes after each run, and its refs are read-only "
            "to you. When every "
            "acceptance criterion holds, end your reply with "
            f"<promise>{p.task_id} done</promise>. The harness then verifies the criteria "
            "itself; a false claim only costs an attempt. If you cannot go on without a "
            "person's answer, reply with one line `BLOCKED: <your question>`.",
            budget["footer"],
        )
    )
    text = "\n\n".join(parts) + "\n"
    return _clip_head(text, limit) if len(text.encode()) > limit else text
