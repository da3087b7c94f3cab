"""The demo project: a small Python package and four loops in the seed's layout, with
scripted agents that show what a bash loop cannot do.

- loop-1-clean: implements add() and finishes cleanly.
- loop-2-false-claim: claims sub() is done while it is wrong; the gate catches it,
  the failing check's output goes into the next prompt, and the retry merges.
  loop-1 and loop-2 both edit calc/ops.py: both merge through the queue.
- loop-3-stuck: keeps replying without changing a file until the monitor resets the
  task with a hint.
- loop-4-question: waits for loop-1's task to merge (a cross-loop dependency), then
  says BLOCKED with a question; the demo answers it after a pause, the way a person
  would with `loops answer`.

`DemoPerson` is that person; `story` tells what happened from the event log.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import yaml

from bus import RedisBus
from events import (
    EscalationAnswered,
    EscalationKind,
    EscalationRaised,
    Event,
    MergeCompleted,
    MonitorAction,
    Role,
    Source,
    TaskClaimed,
    TaskStarted,
    VerificationFailed,
)
from infra.git import git

OPS = '''"""Arithmetic for the demo."""


def add(a, b):
    raise NotImplementedError("add")


# Keep the functions apart: two loops edit this file at the same time.
#
#
#


def sub(a, b):
    raise NotImplementedError("sub")
'''

CHECKS = {
    "tests/check_add.py": "from calc.ops import add\n\nassert add(2, 3) == 5, add(2, 3)\nprint('add ok')\n",
    "tests/check_sub.py": "from calc.ops import sub\n\nassert sub(7, 2) == 5, f'sub(7, 2) returned {sub(7, 2)}, expected 5'\nprint('sub ok')\n",
    "tests/check_mul.py": "from calc.mul import mul\n\nassert mul(3, 4) == 12\nprint('mul ok')\n",
    "tests/check_div.py": (
        "from calc.div import divide\n\nassert divide(6, 3) == 2\n"
        "try:\n    divide(1, 0)\nexcept ZeroDivisionError:\n    print('div ok')\n"
        "else:\n    raise AssertionError('divide(1, 0) must raise ZeroDivisionError')\n"
    ),
}

# (loop dir, display name, priority, task id, title, description, check file, script)
LOOPS: list[tuple[str, str, int, str, str, str, str, list[dict[str, object]]]] = [
    ("loop-1-clean", "Loop 1: clean run", 1, "ADD-1", "Implement add()",
     "Implement add(a, b) in calc/ops.py so that tests/check_add.py passes.", "check_add.py", [
         {"replace": [{"path": "calc/ops.py", "old": '    raise NotImplementedError("add")',
                       "new": "    return a + b"}],
          "reply": "Implemented add(). <promise>ADD-1 done</promise>"},
     ]),
    ("loop-2-false-claim", "Loop 2: a false claim", 2, "SUB-1", "Implement sub()",
     "Implement sub(a, b) in calc/ops.py so that tests/check_sub.py passes.", "check_sub.py", [
         {"replace": [{"path": "calc/ops.py", "old": '    raise NotImplementedError("sub")',
                       "new": "    return a + b  # looks about right"}],
          "reply": "All done, sub() works. <promise>SUB-1 done</promise>"},
         {"when_prompt": "Last verification failed",
          "replace": [{"path": "calc/ops.py", "old": "    return a + b  # looks about right",
                       "new": "    return a - b"}],
          "reply": "The check said sub(7, 2) returned 9: fixed the sign. <promise>SUB-1 done</promise>"},
     ]),
    ("loop-3-stuck", "Loop 3: a stuck agent", 3, "MUL-1", "Implement mul()",
     "Create calc/mul.py with mul(a, b) so that tests/check_mul.py passes.", "check_mul.py", [
         {"reply": "Let me think about how multiplication should work in this codebase..."},
         {"when_prompt": "# Answers and hints",
          "write": {"calc/mul.py": "def mul(a, b):\n    return a * b\n"},
          "reply": "Following the hint: wrote calc/mul.py. <promise>MUL-1 done</promise>"},
     ]),
    ("loop-4-question", "Loop 4: a question for a person", 4, "DIV-1", "Implement divide()",
     "Create calc/div.py with divide(a, b) so that tests/check_div.py passes.", "check_div.py", [
         {"reply": "BLOCKED: Should divide(a, 0) raise ZeroDivisionError or return None?"},
         {"when_prompt": "A person answered",
          "write": {"calc/div.py": "def divide(a, b):\n    if b == 0:\n"
                                   "        raise ZeroDivisionError('divide by zero')\n"
                                   "    return a / b\n"},
          "reply": "Raising ZeroDivisionError as answered. <promise>DIV-1 done</promise>"},
     ]),
]  # fmt: skip

DEMO_ANSWER = "Raise ZeroDivisionError, like Python does."

# A cross-loop dependency: divide() is only started once add() has merged.
DEPENDS = {"DIV-1": "loop-1-clean/ADD-1"}
ANSWER_PAUSE_S = 3.0  # the person reads the question first


def create(root: Path, *, agent: str | None = None) -> Path:
    """Write the demo project into `root` (a new git repository) and commit it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "calc").mkdir(exist_ok=True)
    (root / "tests").mkdir(exist_ok=True)
    (root / "README.md").write_text("# calc\n\nA tiny package built by four coding loops.\n")
    (root / "calc" / "__init__.py").write_text("")
    (root / "calc" / "ops.py").write_text(OPS)
    (root / "tests" / "__init__.py").write_text("")
    for path, text in CHECKS.items():
        (root / path).write_text(text)
    python = sys.executable
    for name, display, priority, task, title, description, check, script in LOOPS:
        loop = root / name
        specs = loop / "specs"
        specs.mkdir(parents=True, exist_ok=True)
        config = {
            "name": display,
            "specs_dir": f"{name}/specs",
            "test_state_file": "test-state.json",
            "model": "claude-sonnet-4-6",
            "max_attempts": 3,
            "auto_continue_delay": 0.3,
            "priority": priority,
            "health_check": {"enabled": True, "interval_seconds": 1, "file": "health.json"},
            "agent": agent or "script:agent.yaml",
        }
        (loop / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {
            "tests": [{
                "id": task, "category": "calc", "status": "pending", "attempts": 0,
                "lastResult": None, "dependsOn": DEPENDS.get(task), "automatable": True,
                "notes": title, "title": title, "description": description,
                "acceptance_criteria": [{
                    "criterion": f"tests/{check} passes",
                    "check": {"type": "script", "run": f"{python} -m tests.{check[:-3]}"},
                }],
            }],
            "summary": {"total": 1, "passed": 0, "failed": 0, "blocked": 0, "pending": 1},
        }  # fmt: skip
        (specs / "test-state.json").write_text(json.dumps(state, indent=2) + "\n")
        (specs / "00-overview.md").write_text(f"# {display}\n\n{description}\n")
        (loop / "agent.yaml").write_text(yaml.safe_dump({"tasks": {task: script}}, sort_keys=False))
    (root / ".gitignore").write_text("__pycache__/\nhealth.json\nlogs/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "calc: stubs, checks and four coding loops")
    return root


# -- the run: the person who answers, and what happened ------------------------------


class DemoPerson:
    """Answers the demo's question after a pause, as a person would from a terminal.
    `busy` while a question is waiting for its answer, so the run does not end first."""

    def __init__(self, bus: RedisBus, stop: threading.Event) -> None:
        self.bus = bus
        self.stop = stop
        self.busy = False
        self.thread = threading.Thread(target=self._run, name="demo-person", daemon=True)

    def _run(self) -> None:
        me = Source(role=Role.OPERATOR, instance="demo-person")
        cursor = "0"
        while not self.stop.is_set():
            for entry_id, event in self.bus.tail(cursor, block_ms=200):
                cursor = entry_id
                if not (
                    isinstance(event, EscalationRaised) and event.kind is EscalationKind.QUESTION
                ):
                    continue
                if event.repeat:
                    continue
                self.busy = True
                if self.stop.wait(ANSWER_PAUSE_S):
                    return
                print(f'\n$ loops answer {event.escalation_id} "{DEMO_ANSWER}"', flush=True)
                self.bus.publish(EscalationAnswered(
                    source=me, loop=event.loop, escalation_id=event.escalation_id,
                    task_id=event.task_id, answer=DEMO_ANSWER, by="demo person",
                ))  # fmt: skip
                self.busy = False


def story(events: Iterable[Event]) -> list[str]:
    """The demo's behaviours, as the event log shows them."""
    claims: dict[tuple[str | None, str], int] = {}
    lines: list[str] = []
    touched: dict[str, set[str]] = {}
    waiting_on = {"loop-4-question": DEPENDS["DIV-1"]}
    for event in events:
        if isinstance(event, TaskClaimed):
            claims[(event.loop, event.task_id)] = claims.get((event.loop, event.task_id), 0) + 1
        elif isinstance(event, VerificationFailed):
            failed = [c.criterion for c in event.criteria if c.passed is False]
            lines.append(
                f"gate caught a false claim: {event.loop}/{event.task_id} "
                f"({', '.join(failed) or event.reason})"
            )
        elif isinstance(event, MonitorAction):
            lines.append(
                f"monitor: {event.action.value} on {event.loop}/{event.task_id or '-'} "
                f"({event.rule}: {event.reason})"
            )
        elif isinstance(event, EscalationRaised) and not event.repeat:
            lines.append(f"question from {event.loop}/{event.task_id}: {event.question}")
        elif isinstance(event, EscalationAnswered):
            lines.append(f"answered by {event.by}: {event.answer}")
        elif isinstance(event, TaskStarted) and event.loop in waiting_on:
            lines.append(
                f"{event.loop}/{event.task_id} started once {waiting_on.pop(event.loop)} "
                "had merged (cross-loop dependency)"
            )
        elif isinstance(event, MergeCompleted):
            lines.append(f"merged: {event.loop}/{event.task_id} as {event.merged_commit[:10]}")
        if hasattr(event, "changed_files") and event.loop:
            for path in getattr(event, "changed_files", []):
                touched.setdefault(path, set()).add(event.loop)
    for path, loops in sorted(touched.items()):
        if len(loops) > 1:
            lines.append(
                f"{path} was changed by {', '.join(sorted(loops))}: all merged through the queue"
            )
    return lines
