"""Operator commands find the running system from anywhere inside the repository, as
git finds its repository (issue 11, item 7), and the hints the system prints work
verbatim in the directory where they are printed."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from bus.locate import AmbiguousSystem, find_project_dir
from tests.cli.test_coming_from import QUESTION, ok, seed_repo
from tests.conftest import require_real_redis, wait_until


def _repo(tmp_path: Path) -> Path:
    top = tmp_path / "repo"
    (top / ".git").mkdir(parents=True)
    (top / "src" / "deep").mkdir(parents=True)
    return top


def _stopped(directory: Path) -> Path:
    """A project whose earlier run left its embedded server's data."""
    (directory / ".loops" / "redis" / "appendonlydir").mkdir(parents=True)
    return directory


def _running(directory: Path, url: str) -> Path:
    """A project whose embedded server is up (a Redis answers at its recorded URL)."""
    (directory / ".loops").mkdir(parents=True, exist_ok=True)
    (directory / ".loops" / "redis.url").write_text(url + "\n")
    return directory


def test_a_system_in_a_subdirectory_is_found_from_the_top_and_from_elsewhere(
    tmp_path: Path,
) -> None:
    top = _repo(tmp_path)
    project = _stopped(top / "coding-loops")
    _stopped(top / "coding-loops" / "loop-1")  # nearer to a person standing in it
    (top / ".loops" / "worktrees").mkdir(parents=True)  # the loops' work trees, no server
    assert find_project_dir(top) == project
    assert find_project_dir(top / "src" / "deep") == project
    assert find_project_dir(top / "coding-loops" / "loop-1") == top / "coding-loops" / "loop-1"


def test_the_nearest_parent_wins_and_nothing_is_none(tmp_path: Path) -> None:
    top = _repo(tmp_path)
    assert find_project_dir(top / "src" / "deep") is None
    _stopped(top)
    assert find_project_dir(top / "src" / "deep") == top


def test_a_running_system_is_preferred_to_an_earlier_runs_data(tmp_path: Path) -> None:
    url = require_real_redis()
    top = _repo(tmp_path)
    _stopped(top)
    live = _running(top / "coding-loops", url)
    _running(top / "src", "redis://127.0.0.1:1/0")  # a stale record: nothing answers
    assert find_project_dir(top / "src" / "deep") == live


def test_two_running_systems_under_one_repository_name_the_dir_to_pick(tmp_path: Path) -> None:
    url = require_real_redis()
    top = _repo(tmp_path)
    _running(top / "a", url)
    _running(top / "b", url)
    with pytest.raises(AmbiguousSystem, match=r"pick one with --dir"):
        find_project_dir(top / "src")
    assert find_project_dir(top / "b") == top / "b"  # from inside one, that one


def test_printed_hints_work_verbatim_where_they_are_printed(tmp_path: Path) -> None:
    """`loops up coding-loops` at the repository root prints the open escalations and
    `answer with `loops answer ID TEXT``; run there, as printed, it answers. `loops status`
    reaches the same system from deep inside a loop's directory."""
    sh = seed_repo(tmp_path).reply(QUESTION)
    up = sh.run("loops up coding-loops")
    ok(up, 1)
    hint = re.search(r"answer with `(loops answer ID TEXT)`", up.stdout)
    assert hint, up.stdout
    asked = re.findall(r"^    (e-\S+) \[\w+\] \S+: .*which database", up.stdout, re.M)
    assert asked, up.stdout
    esc_id = asked[0]
    command = hint.group(1).replace("ID", esc_id).replace("TEXT", "'use postgres'")
    answered = sh.run(command)  # where it was printed: the repository root
    ok(answered, 0)
    assert f"answered {esc_id}" in answered.stdout

    sh.cwd = sh.cwd / "coding-loops" / "loop-1-critical-path" / "specs"
    status = sh.run("loops escalations --all")
    ok(status, 0)
    assert esc_id in status.stdout and "use postgres" in status.stdout


def test_a_served_system_is_reached_from_a_subdirectory_and_stop_then_resume_works(
    tmp_path: Path,
) -> None:
    """`loops up coding-loops --serve` at the root; from a loop's `specs/` directory,
    `loops status` finds it, and `loops stop LOOP` then `loops resume LOOP` are both
    acknowledged (the stopped loop starts again for the resume)."""
    sh = seed_repo(tmp_path).reply(QUESTION)
    up = subprocess.Popen(
        ["bash", "-c", "exec loops up coding-loops --serve"],
        cwd=sh.cwd,
        env=sh.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        sh.cwd = sh.cwd / "coding-loops" / "loop-3-polish" / "specs"

        def running() -> bool:
            proc = sh.run("loops status")
            return proc.returncode == 0 and "loop-3-polish" in proc.stdout

        wait_until(running, timeout=120, interval=1.0)
        stop = sh.run("loops stop loop-3-polish --wait 60")
        ok(stop, 0)
        assert "loop-3-polish: stopping after its current iteration" in stop.stdout
        resume = sh.run("loops resume loop-3-polish --wait 60")
        ok(resume, 0)
        assert "loop-3-polish: resumed" in resume.stdout
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=120)
