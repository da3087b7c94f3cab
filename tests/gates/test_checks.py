"""Script checks: secrets stripped, output capped, hanging process groups killed; and
which changed files count as tampering."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gates.checks import command_paths, flagged_files, run_script, scrubbed_env
from tests.conftest import wait_until


def test_secrets_are_stripped_from_the_environment() -> None:
    env = scrubbed_env(
        {
            "PATH": "/bin",
            "HOME": "/root",
            "ANTHROPIC_API_KEY": "sk-1",
            "GITHUB_TOKEN": "t",
            "MY_SECRET": "s",
            "STRIPE_KEY": "k",
            "AWS_REGION": "eu",
            "DB_PASSWORD": "p",
            "GIT_DIR": "/elsewhere",
            "LANG": "C",
        }
    )
    assert env == {"PATH": "/bin", "HOME": "/root", "LANG": "C"}


def test_a_check_does_not_see_secrets(tmp_path: Path) -> None:
    env = scrubbed_env({**os.environ, "ANTHROPIC_API_KEY": "sk-secret"})
    result = run_script("env", tmp_path, criterion="env", env=env)
    assert result.passed and "sk-secret" not in result.output_tail


def test_output_is_cut_to_its_tail(tmp_path: Path) -> None:
    cmd = "for i in $(seq 1 5000); do echo line-$i; done; exit 3"
    result = run_script(cmd, tmp_path, criterion="noisy", tail_bytes=200)
    assert result.passed is False and result.exit_code == 3
    assert result.output_tail.endswith("line-5000\n") and "line-1\n" not in result.output_tail
    assert len(result.output_tail) < 260


def test_a_hanging_check_and_its_children_are_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cmd = f"sleep 300 & echo $! > {pidfile}; echo started; wait"
    start = time.monotonic()
    result = run_script(cmd, tmp_path, criterion="hangs", timeout_s=0.5)
    assert time.monotonic() - start < 10
    assert result.timed_out and result.passed is False and result.exit_code is None
    assert "started" in result.output_tail and "timeout" in result.output_tail
    child = int(pidfile.read_text())
    wait_until(lambda: not _alive(child), timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _tree(root: Path) -> Path:
    for rel in ("tests/test_app.py", "tests/unit/test_x.py", "scripts/check.sh", "app.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    return root


def test_command_paths_are_the_existing_files_and_dirs_a_command_names(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    files, dirs = command_paths(
        [
            "pytest tests/test_app.py::test_health -v -k health",
            "bash scripts/check.sh && echo ok",
            "pytest --rootdir=. tests/unit/",
            "cat /etc/passwd ../outside missing.txt",
        ],
        root,
    )
    assert files == {"tests/test_app.py", "scripts/check.sh"}
    assert dirs == {"tests/unit/"}


def test_flagged_files_cover_named_tests_dirs_protected_globs_and_conftest(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path)
    changed = [
        "app.py",
        "tests/test_app.py",
        "tests/unit/test_new.py",
        "tests/conftest.py",
        "loop-1/specs/test-state.json",
        "SPEC.yaml",
        "docs/readme.md",
    ]
    flagged = flagged_files(
        changed,
        commands=["pytest tests/test_app.py", "pytest tests/unit"],
        root=root,
        protected=("SPEC.yaml", "*/test-state.json"),
    )
    assert flagged == [
        "SPEC.yaml",
        "loop-1/specs/test-state.json",
        "tests/conftest.py",
        "tests/test_app.py",
        "tests/unit/test_new.py",
    ]
    assert flagged_files(["app.py"], commands=["pytest tests/"], root=root, protected=()) == []
