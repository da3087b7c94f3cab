"""Operator commands find the running system from anywhere inside the repository, as
git finds its repository (issue 11, item 7), and the hints the system prints work
verbatim in the directory where they are printed."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from infra.locate import AmbiguousSystem, find_project_dir
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


def test_a_state_dir_planted_in_a_work_tree_is_never_the_system(tmp_path: Path) -> None:
    # An agent writes its work tree: a `.loops/` it plants there (a checkout has a `.git`
    # too) must not take the operator's commands, even run from inside that work tree.
    top = _stopped(_repo(tmp_path))
    tree = top / ".loops" / "worktrees" / "loop-1"
    (tree / ".git").mkdir(parents=True)
    _stopped(tree)
    _stopped(tree / "sub")
    assert find_project_dir(tree / "sub") == top
    assert find_project_dir(tree) == top


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


def test_a_running_system_is_reached_where_its_hints_are_printed_and_below(
    tmp_path: Path,
) -> None:
    """`loops up coding-loops --serve` at the repository root logs `BLOCKED on ...
    (answer with `loops answer ID ...`)`; run there, as printed, it answers. From a
    loop's `specs/` directory the same system is found: the answer shows, and
    `loops stop LOOP` then `loops resume LOOP` are both acknowledged (the stopped loop
    starts again for the resume)."""
    sh = seed_repo(tmp_path).reply(QUESTION)
    log = tmp_path / "up.log"
    with log.open("w") as sink:
        up = subprocess.Popen(
            ["bash", "-c", "exec loops up coding-loops --serve"],
            cwd=sh.cwd,
            env=sh.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        hint_re = r"BLOCKED on PREVIOUS-TEST-ID: .*\(answer with `(loops answer (e-\S+) \.\.\.)`\)"
        found = wait_until(lambda: re.search(hint_re, log.read_text()), timeout=120, interval=0.5)
        command, esc_id = found.group(1), found.group(2)
        answered = sh.run(command.replace("...", "'use postgres'"))  # where it was printed
        ok(answered, 0)
        assert f"answered {esc_id}" in answered.stdout

        sh.cwd = sh.cwd / "coding-loops" / "loop-3-polish" / "specs"
        listed = sh.run("loops escalations --all")
        ok(listed, 0)
        assert esc_id in listed.stdout and "use postgres" in listed.stdout
        stop = sh.run("loops stop loop-3-polish --wait 60")
        ok(stop, 0)
        assert "loop-3-polish: stopping after its current iteration" in stop.stdout
        resume = sh.run("loops resume loop-3-polish --wait 60")
        ok(resume, 0)
        assert "loop-3-polish: resumed" in resume.stdout
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=120)
