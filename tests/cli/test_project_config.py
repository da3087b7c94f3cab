"""project.json (optional, next to the `loop-*` directories) and `--test-command`: read by
`loops up`/`loops merge`, validated by `loops validate` like every other file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fakeredis
import pytest
import yaml

from cli.main import build_parser
from events import ValidationFailed
from infra.git import git
from loops.harness import ProjectConfig
from loops.project import ENV_PROJECT_DIR, load_project

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOOPS_BIN = Path(sys.executable).parent / "loops"


@pytest.fixture
def loops_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(ENV_PROJECT_DIR, raising=False)
    root = tmp_path / "repo"
    shutil.copytree(FIXTURES / "seed-project", root)
    return root / "coding-loops"


def run_loops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != ENV_PROJECT_DIR and not k.startswith(("ANTHROPIC_", "REDIS_URL"))
    }
    return subprocess.run(
        [str(LOOPS_BIN), *args], capture_output=True, text=True, timeout=90, cwd=cwd, env=env
    )


def test_project_json_is_optional_and_loaded_when_present(loops_dir: Path) -> None:
    assert load_project(loops_dir).config == ProjectConfig()
    (loops_dir / "project.json").write_text(
        json.dumps({"test_command": "make test", "protected": ["fixtures/**"]})
    )
    config = load_project(loops_dir).config
    assert config.test_command == "make test" and config.protected == ("fixtures/**",)
    assert config.recheck_merged is True and config.check_workers == 2


def test_validate_names_file_field_and_fix_of_a_bad_project_json(loops_dir: Path) -> None:
    path = loops_dir / "project.json"
    path.write_text(json.dumps({"test_comand": "pytest", "check_timeout_s": -1}))
    out = run_loops("validate", str(loops_dir))
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(str(path))]
    assert len(lines) == 2, out.stdout
    assert any("test_comand" in ln for ln in lines)
    assert any("check_timeout_s" in ln and "greater than 0" in ln for ln in lines)
    with pytest.raises(ValidationFailed, match="check_timeout_s"):
        load_project(loops_dir)

    path.write_text(json.dumps({"test_command": "pytest -q", "recheck_merged": False}))
    out = run_loops("validate", str(loops_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"OK {path}" in out.stdout.splitlines()
    assert run_loops("validate", str(path)).stdout.strip() == f"OK {path}"


def test_test_command_flag_on_up_merge_and_run() -> None:
    parser = build_parser()
    for argv in (["up", "DIR"], ["merge"], ["run", "SPEC.yaml"]):
        args = parser.parse_args([*argv, "--test-command", "pytest -q"])
        assert args.test_command == "pytest -q"
        assert parser.parse_args(argv).test_command is None


SPEC = {
    "goal": "greet",
    "tasks": [
        {
            "id": "greet",
            "title": "Write greet.py",
            "description": "greet.py defines greet()",
            "acceptance_criteria": [
                {
                    "criterion": "greet.py exists",
                    "check": {"type": "script", "run": "test -f greet.py"},
                }
            ],
        }
    ],
}


@pytest.mark.parametrize(
    ("test_command", "merged"), [("test -f README.md", True), ("false", False)]
)
def test_loops_run_runs_the_test_command_on_the_merged_tree(
    tmp_path: Path, test_command: str, merged: bool
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("project\n")
    (root / "SPEC.yaml").write_text(yaml.safe_dump(SPEC))
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "init")
    script = tmp_path / "agent.yaml"
    reply = {
        "write": {"greet.py": "def greet():\n    return 'hi'\n"},
        "reply": "<promise>done</promise>",
    }
    script.write_text(yaml.safe_dump({"default": [reply]}))
    out = run_loops(
        "run", "SPEC.yaml", "-n", "1", "--agent", f"script:{script}", "--test-command", test_command,
        cwd=root,
    )  # fmt: skip
    assert "Traceback" not in out.stderr
    assert (out.returncode == 0) is merged, out.stderr
    files = git(root, "ls-tree", "--name-only", "main").split()
    assert ("greet.py" in files) is merged


def test_the_cli_test_command_overrides_project_json_in_the_merge_queue(tmp_path: Path) -> None:
    from app.compose import loader_with_fallback, make_gate, make_merge
    from bus import BusSettings, RedisBus
    from gates import DEFAULT_PROTECTED

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7, 0)), protocol=2)
    bus = RedisBus(client, settings=BusSettings(prefix="t-compose"))
    config = ProjectConfig(
        test_command="make test", protected=("data/**",), recheck_merged=False, check_timeout_s=5
    )
    loader = loader_with_fallback()
    from_file = make_merge(bus, tmp_path, "main", loader, project=config).settings
    assert from_file.test_command == "make test" and from_file.recheck_merged is False
    assert from_file.protected == (*DEFAULT_PROTECTED, "data/**")
    assert from_file.check_timeout_s == 5
    flag = make_merge(bus, tmp_path, "main", loader, test_command="pytest", project=config)
    assert flag.settings.test_command == "pytest"
    gate = make_gate(bus, tmp_path, "main", loader, project=config).settings
    assert gate.protected == from_file.protected and gate.check_timeout_s == 5
    client.close()
