"""The monitor's policy is the operator's to edit: `loops up` (and `loops monitor`)
read `monitor-policy.yaml` beside the loop directories, or `$LOOPS_MONITOR_POLICY`;
it names only what it changes, such as the silence limit of a running agent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.compose import POLICY_ENV, monitor_policy
from infra.settings import Settings
from loops.project import load_project
from tests.cli.test_coming_from import QUESTION, SEED, ok, seed_repo


def test_the_policy_file_beside_the_loops_sets_the_silence_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(POLICY_ENV, raising=False)
    shutil.copytree(SEED, tmp_path / "repo")
    loops = tmp_path / "repo" / "coding-loops"
    default = monitor_policy(
        load_project(loops), Settings.from_env()
    ).thresholds.silent_agent_after_s
    (loops / "monitor-policy.yaml").write_text("thresholds: {silent_agent_after_s: 42}\n")
    policy = monitor_policy(load_project(loops), Settings.from_env())
    assert policy.thresholds.silent_agent_after_s == 42 != default
    assert policy.thresholds.stale_intervals == 2.0  # what it does not name stays
    elsewhere = tmp_path / "mine.yaml"
    elsewhere.write_text("thresholds: {silent_agent_after_s: 7}\n")
    monkeypatch.setenv(POLICY_ENV, str(elsewhere))
    assert (
        monitor_policy(load_project(loops), Settings.from_env()).thresholds.silent_agent_after_s
        == 7
    )


def test_a_bad_policy_file_stops_loops_up_before_any_agent_runs(tmp_path: Path) -> None:
    sh = seed_repo(tmp_path).reply(QUESTION)
    policy = sh.cwd / "coding-loops" / "monitor-policy.yaml"
    policy.write_text("thresholds: {silent_agent_after_s: -1}\n")
    proc = sh.run("loops up coding-loops")
    ok(proc, 1)
    lines = [ln for ln in proc.stderr.splitlines() if "silent_agent_after_s" in ln]
    assert len(lines) == 1 and str(policy) in lines[0], proc.stderr
    assert sh.calls() == []
