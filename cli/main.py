"""The `loops` command: parses arguments and hands each command to its module.

Each command lives in `cli/cmd_<name>.py` as `run(args) -> int` and is registered here
with `_command(sub, NAME, MODULE, ...)`, which dispatches through argparse's
`set_defaults` (the module is imported only when its command runs). `main` builds the
`Settings` once and hands them to the command as `args.settings`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis

from events import LoopsError, ValidationFailed
from events.secrets import install_log_redaction, redact
from infra.settings import Settings
from loops.budget_config import RAISE_HELP

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

ROLES = ("worker", "monitor", "pm", "human", "gate", "merge", "dashboard")


def _above_zero(kind: type[float] | type[int], what: str) -> Callable[[str], float | int]:
    """An argparse type: a number above 0, else one line saying so."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give {what} above 0")
        return value

    return parse


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# The option groups commands share: `_add(p, "redis", "wait")` adds them; `{what}` in a
# help text is what the command runs (`_add(p, "budget", what="the loop")`).
OPTIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "redis": [
        ("--redis", {"metavar": "URL", "help": "Redis URL (default: $REDIS_URL, else the "
                     "embedded server of the project, see --dir)"}),
        ("--dir", {"dest": "project_dir", "metavar": "DIR", "default": None,
                   "help": "project directory whose embedded server to reach (default: "
                   "$CODING_LOOP_PROJECT_DIR, else the system found from here, as git finds "
                   "its repository)"}),
    ],
    "wait": [
        ("--wait", {"type": float, "metavar": "S", "default": 10.0,
                    "help": "seconds to wait for the worker's acknowledgement (default 10)"}),
        ("--no-wait", {"action": "store_true", "help": "send the command and return at once"}),
    ],
    "test_command": [
        ("--test-command", {"metavar": "CMD", "default": None,
                            "help": "the project's full test suite, run on every merged tree "
                            "before main moves (overrides test_command in project.json)"}),
    ],
    "metrics": [
        ("--metrics-port", {"type": int, "metavar": "PORT", "default": None,
                            "help": "serve Prometheus metrics at http://HOST:PORT/metrics "
                            "(default: $LOOPS_METRICS_PORT, else off; 0 = a free port)"}),
        ("--metrics-host", {"metavar": "HOST", "default": None, "help": "address of /metrics "
                            "(default: $LOOPS_METRICS_HOST, else 127.0.0.1)"}),
    ],
    "budget": [
        ("--max-cost", {"type": _above_zero(float, "a number"), "metavar": "USD",
                        "default": None, "help": "stop starting agent calls once {what} has "
                        "spent this many dollars"}),
        ("--max-tokens", {"type": _above_zero(int, "a number"), "metavar": "N", "default": None,
                          "help": "stop starting agent calls once {what} has used this many "
                          "tokens"}),
    ],
    "dry_run": [
        ("--dry-run", {"action": "store_true", "help": "print the tasks that would run, in "
                       "order, with the budget each may use, and the worst case per loop and "
                       "for the project; start nothing"}),
    ],
    # The coding-loops harness's run_loop.py flags (precedence: flag, config, default).
    "harness": [
        ("--max-iterations", {"type": _at_least_one, "metavar": "N", "default": None,
                              "help": "at most N agent runs for {what} in this run (default: "
                              "no limit)"}),
        ("--model", {"metavar": "M", "default": None,
                     "help": "the model for {what} (overrides config.json)"}),
    ],
}  # fmt: skip


def _add(p: argparse.ArgumentParser, *groups: str, what: str = "") -> None:
    """Add the `OPTIONS` groups named."""
    for group in groups:
        for flag, kwargs in OPTIONS[group]:
            p.add_argument(flag, **{**kwargs, "help": kwargs["help"].format(what=what)})


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, module: str, help: str
) -> argparse.ArgumentParser:
    """Register command `name`, run by `run(args)` of `cli/cmd_<module>.py` (or
    `module:function`, another function of it)."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(run=_runner(module))
    return p


def _runner(spec: str) -> Callable[[argparse.Namespace], int]:
    module, _, function = spec.partition(":")

    def run(args: argparse.Namespace) -> int:
        command = getattr(importlib.import_module(f"cli.cmd_{module}"), function or "run")
        return int(command(args))

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loops",
        description=(
            "Run many autonomous coding agents (Ralph loops) on one git repository. "
            "A task passes only when its independently verified commit has merged into main."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _command(sub, "run", "run", help="single loop on a SPEC.yaml (ralph_loop compatible)")
    p.add_argument(
        "spec_file",
        nargs="?",
        default="SPEC.yaml",
        help="Path to the SPEC.yaml file. Default: SPEC.yaml",
    )
    p.add_argument(
        "--max-iterations",
        "-n",
        type=int,
        metavar="N",
        default=None,
        help="Maximum number of agent runs. Priority: CLI flag > spec max_iterations > default (10)",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="Show DEBUG output, including a 200-character preview of each reply",
    )
    p.add_argument(
        "--agent",
        metavar="A",
        default=None,
        help="claude (default), anthropic, command:CMD or script:FILE",
    )
    p.add_argument(
        "--repo",
        metavar="DIR",
        default=None,
        help="git repository to work in (default: the spec's directory)",
    )
    _add(p, "test_command")
    p.add_argument(
        "--agent-timeout",
        type=_above_zero(float, "a number of seconds"),
        metavar="SECONDS",
        default=None,
        help="kill an agent run (its whole process group) after this many seconds (default 1800)",
    )
    p.add_argument(
        "--trust-agent",
        action="store_true",
        help="accept the agent's <promise> without running the checks (ralph_loop's old behaviour)",
    )
    _add(p, "budget", what="the loop")

    p = _command(
        sub, "up", "up", help="the whole system on DIR (seed layout: DIR/loop-*/config.json)"
    )
    p.add_argument(
        "dir",
        nargs="?",
        default=None,
        help="project directory (default: $CODING_LOOP_PROJECT_DIR or .)",
    )
    p.add_argument("--redis", metavar="URL", help="use this Redis instead of the embedded one")
    p.add_argument("--agent", metavar="A", default=None, help="override every loop's agent")
    _add(p, "harness", what="every loop")
    _add(p, "test_command")
    _add(p, "budget", "dry_run", what="the project")
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep running when no loop can progress (compose, dashboard)",
    )
    p.add_argument("--host", default="127.0.0.1", help="dashboard host (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8765, help="dashboard port (default 8765; 0 = no dashboard)"
    )

    p = _command(
        sub, "validate", "validate", help="check SPEC.yaml / config.json / test-state.json files"
    )
    p.add_argument("paths", nargs="+", metavar="PATH")

    p = _command(sub, "status", "status", help="loops, tasks, health, escalations, merge queue")
    _add(p, "redis")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")

    p = _command(sub, "events", "events", help="the event log")
    _add(p, "redis")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="T",
        help="only this type (repeatable; 'task.*' works)",
    )
    p.add_argument("--loop", metavar="L", help="only this loop")
    p.add_argument(
        "--since", metavar="ID|TIME", default=None, help="start at a stream id or ISO time"
    )

    p = _command(sub, "escalations", "escalations", help="open questions for a person")
    _add(p, "redis")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true", help="include answered and expired ones")

    p = _command(sub, "answer", "escalations:run_answer", help="answer an escalation")
    _add(p, "redis")
    p.add_argument("id", metavar="ID")
    p.add_argument("text", metavar="TEXT", nargs="+")
    p.add_argument(
        "--decision", choices=["retry", "skip", "approve", "reject", "abort"], default=None
    )

    for name, text in (
        ("pause", "pause a loop after its current iteration"),
        ("resume", "resume a paused loop"),
        ("stop", "stop a loop after its current iteration"),
    ):
        p = _command(sub, name, "control", help=text)
        _add(p, "redis", "wait")
        p.add_argument("loop", metavar="LOOP")

    p = _command(sub, "reset", "control", help="set a task back to pending with zero attempts")
    _add(p, "redis", "wait")
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--hint", default=None, help="guidance for the task's next prompt")

    p = _command(
        sub,
        "worker",
        "roles",
        help="run one loop: alone with its gate and merge queue (embedded), or as the "
        "worker role of a distributed system (--redis or $REDIS_URL)",
    )
    _add(p, "redis")
    p.add_argument(
        "loop",
        metavar="LOOP",
        nargs="?",
        default=None,
        help="the loop's directory name (e.g. loop-1-critical-path); optional with --config",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="run every loop of the project (DIR/loop-*/) in this process, one thread each: "
        "what compose's `loops` service runs",
    )
    p.add_argument("--agent", metavar="A", default=None)
    p.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="the loop's config.json (the harness's run_loop.py --config): runs the loop in "
        "PATH's directory, with this config",
    )
    _add(p, "harness", what="the loop")
    _add(p, "metrics")
    for role in ROLES[1:]:
        module = "dashboard" if role == "dashboard" else "roles"
        p = _command(sub, role, module, help=f"role: run the {role} as its own process")
        _add(p, "redis")
        if role == "dashboard":  # serves /metrics on its own port
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8765)
        if role == "merge":
            _add(p, "test_command")
        if role != "dashboard":
            _add(p, "metrics")

    p = _command(
        sub, "health", "health", help="exit 0 if a role process is alive (compose health checks)"
    )
    _add(p, "redis")
    p.add_argument(
        "role",
        nargs="?",
        default=None,
        metavar="ROLE",
        help="gate, merge, monitor, pm, human, dashboard, worker[:LOOP] or rq[:QUEUE]; "
        "without it, list every live role",
    )
    p.add_argument("--here", action="store_true", help="only count processes on this host")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _command(sub, "budget", "budget", help="what was spent against the budgets; raise a budget")
    _add(p, "redis")
    p.add_argument(
        "loop", metavar="LOOP[/TASK]", nargs="?", default=None, help="the loop (or one task)"
    )
    p.add_argument("amount", metavar="+AMOUNT", nargs="*", help=f"a raise, e.g. {RAISE_HELP}")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--project", action="store_true", help="raise the project's budget")
    level.add_argument("--day", action="store_true", help="raise the project's daily budget")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _command(
        sub, "plan", "budget", help="what `loops up` would run and may spend; starts nothing"
    )
    p.add_argument("dir", nargs="?", default=None, help="project directory (default: .)")
    p.add_argument("--agent", metavar="A", default=None, help="as `loops up --agent`")
    _add(p, "budget", what="the project")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _command(sub, "demo", "demo", help="the embedded demo from the README (no API key needed)")
    p.add_argument(
        "--agent", metavar="A", default=None, help="run the scenario on a real agent, e.g. claude"
    )
    p.add_argument(
        "--dir", dest="demo_dir", default=None, help="where to create the sample repository"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()  # invariant 7: whatever a role logs, no secret gets out
    try:
        args.settings = Settings.from_env()
        # A subparser added without `_command` runs `cli/cmd_<its name>.py`.
        run = getattr(args, "run", None) or _runner(args.command)
        if getattr(args, "dry_run", False) and args.command == "up":
            run = _runner("budget:print_plan")  # `loops up --dry-run` is `loops plan`
        return int(run(args))
    except ValidationFailed as exc:
        for problem in exc.problems:
            print(f"ERROR main: {redact(problem)}", file=sys.stderr)
        return EXIT_FAIL
    except LoopsError as exc:
        print(f"loops: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print("loops: interrupted", file=sys.stderr)
        return 130
    except redis.RedisError as exc:
        # One line, never a traceback: the roles retry a lost server; this is what
        # was left when it stayed away (at start, or for the summary).
        print(
            f"loops: Redis error: {redact(str(exc))} (is the server up? check --redis / "
            "$REDIS_URL, or `loops up` again to restart the embedded one)",
            file=sys.stderr,
        )
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
