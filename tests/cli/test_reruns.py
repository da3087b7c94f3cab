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
from tests.cli.test_coming_from import ok, seed_repo
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


def test_a_rerun_goes_on_with_a_fresh_n_kept_attempts_and_the_printed_hint(
    repo: Path, tmp_path: Path
) -> None:
    """A task an unstartable agent blocked runs once the agent is fixed; a failed run
    prints the command that goes on; run verbatim, it gets a fresh `-n` and keeps the
    attempts; the run that passes keeps them too."""
    broken = run_agent(repo, "command:no-such-agent-xyz", "-n", "2")
    assert broken.returncode == 1, broken.stderr
    assert "fix the command" in broken.stderr and state_of(repo)["status"] == "blocked"

    command, ready = agent(tmp_path)
    first = run_agent(repo, command, "-n", "2")  # the agent fixed: the task runs again
    assert first.returncode == 1, first.stderr
    assert "Iteration 2/2" in first.stderr and "Iteration 3/2" not in first.stderr
    assert "no verified claim after 2 iterations" in first.stderr
    assert state_of(repo)["attempts"] == 1

    second = run_verbatim(repo, go_on_hint(first.stderr) + " -n 2")
    assert second.returncode == 1, second.stderr
    # `-n` counts this run's calls; the loop's running count is shown beside it.
    assert re.search(r"Iteration 1/2 \(iteration \d+ of the loop\) \.\.\.", second.stderr)
    assert re.search(r"Iteration 2/2 \(iteration \d+ of the loop\) \.\.\.", second.stderr)
    assert "(2 failed attempts)" in second.stderr and state_of(repo)["attempts"] == 2

    # Between runs nothing is running: a control command (as the crash-hold hint prints
    # it) is recorded for the next start and exits 0 at once.
    resumed = run_verbatim(repo, "loops resume spec")
    assert resumed.returncode == 0, resumed.stderr
    assert "nothing is running: it applies when spec starts again" in resumed.stdout

    ready.touch()
    third = run_verbatim(repo, go_on_hint(second.stderr))
    assert third.returncode == 0, third.stderr
    assert state_of(repo)["status"] == "passed"
    assert state_of(repo)["attempts"] == 2  # kept: the failed attempts before it


def test_hand_added_criteria_less_and_out_of_attempts_tasks_all_go_on(tmp_path: Path) -> None:
    """On the seed project, loop-3 with `max_attempts: 1`: a task added to
    test-state.json by hand (not committed) runs and merges with the criteria the file
    gives it; PREVIOUS-TEST-ID, failed once already, is out of attempts and the summary
    prints the reset command, which works verbatim with no system running; the next
    run takes it up, and, having no criteria (nor a check_command), it goes to a
    sign-off, never "unknown task ... in main's spec". `loops validate` says so first."""
    sh = seed_repo(tmp_path)
    loop = sh.cwd / "coding-loops" / "loop-3-polish"
    config = json.loads((loop / "config.json").read_text())
    config["max_attempts"] = 1
    (loop / "config.json").write_text(json.dumps(config))
    git(sh.cwd, "commit", "-qam", "one attempt")
    path = loop / "specs" / "test-state.json"
    state = json.loads(path.read_text())
    check = {"type": "script", "run": "test -f hand.txt"}
    state["tests"].insert(
        0,
        {
            "id": "HAND-001",
            "status": "pending",
            "notes": "Write hand.txt",
            "acceptance_criteria": [{"criterion": "hand.txt exists", "check": check}],
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
    worker = f"loops worker loop-3-polish --agent command:{script}"
    first = sh.run(worker)
    ok(first, 1)
    assert git(sh.cwd, "show", "main:hand.txt") == "done"
    # Merged: not among the summary's leftovers (its receipt line names it as loop/TASK).
    assert not re.search(r"^\s+HAND-001: ", first.stdout, re.M), first.stdout
    hint = re.search(r"to retry it: `([^`]+)`", first.stdout)
    assert hint and "PREVIOUS-TEST-ID" in hint.group(1), first.stdout
    ok(sh.run(hint.group(1)), 0)

    second = sh.run(worker)
    ok(second, 1)  # a person signs off the task without criteria
    assert "unknown task" not in first.stdout + first.stderr + second.stdout + second.stderr
    assert "needs a sign-off" in second.stdout and "PREVIOUS-TEST-ID" in second.stdout
    entry = next(e for e in json.loads(path.read_text())["tests"] if e["id"] == "PREVIOUS-TEST-ID")
    assert entry["attempts"] == 0  # reset
