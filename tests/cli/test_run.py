"""`loops run` as an operator runs it: a real subprocess, a real git repository, the
`script:` agent. ralph_loop's flags, messages and exit codes; but a false claim no
longer passes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.git import git

LOOPS = str(Path(sys.executable).parent / "loops")

SPEC = {
    "goal": "Add a greeting module",
    "tasks": [
        {
            "id": "greet",
            "title": "Write greet.py",
            "description": "greet.py defines greet() returning 'hi'",
            "acceptance_criteria": [
                {
                    "criterion": "greet() returns hi",
                    "check": {
                        "type": "script",
                        "run": "python -c 'import greet; assert greet.greet() == \"hi\"'",
                    },
                },
            ],
        }
    ],
}
GOOD = {"greet.py": "def greet():\n    return 'hi'\n"}
BAD = {"greet.py": "def greet():\n    return 'nope'\n"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("project\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def proc_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "REDIS_URL"))}


def loops_run(
    repo: Path, script: object, *args: str, spec: object = SPEC, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    (repo / "SPEC.yaml").write_text(yaml.safe_dump(spec))
    (repo.parent / "agent.yaml").write_text(yaml.safe_dump(script))
    return subprocess.run(
        [LOOPS, "run", "SPEC.yaml", "--agent", f"script:{repo.parent / 'agent.yaml'}", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=proc_env(),
    )


def test_honest_claim_is_verified_and_lands_on_the_current_branch(repo: Path) -> None:
    (repo / "notes.txt").write_text("my uncommitted notes\n")  # never touched
    proc = loops_run(
        repo, {"default": [{"write": GOOD, "reply": "<promise>all tasks complete</promise>"}]}
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "INFO loops.run: Starting — spec='SPEC.yaml', goal='Add a greeting module', max_iterations=10"
        in proc.stderr
    )
    assert "Promise detected" in proc.stderr and "verified and merged" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (repo / "greet.py").read_text() == GOOD["greet.py"]
    assert git(repo, "show", "main:greet.py") == GOOD["greet.py"].strip()
    assert (repo / "notes.txt").read_text() == "my uncommitted notes\n"
    assert git(repo, "status", "--porcelain") == "?? SPEC.yaml\n?? notes.txt".strip() or sorted(
        git(repo, "status", "--porcelain").splitlines()
    ) == ["?? SPEC.yaml", "?? notes.txt"]


def test_false_claim_is_caught_and_the_retry_passes(repo: Path) -> None:
    script = {
        "default": [
            {"write": BAD, "reply": "Done! <promise>all tasks complete</promise>"},
            {"write": GOOD, "reply": "Fixed. <promise>all tasks complete</promise>"},
        ]
    }
    proc = loops_run(repo, script)
    assert proc.returncode == 0, proc.stderr
    assert "verification of greet failed" in proc.stderr
    assert git(repo, "show", "main:greet.py") == GOOD["greet.py"].strip()
    # The bad commit never reached main.
    log = git(repo, "log", "--format=%H", "main")
    bad = git(repo, "log", "--format=%H", "-1", "refs/loops/tasks/spec/greet~1")
    assert bad not in log.splitlines()


def test_max_iterations_without_verified_claim_exits_1(repo: Path) -> None:
    proc = loops_run(
        repo, {"default": [{"write": BAD, "reply": "<promise>done</promise>"}]}, "-n", "2"
    )
    assert proc.returncode == 1
    assert "ERROR loops.worker: Max iterations (2) reached without a promise." in proc.stderr
    assert "Traceback" not in proc.stderr
    assert git(repo, "show", "main:README.md") == "project"
    assert git(repo, "ls-tree", "--name-only", "main").split() == ["README.md"]


def test_trust_agent_restores_the_old_behaviour(repo: Path) -> None:
    proc = loops_run(
        repo, {"default": [{"write": BAD, "reply": "<promise>done</promise>"}]}, "--trust-agent"
    )
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "show", "main:greet.py") == BAD["greet.py"].strip()


def test_natural_check_without_a_model_needs_sign_off(repo: Path) -> None:
    spec = {
        **SPEC,
        "tasks": [
            {
                **SPEC["tasks"][0],
                "acceptance_criteria": [  # type: ignore[index]
                    {
                        "criterion": "greeting is friendly",
                        "check": {
                            "type": "natural",
                            "description": "Read greet.py; is it friendly?",
                        },
                    },
                ],
            }
        ],
    }
    proc = loops_run(
        repo, {"default": [{"write": GOOD, "reply": "<promise>done</promise>"}]}, spec=spec
    )
    assert proc.returncode == 1
    assert "sign-off" in proc.stderr and "greeting is friendly" in proc.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tasks": SPEC["tasks"]}, "Spec must have a non-empty 'goal'"),
        (
            {
                **SPEC,
                "tasks": [
                    {
                        **SPEC["tasks"][0],
                        "acceptance_criteria": [  # type: ignore[index]
                            {"criterion": "tests pass", "check": {"type": "shell", "run": "x"}}
                        ],
                    }
                ],
            },
            "Unknown check type 'shell' for criterion 'tests pass'. Must be 'script' or 'natural'.",
        ),
    ],
)
def test_spec_errors_are_one_line_before_any_agent_runs(
    repo: Path, spec: object, message: str
) -> None:
    proc = loops_run(repo, {"default": [{"run": "touch ran-agent", "reply": "x"}]}, spec=spec)
    assert proc.returncode == 1
    assert message in proc.stderr and proc.stderr.startswith("ERROR main: ")
    assert "Traceback" not in proc.stderr
    assert not (repo / ".loops").exists()


def test_missing_spec_file(repo: Path) -> None:
    proc = subprocess.run(
        [LOOPS, "run", "nope.yaml"], cwd=repo, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1
    assert "Spec file not found: nope.yaml" in proc.stderr


@pytest.mark.parametrize(
    ("verdict", "code"),
    [("PASS\nIt says hi: friendly.", 0), ("FAIL\nIt does not greet anyone.", 1)],
)
def test_natural_check_is_judged_by_a_model_when_one_is_configured(
    repo: Path, verdict: str, code: int
) -> None:
    from tests.fakes.mock_anthropic import MockAnthropic

    spec = {
        **SPEC,
        "tasks": [
            {
                **SPEC["tasks"][0],
                "acceptance_criteria": [  # type: ignore[index]
                    {
                        "criterion": "greeting is friendly",
                        "check": {
                            "type": "natural",
                            "description": "Read greet.py; is it friendly?",
                        },
                    },
                ],
            }
        ],
    }
    (repo / "SPEC.yaml").write_text(yaml.safe_dump(spec))
    (repo.parent / "agent.yaml").write_text(
        yaml.safe_dump({"default": [{"write": GOOD, "reply": "<promise>done</promise>"}]})
    )
    with MockAnthropic(aux_reply=verdict) as api:
        proc = subprocess.run(
            [
                LOOPS,
                "run",
                "SPEC.yaml",
                "-n",
                "2",
                "--agent",
                f"script:{repo.parent / 'agent.yaml'}",
            ],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")},
                "ANTHROPIC_BASE_URL": api.base_url,
                "ANTHROPIC_API_KEY": "test-key",
            },
        )
        judged = [r for r in api.requests if r.path == "/v1/messages"]
    assert proc.returncode == code, proc.stderr
    assert judged, "the model was never asked"
    assert "Read greet.py; is it friendly?" in json.dumps(judged[0].body)
    assert "test-key" not in proc.stderr
    if code:
        assert "It does not greet anyone." in proc.stderr
        assert git(repo, "ls-tree", "--name-only", "main").split() == ["README.md"]
    else:
        assert git(repo, "show", "main:greet.py") == GOOD["greet.py"].strip()


def test_uncommitted_changes_in_the_way_are_kept_and_the_run_ends_with_a_question(
    repo: Path,
) -> None:
    # The person has their own, untracked greet.py: the verified work cannot land on
    # the checked-out branch without overwriting it. git refuses; so do we.
    (repo / "greet.py").write_text("# my draft, do not touch\n")
    proc = loops_run(
        repo, {"default": [{"write": GOOD, "reply": "<promise>done</promise>"}]}, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert (repo / "greet.py").read_text() == "# my draft, do not touch\n"
    assert "block the fast-forward" in proc.stderr and "greet.py" in proc.stderr
    question = next(ln for ln in proc.stderr.splitlines() if "Open question" in ln)
    assert "commit or stash them" in question and "loop's branch" not in question
    assert "Traceback" not in proc.stderr
    # The verified work is kept on the loop's branch.
    assert git(repo, "show", "refs/loops/tasks/spec/greet:greet.py") == GOOD["greet.py"].strip()
    assert "Answer with `loops answer ID TEXT`" in proc.stderr
    # The person moves their draft away and answers, with no system running: the
    # project's embedded server is woken for the command. The next run merges.
    eid = re.search(r"Open question (e-[0-9a-f]+)", proc.stderr).group(1)  # type: ignore[union-attr]
    (repo / "greet.py").rename(repo / "greet.draft")
    answer = subprocess.run(
        [LOOPS, "answer", eid, "moved my draft", "--decision", "retry"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    again = subprocess.run(
        [LOOPS, "run", "SPEC.yaml", "--agent", f"script:{repo.parent / 'agent.yaml'}"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env=proc_env(),
    )
    assert again.returncode == 0, again.stderr
    assert git(repo, "show", "main:greet.py") == GOOD["greet.py"].strip()
    assert (repo / "greet.draft").read_text() == "# my draft, do not touch\n"


def test_agent_timeout_flag_kills_a_hanging_agent(repo: Path) -> None:
    (repo / "SPEC.yaml").write_text(yaml.safe_dump(SPEC))
    proc = subprocess.run(
        [
            LOOPS,
            "run",
            "SPEC.yaml",
            "--agent",
            "command:sleep 600",
            "--agent-timeout",
            "1",
            "-n",
            "1",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=90,
        env=proc_env(),
    )
    assert proc.returncode == 1, proc.stderr
    assert "Max iterations (1) reached" in proc.stderr and "Traceback" not in proc.stderr
    log = repo / ".loops" / "state" / "logs" / "transcripts" / "global-transcript.log"
    assert "failure=timeout" in log.read_text()
    bad = subprocess.run(
        [LOOPS, "run", "SPEC.yaml", "--agent-timeout", "0"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=30,
        env=proc_env(),
    )
    assert bad.returncode != 0 and "--agent-timeout" in bad.stderr


def run_agent(repo: Path, agent: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (repo / "SPEC.yaml").write_text(yaml.safe_dump(SPEC))
    return subprocess.run(
        [LOOPS, "run", "SPEC.yaml", "--agent", agent, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=90,
        env={**proc_env(), **env},
    )


def state_of(repo: Path) -> dict[str, object]:
    data = json.loads((repo / ".loops" / "state" / "spec.test-state.json").read_text())
    return data["tests"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("broken", ["missing", "not-executable", "claude"])
def test_an_agent_that_cannot_start_is_one_clear_line_and_blocks_at_once(
    repo: Path, tmp_path: Path, broken: str
) -> None:
    env: dict[str, str] = {}
    if broken == "missing":
        agent, says = "command:no-such-agent-xyz", "'no-such-agent-xyz' cannot start: not found"
    elif broken == "not-executable":
        script = tmp_path / "agent.sh"
        script.write_text("#!/bin/sh\necho hi\n")
        agent, says = f"command:{script}", "cannot start: not executable (chmod +x it)"
    else:
        agent, says = "claude", "could not start 'no-such-claude-xyz': not found on PATH"
        env["LOOPS_CLAUDE_BIN"] = "no-such-claude-xyz"
    proc = run_agent(repo, agent, "-n", "5", **env)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if says in ln]
    assert len(lines) == 2, proc.stderr  # the line, once; and the summary's
    assert lines[0].startswith("ERROR loops.worker: The agent cannot run: ")
    assert "fix the command" in lines[0] or "install Claude Code" in lines[0]
    assert lines[1].startswith("ERROR loops.run: Task 'greet' is blocked: the agent cannot start")
    assert "Iteration 2" not in proc.stderr and "Traceback" not in proc.stderr
    entry = state_of(repo)
    assert entry["status"] == "blocked" and entry.get("attempts", 0) == 0


def test_a_non_zero_exit_prints_ralphs_warning_with_the_last_stderr_line(
    repo: Path, tmp_path: Path
) -> None:
    script = tmp_path / "agent.sh"
    script.write_text(
        "#!/bin/sh\necho 'still working'\necho 'noise' >&2\necho 'boom at the end' >&2\nexit 3\n"
    )
    script.chmod(0o755)
    proc = run_agent(repo, f"command:{script}", "-n", "1")
    assert proc.returncode == 1
    assert f"WARNING loops.worker: command:{script} exited 3: boom at the end" in proc.stderr


def test_the_same_crash_three_times_holds_the_loop_and_asks_without_burning_attempts(
    repo: Path, tmp_path: Path
) -> None:
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho 'Segmentation fault in the agent' >&2\nexit 2\n")
    script.chmod(0o755)
    proc = run_agent(repo, f"command:{script}", "-n", "10")
    assert proc.returncode == 1, proc.stderr
    warnings = [
        ln
        for ln in proc.stderr.splitlines()
        if ln.startswith("WARNING loops.worker: command:")
        and ln.endswith("exited 2: Segmentation fault in the agent")
    ]
    assert len(warnings) == 3, proc.stderr
    assert "Iteration 4" not in proc.stderr
    held = [ln for ln in proc.stderr.splitlines() if "crashed 3 times in a row" in ln]
    assert held and held[0].startswith("ERROR loops.worker: Paused: the agent crashed 3 times")
    assert "Segmentation fault in the agent" in held[0] and "loops resume spec" in held[0]
    assert re.search(r"Open question e-\w+: The agent .* crashed 3 times", proc.stderr)
    assert state_of(repo).get("attempts", 0) == 0
