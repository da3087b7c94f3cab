"""Reruns of `loops run` (issue 11, item 6): `-n` counts this run's agent calls, what
earlier runs tried is kept and shown and is never an obstacle, and the message of a
task left failed or blocked says how to go on, as a command that works verbatim where
it is printed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from loops.workspace import git
from tests.cli.test_coming_from import QUESTION, ok, seed_repo
from tests.cli.test_run import LOOPS, proc_env, repo, run_agent, state_of

__all__ = ["repo"]  # the fixture

AGENT = """#!/bin/sh
# Works only once the test says so (a file beside the repository).
if [ -f {ready} ]; then
  printf "def greet():\\n    return 'hi'\\n" > greet.py
  echo '<promise>greet done</promise>'
else
  echo 'still working'
fi
"""


def agent(tmp_path: Path) -> tuple[str, Path]:
    ready = tmp_path / "ready"
    script = tmp_path / "agent.sh"
    script.write_text(AGENT.format(ready=ready))
    script.chmod(0o755)
    return f"command:{script}", ready


def go_on_hint(stderr: str) -> str:
    """The command the summary says to run, exactly as printed."""
    found = re.findall(r"run `([^`]+)` to go on", stderr)
    assert len(found) == 1, stderr
    return str(found[0])


def run_verbatim(repo: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = proc_env()
    env["PATH"] = f"{Path(LOOPS).parent}:{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", command],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


def test_a_rerun_gets_a_fresh_n_keeps_the_attempts_and_the_printed_hint_goes_on(
    repo: Path, tmp_path: Path
) -> None:
    command, ready = agent(tmp_path)
    first = run_agent(repo, command, "-n", "2")
    assert first.returncode == 1, first.stderr
    assert "Iteration 1/2 ..." in first.stderr and "Iteration 2/2 ..." in first.stderr
    assert "no verified claim after 2 iterations" in first.stderr
    hint = go_on_hint(first.stderr)
    assert state_of(repo)["attempts"] == 1

    second = run_verbatim(repo, hint + " -n 2")  # ran again as it failed: the same budget
    assert second.returncode == 1, second.stderr
    # `-n` counts this run's calls; the loop's running count is shown beside it.
    assert "Iteration 1/2 ... " not in second.stderr
    assert "Iteration 1/2 (iteration 3 of the loop) ..." in second.stderr
    assert "Iteration 2/2 (iteration 4 of the loop) ..." in second.stderr
    assert "(2 failed attempts)" in second.stderr
    assert state_of(repo)["attempts"] == 2

    ready.touch()
    third = run_verbatim(repo, go_on_hint(second.stderr))
    assert third.returncode == 0, third.stderr
    assert state_of(repo)["status"] == "passed"
    assert state_of(repo)["attempts"] == 2  # kept: the failed attempts before it


def test_a_task_an_unstartable_agent_blocked_runs_once_the_agent_is_fixed(
    repo: Path, tmp_path: Path
) -> None:
    broken = run_agent(repo, "command:no-such-agent-xyz", "-n", "3")
    assert broken.returncode == 1, broken.stderr
    assert "fix the command" in broken.stderr
    assert state_of(repo)["status"] == "blocked"
    command, ready = agent(tmp_path)
    ready.touch()
    fixed = run_agent(repo, command, "-n", "3")
    assert fixed.returncode == 0, fixed.stderr
    assert state_of(repo)["status"] == "passed"


def test_a_hand_added_task_runs_and_one_without_criteria_asks_for_a_sign_off(
    tmp_path: Path,
) -> None:
    """A task added to test-state.json by hand (not committed) is verified with the
    criteria the file gives it; a seed-format task without criteria (and no
    check_command) goes to a sign-off, never "unknown task ... in main's spec"; and
    `loops validate` says so."""
    sh = seed_repo(tmp_path)
    path = sh.cwd / "coding-loops/loop-3-polish/specs/test-state.json"
    state = json.loads(path.read_text())
    state["tests"].insert(
        0,
        {
            "id": "HAND-001",
            "status": "pending",
            "notes": "Write hand.txt",
            "acceptance_criteria": [
                {
                    "criterion": "hand.txt exists",
                    "check": {"type": "script", "run": "test -f hand.txt"},
                }
            ],
        },
    )
    path.write_text(json.dumps(state, indent=2))  # by hand, not committed
    validate = sh.run("loops validate coding-loops")
    ok(validate, 0)
    assert "NOTE " in validate.stdout and "PREVIOUS-TEST-ID" in validate.stdout
    assert "no acceptance_criteria and no check_command" in validate.stdout

    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho done > hand.txt\necho '<promise>done</promise>'\n")
    script.chmod(0o755)
    proc = sh.run(f"loops worker loop-3-polish --agent command:{script}")
    ok(proc, 1)  # a person still has to sign off the task without criteria
    assert git(sh.cwd, "show", "main:hand.txt") == "done"
    assert "HAND-001: " not in proc.stdout  # merged: not in the summary's leftovers
    assert "unknown task" not in proc.stdout + proc.stderr
    assert "needs a sign-off" in proc.stdout and "PREVIOUS-TEST-ID" in proc.stdout


def test_a_task_out_of_attempts_says_how_to_retry_it_and_the_hint_works(tmp_path: Path) -> None:
    """The seed's `failed` task with its attempts used up is never an obstacle: the
    summary prints the reset command, which works verbatim where it is printed (no
    system running), and the next run takes the task up with zero attempts."""
    sh = seed_repo(tmp_path)
    config_path = sh.cwd / "coding-loops/loop-3-polish/config.json"
    config = json.loads(config_path.read_text())
    config["max_attempts"] = 1  # PREVIOUS-TEST-ID failed once already
    config_path.write_text(json.dumps(config))
    git(sh.cwd, "commit", "-qam", "one attempt")
    first = sh.run("loops worker loop-3-polish")
    ok(first, 1)
    assert sh.calls() == []  # nothing it could run
    hint = re.search(r"to retry it: `([^`]+)`", first.stdout)
    assert hint and "PREVIOUS-TEST-ID" in hint.group(1), first.stdout
    ok(sh.run(hint.group(1)), 0)
    state = sh.cwd / "coding-loops/loop-3-polish/specs/test-state.json"
    again = sh.reply(QUESTION).run("loops worker loop-3-polish")
    ok(again, 1)  # the agent asks a question now
    entry = next(e for e in json.loads(state.read_text())["tests"] if e["id"] == "PREVIOUS-TEST-ID")
    assert entry["attempts"] == 0 and len(sh.calls()) >= 1
