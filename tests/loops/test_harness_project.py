"""A project laid out like the seed's coding-loops/, and what the gate and prompts read."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import Criterion, LoopsError, NaturalCheck, ScriptCheck, ValidationFailed
from infra.settings import Settings
from loops.harness import TaskStatus
from loops.project import (
    ENV_PROJECT_DIR,
    Problems,
    TaskRef,
    UnknownTask,
    check_loop,
    criteria_for,
    find_loop_dirs,
    load_project,
    parse_task_ref,
    spec_content,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SEED = FIXTURES / "seed-project"
LOOP_NAMES = ["loop-1-critical-path", "loop-2-infrastructure", "loop-3-polish"]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The seed project copied into a fresh git repository (the repo root)."""
    monkeypatch.delenv(ENV_PROJECT_DIR, raising=False)
    root = tmp_path / "repo"
    shutil.copytree(SEED, root)
    git(root, "init", "-q", "-b", "main")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_seed_layout_loads_unchanged(repo: Path) -> None:
    before = snapshot(repo)
    project = load_project(repo / "coding-loops")
    assert [lp.name for lp in project.loops] == LOOP_NAMES  # priority 1, 2, 5
    loop1 = project.loop("loop-1-critical-path")
    assert loop1.display_name == "Loop 1: Critical Path"
    assert project.loop("Loop 1: Critical Path") is loop1
    assert loop1.specs_dir == repo / "coding-loops" / "loop-1-critical-path" / "specs"
    assert loop1.state_path.name == "test-state.json"
    assert loop1.health_path == loop1.specs_dir / "health.json"
    assert loop1.transcripts_dir == loop1.specs_dir / "logs" / "transcripts"
    assert loop1.branch == "loop/loop-1-critical-path"
    assert loop1.state.task("CP-SPEC-005").status is TaskStatus.PENDING
    assert project.dependency_problems() == []
    assert snapshot(repo) == before  # loading wrote nothing


def test_repo_root_finds_the_coding_loops_directory(repo: Path) -> None:
    assert [d.name for d in find_loop_dirs(repo)] == LOOP_NAMES
    assert [lp.name for lp in load_project(repo).loops] == LOOP_NAMES


def test_without_git_specs_dir_resolves_against_the_parent(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    shutil.copytree(SEED, root)
    loop = load_project(root / "coding-loops").loop("loop-2-infrastructure")
    assert loop.specs_dir == root / "coding-loops" / "loop-2-infrastructure" / "specs"


def test_coding_loop_project_dir_is_honoured(repo: Path, tmp_path: Path) -> None:
    """`specs_dir` is looked up under $CODING_LOOP_PROJECT_DIR (the setting the caller
    passes down) before anywhere else; without it, not."""
    other = tmp_path / "elsewhere"
    specs = other / "coding-loops" / "loop-1-critical-path" / "specs"
    specs.mkdir(parents=True)
    (specs / "test-state.json").write_text(json.dumps({"tests": [{"id": "ELSEWHERE-1"}]}))
    named = Settings.from_env({ENV_PROJECT_DIR: str(other)}).project_dir
    loop = load_project(repo / "coding-loops", project_dir=named).loop("loop-1-critical-path")
    assert loop.specs_dir == specs
    assert [t.id for t in loop.state.tests] == ["ELSEWHERE-1"]
    unnamed = load_project(repo / "coding-loops").loop("loop-1-critical-path")
    assert unnamed.specs_dir == repo / "coding-loops" / "loop-1-critical-path" / "specs"
    # a loop whose specs are not under the override falls back to the repository
    loop2 = load_project(repo / "coding-loops", project_dir=named).loop("loop-2-infrastructure")
    assert loop2.specs_dir == repo / "coding-loops" / "loop-2-infrastructure" / "specs"


def test_fallbacks_relative_to_the_loop_and_loop_specs(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "loop-a" / "state").mkdir(parents=True)
    (root / "loop-a" / "config.json").write_text(json.dumps({"name": "A", "specs_dir": "state"}))
    (root / "loop-a" / "state" / "test-state.json").write_text('{"tests": []}')
    (root / "loop-b" / "specs").mkdir(parents=True)
    (root / "loop-b" / "config.json").write_text(
        json.dumps({"name": "B", "specs_dir": "gone/specs"})
    )
    (root / "loop-b" / "specs" / "test-state.json").write_text('{"tests": []}')
    project = load_project(root)
    assert project.loop("loop-a").specs_dir == root / "loop-a" / "state"
    assert project.loop("loop-b").specs_dir == root / "loop-b" / "specs"


def test_every_problem_of_every_loop_is_reported(repo: Path) -> None:
    loops = repo / "coding-loops"
    (loops / "loop-2-infrastructure" / "config.json").write_text('{"name": ""}')
    state = loops / "loop-3-polish" / "specs" / "test-state.json"
    state.write_text('{"tests": [{"id": "X", "status": "done"}]}')
    with pytest.raises(ValidationFailed) as info:
        load_project(loops)
    cfg = loops / "loop-2-infrastructure" / "config.json"
    assert info.value.problems == [
        f"{cfg}: name: must not be empty",
        f"{cfg}: specs_dir: is required but missing — add it",
        f"{state}: tests[0].status: must be one of 'pending', 'passed', 'failed', 'blocked', "
        "got text ('done')",
    ]


def test_missing_specs_dir_and_state(tmp_path: Path) -> None:
    (tmp_path / "loop-x").mkdir()
    cfg = tmp_path / "loop-x" / "config.json"
    cfg.write_text(json.dumps({"name": "X", "specs_dir": "nowhere"}))
    with pytest.raises(ValidationFailed) as info:
        load_project(tmp_path)
    assert info.value.problems == [
        f"{cfg}: specs_dir: directory 'nowhere' not found — give it relative to the project "
        f"root (or set {ENV_PROJECT_DIR}), or create {tmp_path / 'loop-x' / 'specs'}"
    ]
    (tmp_path / "loop-x" / "specs").mkdir()
    with pytest.raises(ValidationFailed) as info:
        load_project(tmp_path)
    state = tmp_path / "loop-x" / "specs" / "test-state.json"
    assert info.value.problems == [f"Test state file not found: {state}"]


def test_check_loop_collects_every_file_and_strict_adds_typos_and_health(
    tmp_path: Path,
) -> None:
    """The loader's collect-every-problem mode (what `loops validate` uses): each file
    read is recorded with its problems, [] when fine, and reading goes on past a bad one."""
    specs = tmp_path / "loop-x" / "specs"
    specs.mkdir(parents=True)
    cfg = tmp_path / "loop-x" / "config.json"
    cfg.write_text(json.dumps({"name": "X", "specs_dir": "specs", "max_attempt": 3}))
    state = specs / "test-state.json"
    state.write_text(json.dumps({"tests": [{"id": "A"}]}))
    health = specs / "health.json"
    health.write_text("{not json")
    loose: Problems = {}
    loop = check_loop(tmp_path / "loop-x", loose, root=tmp_path)
    assert loop is not None and loose == {str(cfg): [], str(state): []}
    strict: Problems = {}
    assert check_loop(tmp_path / "loop-x", strict, root=tmp_path, strict=True) is not None
    assert list(strict) == [str(cfg), str(state), str(health)]
    assert "max_attempt" in " ".join(strict[str(cfg)]) and strict[str(state)] == []
    assert strict[str(health)] and all(p.startswith(str(health)) for p in strict[str(health)])
    state.write_text('{"tests": [{"id": "A", "status": "done"}]}')
    broken: Problems = {}
    assert check_loop(tmp_path / "loop-x", broken, root=tmp_path) is None
    assert broken[str(cfg)] == [] and len(broken[str(state)]) == 1


def test_a_directory_without_loops(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        load_project(tmp_path)
    assert info.value.problems[0].startswith(f"{tmp_path}: no loops found")


# -- dependencies ------------------------------------------------------------------------


def test_parse_task_ref() -> None:
    assert parse_task_ref("CP-001") == TaskRef(None, "CP-001")
    assert parse_task_ref(" loop-1/CP-001 ") == TaskRef("loop-1", "CP-001")
    assert str(TaskRef("loop-1", "CP-001")) == "loop-1/CP-001"
    assert parse_task_ref("/x") == TaskRef(None, "/x")
    assert TaskRef(None, "A").in_loop("l") == TaskRef("l", "A")


def test_cross_loop_dependencies(repo: Path) -> None:
    project = load_project(repo / "coding-loops")
    loop2 = project.loop("loop-2-infrastructure")
    credit = loop2.state.task("INF-CREDIT-001")
    (ref,) = loop2.dependencies(credit)
    assert ref == TaskRef("loop-1-critical-path", "CP-SPEC-005")
    assert project.status_of(ref, loop2.name) is TaskStatus.PENDING
    loop1 = project.loop("loop-1-critical-path")
    assert loop1.dependencies(loop1.state.task("CP-SPEC-005")) == [TaskRef(None, "CP-UFS-001")]
    assert project.status_of(TaskRef(None, "CP-UFS-001"), loop1.name) is TaskStatus.PASSED


def test_dependency_problems(repo: Path) -> None:
    loops = repo / "coding-loops"
    path = loops / "loop-3-polish" / "specs" / "test-state.json"
    path.write_text(
        json.dumps(
            {
                "tests": [
                    {"id": "A", "dependsOn": "B"},
                    {"id": "B", "dependsOn": ["A", "NOPE"]},
                    {"id": "C", "dependsOn": "loop-9/X"},
                    {"id": "D", "dependsOn": "loop-1-critical-path/MISSING"},
                    {"id": "E", "dependsOn": "loop-3-polish/E"},
                ]
            }
        )
    )
    problems = load_project(loops).dependency_problems()
    assert problems == [
        f"{path}: tests[1].dependsOn: depends on 'NOPE' but there is no test 'NOPE' in loop "
        "'loop-3-polish' — fix the id, or write 'loop-name/TASK-ID' for another loop's task",
        f"{path}: tests[2].dependsOn: depends on 'loop-9/X' but there is no loop 'loop-9' in "
        f"{loops} — fix the id, or write 'loop-name/TASK-ID' for another loop's task",
        f"{path}: tests[3].dependsOn: depends on 'loop-1-critical-path/MISSING' but there is no "
        "test 'MISSING' in loop 'loop-1-critical-path' — fix the id, or write "
        "'loop-name/TASK-ID' for another loop's task",
        f"{path}: dependsOn: dependency cycle: loop-3-polish/A -> loop-3-polish/B -> "
        "loop-3-polish/A — none of these can ever start; remove one dependsOn",
        f"{path}: dependsOn: dependency cycle: loop-3-polish/E -> loop-3-polish/E — none of "
        "these can ever start; remove one dependsOn",
    ]


def test_a_long_dependency_chain_is_fine(tmp_path: Path) -> None:
    (tmp_path / "loop-a" / "specs").mkdir(parents=True)
    (tmp_path / "loop-a" / "config.json").write_text('{"name": "a", "specs_dir": "specs"}')
    tests = [{"id": "T0"}] + [{"id": f"T{i}", "dependsOn": f"T{i - 1}"} for i in range(1, 5000)]
    (tmp_path / "loop-a" / "specs" / "test-state.json").write_text(json.dumps({"tests": tests}))
    assert load_project(tmp_path).dependency_problems() == []


# -- spec content for prompts -------------------------------------------------------------


def test_spec_content_prefers_files_naming_the_task(repo: Path) -> None:
    loop1 = load_project(repo / "coding-loops").loop("loop-1-critical-path")
    text = loop1.spec_content("CP-SPEC-005")
    assert "02-spec-agent.md" in text and "Extract requirements" in text
    assert "00-overview.md" not in text
    overview = loop1.spec_content("CP-UFS-001")
    assert "Implements the core user journey" in overview
    cut = loop1.spec_content("CP-SPEC-005", limit=40)
    assert len(cut) <= 40 and cut.endswith("[... spec cut ...]")
    assert spec_content(repo / "does-not-exist", "X") == ""


# -- criteria_for: what the gate reads from a checkout of main ---------------------------


def add_criteria(repo: Path) -> None:
    specs = repo / "coding-loops" / "loop-1-critical-path" / "specs"
    data = json.loads((specs / "test-state.json").read_text())
    data["tests"][1]["acceptance_criteria"] = [
        {"criterion": "spec tests pass", "check": {"type": "script", "run": "pytest -k spec"}},
        {"criterion": "reads well", "check": {"type": "natural", "description": "read it"}},
    ]
    (specs / "test-state.json").write_text(json.dumps(data))
    cfg = repo / "coding-loops" / "loop-2-infrastructure" / "config.json"
    config = json.loads(cfg.read_text())
    config["check_command"] = "make test"
    cfg.write_text(json.dumps(config))


def test_criteria_for_a_loop_project(repo: Path) -> None:
    add_criteria(repo)
    crit = criteria_for(repo, "loop-1-critical-path", "CP-SPEC-005")
    assert crit == [
        Criterion(criterion="spec tests pass", check=ScriptCheck(run="pytest -k spec")),
        Criterion(criterion="reads well", check=NaturalCheck(description="read it")),
    ]
    assert criteria_for(repo / "coding-loops", "loop-1-critical-path", "CP-SPEC-005") == crit
    (default,) = criteria_for(repo, "loop-2-infrastructure", "INF-AUTH-001")
    assert default.check == ScriptCheck(run="make test")
    (signoff,) = criteria_for(repo, "loop-3-polish", "NEW-TEST-001")
    assert isinstance(signoff.check, NaturalCheck) and "no acceptance_criteria" in signoff.criterion
    with pytest.raises(UnknownTask) as info:
        criteria_for(repo, "loop-1-critical-path", "NOT-A-TASK")
    assert isinstance(info.value, LoopsError) and info.value.task_id == "NOT-A-TASK"
    with pytest.raises(UnknownTask):
        criteria_for(repo, "loop-9", "X")


def test_criteria_for_a_spec_project(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "ralph_loop" / "SPEC.yaml", tmp_path / "SPEC.yaml")
    (crit,) = criteria_for(tmp_path, "SPEC", "write-test")
    assert criteria_for(tmp_path, "spec", "write-test") == [crit]  # the worker's loop name
    (tmp_path / "sub").mkdir()
    shutil.copy(FIXTURES / "ralph_loop" / "SPEC.yaml", tmp_path / "sub" / "My Spec.yaml")
    assert criteria_for(tmp_path, "my-spec", "write-test") == [crit]
    assert crit.check == ScriptCheck(run="pytest tests/test_app.py -v -k health")
    with pytest.raises(UnknownTask):
        criteria_for(tmp_path, "SPEC", "nope")
    (tmp_path / "SPEC.yaml").write_text("goal: ''\n")
    with pytest.raises(ValidationFailed):
        criteria_for(tmp_path, "SPEC", "write-test")


def test_criteria_for_reads_only_the_tree_under_root(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's checkout of main is the truth: the env override and the working tree
    around it are never read."""
    add_criteria(repo)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "main")
    checkout = tmp_path / "checkout"
    git(repo, "worktree", "add", "-q", "--detach", str(checkout), "main")
    # the loop's branch (the working tree) edits its own checks; main is unchanged
    specs = repo / "coding-loops" / "loop-1-critical-path" / "specs"
    data = json.loads((specs / "test-state.json").read_text())
    data["tests"][1]["acceptance_criteria"] = [
        {"criterion": "nothing", "check": {"type": "script", "run": "true"}}
    ]
    (specs / "test-state.json").write_text(json.dumps(data))
    monkeypatch.setenv(ENV_PROJECT_DIR, str(repo))
    crit = criteria_for(checkout, "loop-1-critical-path", "CP-SPEC-005")
    assert [c.criterion for c in crit] == ["spec tests pass", "reads well"]


# -- fuzzing the project loader ----------------------------------------------------------

DOC = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "specs_dir", "tests", "id", "dependsOn", "status", "x"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
CONTENT = DOC.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=100)


@given(config=CONTENT, state=CONTENT)
def test_fuzz_project_files(
    tmp_path_factory: pytest.TempPathFactory, config: bytes, state: bytes
) -> None:
    root = tmp_path_factory.mktemp("p")
    (root / "loop-a" / "specs").mkdir(parents=True)
    (root / "loop-a" / "config.json").write_bytes(config)
    (root / "loop-a" / "specs" / "test-state.json").write_bytes(state)
    try:
        project = load_project(root, project_dir=root)
    except ValidationFailed as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)
    else:
        assert all("\n" not in p for p in project.dependency_problems())
    with contextlib.suppress(LoopsError):
        criteria_for(root, "loop-a", "T")
