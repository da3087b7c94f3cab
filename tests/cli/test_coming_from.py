"""docs/COMING-FROM.md, row by row: each coding-loops command in the page's tables is
run exactly as shown (through bash, in a real git repository) with a stand-in `claude`
CLI on the PATH, and what the row promises is checked. A row without a test here, or
a test without a row, fails `test_every_row_has_a_test`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from infra.git import git

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "COMING-FROM.md"
FAKE_CLAUDE = ROOT / "tests" / "fakes" / "fake_claude.py"
SEED = ROOT / "tests" / "fixtures" / "seed-project"
BIN = Path(sys.executable).parent

SPEC = {
    "goal": "Keep a README",
    "tasks": [
        {
            "id": "readme",
            "title": "A README exists",
            "description": "The repository has a README.md",
            "acceptance_criteria": [
                {
                    "criterion": "README.md exists",
                    "check": {"type": "script", "run": "test -f README.md"},
                }
            ],
        }
    ],
}
NO_PROMISE = "Still working on it."
QUESTION = "BLOCKED: which database should sessions use?"


def doc_commands() -> list[str]:
    """The first code span of the middle column of every table row."""
    out = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 3 or set(cells[1]) <= {"-", " "} or cells[1] == "coding-loops":
            continue
        match = re.search(r"`([^`]+)`", cells[1])
        assert match, f"row without a command: {line}"
        out.append(match.group(1))
    return out


class Shell:
    """A project to run the page's commands in, with the stand-in `claude`."""

    def __init__(self, cwd: Path, record: Path) -> None:
        self.cwd = cwd
        self.record = record
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "REDIS_URL"))
        }
        self.env.update(
            PATH=f"{BIN}:{self.env.get('PATH', '')}",
            LOOPS_CLAUDE_BIN=str(FAKE_CLAUDE),
            FAKE_CLAUDE_RECORD=str(record),
            LOOPS_SANDBOX_ENV="FAKE_CLAUDE_*",  # the agent's environment is an allow-list
            LOOPS_SANDBOX_WRITABLE=str(record.parent),  # and it writes only where allowed
        )

    def reply(self, text: str) -> Shell:
        self.env["FAKE_CLAUDE_REPLY"] = text
        return self

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )

    def calls(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text().splitlines()
        return [[str(a) for a in json.loads(line)["argv"]] for line in lines if line.strip()]

    def cwds(self) -> list[str]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        return [Path(json.loads(line)["cwd"]).name for line in lines if line.strip()]


def ralph_repo(tmp_path: Path) -> Shell:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("project\n")
    (root / "SPEC.yaml").write_text(yaml.safe_dump(SPEC))
    (root / "specs").mkdir()
    (root / "specs" / "my_spec.yaml").write_text(yaml.safe_dump(SPEC))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return Shell(root, tmp_path / "claude.jsonl")


def seed_repo(tmp_path: Path) -> Shell:
    root = tmp_path / "repo"
    shutil.copytree(SEED, root)
    for config_path in root.glob("coding-loops/loop-*/config.json"):
        config = json.loads(config_path.read_text())
        config["auto_continue_delay"] = 0
        config_path.write_text(json.dumps(config, indent=2))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return Shell(root, tmp_path / "claude.jsonl")


def model_of(argv: list[str]) -> str | None:
    return argv[argv.index("--model") + 1] if "--model" in argv else None


def ok(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- ralph_loop


def r_default(tmp: Path, command: str) -> None:
    sh = ralph_repo(tmp)
    ok(sh.run(command), 0)
    assert len(sh.calls()) == 1


def r_positional(tmp: Path, command: str) -> None:
    sh = ralph_repo(tmp)
    proc = sh.run(command)
    ok(proc, 0)
    assert "spec='specs/my_spec.yaml'" in proc.stderr


def r_n5(tmp: Path, command: str) -> None:
    sh = ralph_repo(tmp).reply(NO_PROMISE)
    proc = sh.run(command)
    ok(proc, 1)
    assert len(sh.calls()) == 5
    assert "Max iterations (5) reached without a promise." in proc.stderr
    ok(sh.run(command), 1)  # a rerun gets a fresh budget
    assert len(sh.calls()) == 10


def r_verbose(tmp: Path, command: str) -> None:
    sh = ralph_repo(tmp)
    proc = sh.run(command)
    ok(proc, 0)
    assert "preview: " in proc.stderr


def r_verified(tmp: Path, command: str) -> None:
    sh = ralph_repo(tmp)
    proc = sh.run(command)
    ok(proc, 0)
    assert "Promise detected" in proc.stderr
    # The same promise with a failing check is caught.
    (tmp / "false-claim").mkdir()
    liar = failing_check(ralph_repo(tmp / "false-claim"))
    proc = liar.run(command)
    ok(proc, 1)
    assert "Promise detected" in proc.stderr and "failed" in proc.stderr


def failing_check(sh: Shell) -> Shell:
    spec = yaml.safe_load((sh.cwd / "SPEC.yaml").read_text())
    spec["tasks"][0]["acceptance_criteria"][0]["check"]["run"] = "test -f MISSING.md"
    (sh.cwd / "SPEC.yaml").write_text(yaml.safe_dump(spec))
    git(sh.cwd, "commit", "-qam", "a check that fails")
    return sh


def r_trust(tmp: Path, command: str) -> None:
    ok(failing_check(ralph_repo(tmp)).run(command), 0)  # the promise alone ends the run


def r_claude(tmp: Path, command: str) -> None:
    sh = ralph_repo(tmp).reply(NO_PROMISE)
    ok(sh.run(command), 1)
    calls = sh.calls()
    assert len(calls) == 10  # ralph_loop's default budget
    assert all("--continue" not in argv for argv in calls)
    assert all("--resume" in argv for argv in calls[1:])


def r_not_found(tmp: Path, command: str) -> None:
    proc = ralph_repo(tmp).run(command)
    ok(proc, 1)
    assert "ERROR main: Spec file not found: nope.yaml" in proc.stderr


def r_validate_spec(tmp: Path, command: str) -> None:
    sh = ralph_repo(tmp)
    spec = yaml.safe_load((sh.cwd / "SPEC.yaml").read_text())
    spec["goal"] = ""
    (sh.cwd / "SPEC.yaml").write_text(yaml.safe_dump(spec))
    proc = sh.run(command)
    ok(proc, 1)
    assert "Spec must have a non-empty 'goal'" in proc.stdout + proc.stderr
    run = sh.run("loops run SPEC.yaml")
    assert run.stderr.startswith("ERROR main: ")
    assert "Spec must have a non-empty 'goal'" in run.stderr
    assert sh.calls() == []


def r_max_iterations(tmp: Path, command: str) -> None:
    sh = ralph_repo(tmp).reply(NO_PROMISE)
    proc = sh.run(command)
    ok(proc, 1)
    assert "Max iterations (1) reached without a promise." in proc.stderr


# ---------------------------------------------------------------------- the harness


def h_worker(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp).reply(QUESTION)
    proc = sh.run(command)
    ok(proc, 1)  # waiting on a person
    assert sh.cwds() == ["loop-1-critical-path"]
    assert "which database" in proc.stdout
    health = json.loads(
        (sh.cwd / "coding-loops/loop-1-critical-path/specs/health.json").read_text()
    )
    assert set(health) >= {"loop_name", "status", "current_test", "progress", "last_heartbeat"}


def h_max_iterations(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp).reply(NO_PROMISE)
    for path in sh.cwd.glob("coding-loops/loop-*/config.json"):
        config = json.loads(path.read_text())
        config["max_attempts"] = 20
        path.write_text(json.dumps(config))
    git(sh.cwd, "commit", "-qam", "more attempts")
    ok(sh.run(command), 1)
    assert len(sh.calls()) == 10


def h_model(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp).reply(QUESTION)
    ok(sh.run(command), 1)
    assert [model_of(argv) for argv in sh.calls()] == ["claude-sonnet-4-20250514"]
    ok(sh.run("loops answer --help"), 0)
    sh2 = seed_repo(tmp / "again").reply(QUESTION)
    ok(sh2.run("loops worker loop-1-critical-path"), 1)
    assert [model_of(argv) for argv in sh2.calls()] == ["claude-opus-4-5-20251101"]  # config's


def h_config(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp).reply(QUESTION)
    ok(sh.run(command), 1)
    assert sh.cwds() == ["loop-1-critical-path"]


def h_up(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp).reply(QUESTION)
    proc = sh.run(command)  # the dashboard's port may be busy: it takes a free one
    ok(proc, 1)
    assert "dashboard: http://127.0.0.1:" in proc.stdout
    assert sorted(set(sh.cwds())) == [
        "loop-1-critical-path",
        "loop-2-infrastructure",
        "loop-3-polish",
    ]
    assert "Open escalations" in proc.stdout


def h_project_dir(tmp: Path, command: str) -> None:
    h_up(tmp, command)


def h_status(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp).reply(QUESTION)
    ok(sh.run("loops worker loop-1-critical-path"), 1)
    proc = sh.run(command)
    ok(proc, 0)
    assert "loop-1-critical-path" in proc.stdout
    assert "which database" in proc.stdout


def h_validate(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp)
    proc = sh.run(command)
    ok(proc, 0)
    summary = json.loads(
        (sh.cwd / "coding-loops/loop-1-critical-path/specs/test-state.json").read_text()
    )["summary"]
    assert summary["total"] == 3


def h_reset(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp).reply(QUESTION)
    ok(sh.run("loops worker loop-1-critical-path"), 1)
    proc = sh.run(command + " --no-wait")
    ok(proc, 0)
    events = sh.run("loops events --json --type task.reset")
    assert "CP-BUILD-001" in events.stdout


def h_add_test(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp)
    path = sh.cwd / "coding-loops/loop-1-critical-path/specs/test-state.json"
    state = json.loads(path.read_text())
    state["tests"].append(
        {
            "id": "NEW-TEST-001",
            "category": "category",
            "status": "pending",
            "attempts": 0,
            "lastResult": None,
            "dependsOn": "CP-SPEC-005",
            "automatable": True,
            "notes": "Description of what to implement",
            "acceptance_criteria": [
                {"criterion": "it exists", "check": {"type": "script", "run": "test -f NEW"}}
            ],
        }
    )
    state["summary"]["total"] += 1
    path.write_text(json.dumps(state, indent=2))
    ok(sh.run(command), 0)


def h_events(tmp: Path, command: str) -> None:
    sh = seed_repo(tmp).reply(QUESTION)
    ok(sh.run("loops worker loop-1-critical-path"), 1)
    proc = sh.run(command)
    ok(proc, 0)
    assert "iteration.finished" in proc.stdout
    transcripts = sh.cwd / "coding-loops/loop-1-critical-path/specs/logs/transcripts"
    assert (transcripts / "global-transcript.log").exists()


ROWS: dict[str, Callable[[Path, str], None]] = {
    "loops run": r_default,
    "loops run specs/my_spec.yaml": r_positional,
    "loops run SPEC.yaml -n 5": r_n5,
    "loops run SPEC.yaml -v": r_verbose,
    "loops run SPEC.yaml": r_verified,
    "loops run SPEC.yaml --trust-agent": r_trust,
    "loops run SPEC.yaml --agent claude": r_claude,
    "loops run nope.yaml": r_not_found,
    "loops validate SPEC.yaml": r_validate_spec,
    "loops run SPEC.yaml -n 1": r_max_iterations,
    "loops worker loop-1-critical-path": h_worker,
    "loops worker loop-1-critical-path --max-iterations 10": h_max_iterations,
    "loops worker loop-1-critical-path --model claude-sonnet-4-20250514": h_model,
    "loops worker --config coding-loops/loop-1-critical-path/config.json": h_config,
    "loops up coding-loops": h_up,
    "CODING_LOOP_PROJECT_DIR=$PWD loops up coding-loops": h_project_dir,
    "loops status": h_status,
    "loops validate coding-loops": h_validate,
    "loops reset loop-1-critical-path CP-BUILD-001": h_reset,
    "loops validate coding-loops/loop-1-critical-path/specs/test-state.json": h_add_test,
    "loops events --loop loop-1-critical-path": h_events,
}


def test_every_row_has_a_test() -> None:
    commands = doc_commands()
    assert len(commands) == len(set(commands)), "two rows show the same command"
    assert sorted(commands) == sorted(ROWS)


def test_the_readme_links_the_page() -> None:
    assert "docs/COMING-FROM.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", list(ROWS))
def test_row(command: str, tmp_path: Path) -> None:
    ROWS[command](tmp_path, command)
