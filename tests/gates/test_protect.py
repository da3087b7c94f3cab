"""Which changes are tampering: judged by what changed on protected paths of main, never
by how a check command is spelled."""

from __future__ import annotations

from gates.protect import (
    DEFAULT_PROTECTED,
    Change,
    flagged_files,
    matches,
    named_paths,
    protected_files,
)

MAIN = [
    "app.py",
    "Makefile",
    "pyproject.toml",
    "tests/check_x.py",
    "tests/all.sh",
    "pkg/tests/test_y.py",
    "pkg/sub/conftest.py",
    "scripts/check.sh",
    "loop-1/specs/test-state.json",
    "loop-1/config.json",
    "docs/readme.md",
]


def test_globs_span_directories_only_where_they_say() -> None:
    assert matches("tests/a/b.py", ["**/tests/**"])
    assert matches("pkg/tests/b.py", ["**/tests/**"])
    assert not matches("mytests/b.py", ["**/tests/**"])
    assert matches("a/b/conftest.py", ["conftest.py"])  # a bare name: any depth
    assert matches("src/x.mk", ["*.mk"])
    assert not matches("src/x.py", ["src/*.mk"])
    assert matches("build/out/x", ["build/"])
    assert not matches("a/build/x", ["build/**"])  # a path is anchored at the root


def test_protected_files_of_main_by_default_globs_and_named_by_commands() -> None:
    commands = ["bash scripts/check.sh && python3 -m tests.check_x", "pytest app.py::t"]
    found = protected_files(MAIN, DEFAULT_PROTECTED, commands)
    assert found == set(MAIN) - {"docs/readme.md"}
    assert named_paths(["python3 -m pkg.tests"], MAIN) == {"pkg/tests/test_y.py"}


def test_modifying_or_deleting_is_tampering_adding_new_tests_is_not() -> None:
    protected = protected_files(MAIN, DEFAULT_PROTECTED)
    changed = [
        Change("M", "app.py"),
        Change("M", "tests/check_x.py"),
        Change("D", "tests/all.sh"),  # a rename is a delete and an add
        Change("A", "tests/all2.sh"),
        Change("A", "tests/test_new.py"),
        Change("A", "src/new_module.py"),
        Change("M", "loop-1/specs/test-state.json"),
        Change("T", "Makefile"),
    ]
    assert flagged_files(changed, protected) == [
        "Makefile",
        "loop-1/specs/test-state.json",
        "tests/all.sh",
        "tests/check_x.py",
    ]


def test_new_files_that_shadow_what_a_check_runs_are_tampering() -> None:
    protected = protected_files(MAIN, DEFAULT_PROTECTED)
    added = [
        "conftest.py",  # pytest loads it for every test below
        "tests/new/conftest.py",
        "pytest.ini",  # found before pyproject.toml's settings
        "GNUmakefile",  # make reads it before Makefile
        "sitecustomize.py",
        "tests/check_x/__init__.py",  # a package is imported before the module
        "tests/check_x.cpython-311-x86_64-linux-gnu.so",
        "evil.pth",
        "SPEC.yaml",  # criteria the harness would read once it is on main
        "loop-9/specs/test-state.json",
    ]
    assert flagged_files([Change("A", p) for p in added], protected) == sorted(added)
    harmless = ["tests/test_more.py", "tests/check_z.py", "app2.py", "tests/data/x.json"]
    assert flagged_files([Change("A", p) for p in harmless], protected) == []
