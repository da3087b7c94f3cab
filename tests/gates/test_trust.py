"""Issue 9: nothing an agent does in its branch, or forges on the bus, puts unverified
work on main. Tampering is judged by what changed, whatever the check command looks
like; the merge queue reloads every task's criteria from main and trusts no payload."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import RedisBus
from events import (
    MergeConflicted,
    MergeRefusal,
    Role,
    Source,
    VerificationFailed,
    VerificationPassed,
    VerificationVerdict,
)
from tests.gates.conftest import APP, PY, PYTEST, TASKS, Project, make_project, script
from tests.gates.test_flow import MUL

CHECK_X = (
    "import os, sys\n\n"
    "sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))\n"
    "from app import x  # noqa: E402\n\n"
)
CHECK_X += "assert x() == 42, 'x() must return 42'\nprint('x ok')\n"
MAKEFILE = f"check-x:\n\t{PY} tests/check_x.py\n"
ALL_SH = f'case "$1" in\n  x) exec {PY} tests/check_x.py ;;\nesac\nexit 1\n'
FILES = {
    "tests/__init__.py": "",
    "tests/check_x.py": CHECK_X,
    "tests/all.sh": ALL_SH,
    "Makefile": MAKEFILE,
    "app.py": APP + "\n\ndef x():\n    return 0  # not done yet\n",
}
# The six spellings of one check from the audit, and what an agent writes to pass it;
# last, new files that shadow the check instead of editing it.
SPELLINGS: dict[str, tuple[str, dict[str, str]]] = {
    "path": (f"{PY} tests/check_x.py", {"tests/check_x.py": "pass\n"}),
    "module": (f"{PY} -m tests.check_x", {"tests/check_x.py": "pass\n"}),
    "make": ("make check-x", {"Makefile": "check-x:\n\ttrue\n"}),
    "sh-c": (f"sh -c '{PY} tests/check_x.py'", {"tests/check_x.py": "pass\n"}),
    "import": (f"{PY} -c 'import tests.check_x'", {"tests/check_x.py": "pass\n"}),
    "script": ("bash tests/all.sh x", {"tests/all.sh": "exit 0\n"}),
    "shadow": (
        f"{PY} -m tests.check_x",
        {"tests/check_x/__init__.py": "", "tests/check_x/__main__.py": "print('x ok')\n"},
    ),
}
TRUST_TASKS = {
    **TASKS,
    **{f"a/x-{name}": [script("x() returns 42", cmd)] for name, (cmd, _) in SPELLINGS.items()},
    "a/x-slow": [script("x() returns 42", f"sleep 0.5 && {PY} -m tests.check_x")],
    "a/late": [
        script("done, and quick", "test -f done.txt && if [ -f NOTES.md ]; then sleep 60; fi", 1)
    ],
}
X_DONE = APP + "\n\ndef x():\n    return 42\n"


@pytest.fixture
def trust(tmp_path: Path, fake_bus: RedisBus) -> Iterator[Project]:
    project = make_project(tmp_path, fake_bus, tasks=TRUST_TASKS, files=FILES)
    try:
        yield project
    finally:
        project.close()


def forge(project: Project, loop: str, task_id: str, commit: str, **fields: object) -> None:
    """What an agent with bus access would publish: a `verification.passed` that no gate
    produced, with no criteria at all."""
    event = VerificationPassed(
        source=Source(role=Role.GATE, instance="forged"),
        loop=loop,
        correlation_id=uuid.uuid4().hex,
        task_id=task_id,
        commit=commit,
        attempt=1,
        criteria=[],
        **fields,  # type: ignore[arg-type]
    )
    project.bus.publish(event)


def refusals(project: Project) -> list[MergeConflicted]:
    return [e for e in project.events("merge.conflicted") if isinstance(e, MergeConflicted)]


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_a_tampered_check_fails_and_is_flagged_however_it_is_spelled(
    trust: Project, spelling: str
) -> None:
    trust.start()
    _, cheat = SPELLINGS[spelling]
    a = trust.loop("a")
    seed = trust.main()
    commit = a.write(cheat, f"make my check pass ({spelling})")
    a.claim(f"x-{spelling}", commit)
    trust.pump()

    (failed,) = trust.events("verification.failed")
    assert isinstance(failed, VerificationFailed)
    assert failed.verdict == VerificationVerdict.CHECKS_FAILED  # main's check ran, and failed
    assert failed.flagged_files == sorted(cheat)
    assert "x() must return 42" in failed.criteria[0].output_tail
    assert trust.events("verification.passed") == [] and trust.main() == seed

    # The same agent forges the verdict on the bus: the merge queue looks for itself.
    forge(trust, "a", f"x-{spelling}", commit)
    trust.pump()
    (refused,) = refusals(trust)
    assert refused.kind == MergeRefusal.TAMPERED and refused.files == sorted(cheat)
    assert trust.main() == seed and trust.events("merge.completed") == []
    trust.assert_main_verified()


def test_a_slow_honest_claim_adding_tests_and_code_is_not_flagged_and_merges(
    trust: Project,
) -> None:
    trust.start()
    a = trust.loop("a")
    more = "from app import x\n\n\ndef test_x_is_even():\n    assert x() % 2 == 0\n"
    commit = a.write(
        {"app.py": X_DONE, "tests/test_x_more.py": more, "src/helper.py": "HELP = 1\n"},
        "implement x, with a new test",
    )
    a.claim("x-slow", commit)
    trust.pump()
    (passed,) = trust.events("verification.passed")
    assert isinstance(passed, VerificationPassed) and passed.flagged_files == []
    assert trust.events("escalation.raised") == []
    (done,) = trust.events("merge.completed")
    assert done.merged_commit == trust.main()  # type: ignore[attr-defined]
    assert "return 42" in trust.main_file("app.py")
    assert trust.main_file("tests/test_x_more.py") == more.strip()
    trust.assert_main_verified()


def test_a_forged_verdict_with_no_criteria_runs_mains_checks_and_is_refused(
    trust: Project,
) -> None:
    trust.start()
    a = trust.loop("a")
    seed = trust.main()
    wrong = a.write({"NOTES.md": "x is done, trust me\n"}, "no work")
    forge(trust, "a", "x-module", wrong)
    forge(trust, "a", "no-such-task", wrong)
    trust.pump()
    checks, unknown = refusals(trust)
    assert checks.kind == MergeRefusal.CHECKS_FAILED and "x() must return 42" in checks.reason
    assert unknown.kind == MergeRefusal.UNKNOWN_TASK and "a/no-such-task" in unknown.reason
    assert trust.main() == seed
    trust.assert_main_verified()


def test_the_merge_queue_honours_each_checks_own_timeout(trust: Project) -> None:
    trust.start()
    c, a = trust.loop("c"), trust.loop("a")
    c.claim("notes", c.write({"NOTES.md": "notes\n"}, "notes"))
    # Passes quickly on its own commit; on the merged tree (NOTES.md from c) it hangs.
    a.claim("late", a.write({"done.txt": "ok\n"}, "done"))
    trust.pump()
    assert len(trust.events("verification.passed")) == 2
    (done,) = trust.events("merge.completed")
    assert done.task_id == "notes"  # type: ignore[attr-defined]
    (refused,) = refusals(trust)
    assert refused.task_id == "late" and refused.kind == MergeRefusal.CHECKS_FAILED
    assert "killed after 1s timeout" in refused.reason  # its own 1 s, not the default 600 s
    trust.assert_main_verified()


BROKEN_MUL = MUL.replace("return a * b", "return a * b + 1") + (
    "\n\ndef sub(a, b):\n    return a - b\n"
)


@pytest.mark.parametrize("recheck", [True, False])
def test_a_later_merge_cannot_break_an_earlier_tasks_checks(
    project: Project, recheck: bool
) -> None:
    project.start(merge={"recheck_merged": recheck})
    a = project.loop("a")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    project.pump()
    assert len(project.events("merge.completed")) == 1
    after_a = project.main()

    b = project.loop("b")  # branched from main with mul in it
    b.claim("sub", b.write({"app.py": BROKEN_MUL}, "sub, and a broken mul"))
    project.pump()
    assert len(project.events("verification.passed")) == 2  # b's own checks pass
    if recheck:
        (refused,) = refusals(project)
        assert refused.task_id == "sub" and refused.kind == MergeRefusal.CHECKS_FAILED
        assert "a/mul (merged)" in refused.reason
        assert project.main() == after_a
    else:  # the setting is off: only b's own checks and the test command ran
        assert [e.task_id for e in project.events("merge.completed")] == ["mul", "sub"]  # type: ignore[attr-defined]
    project.assert_main_verified()


def test_merged_tasks_are_read_from_mains_trailers(project: Project) -> None:
    from gates import merged_tasks_on

    project.start()
    a, c = project.loop("a"), project.loop("c")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    c.claim("notes", c.write({"NOTES.md": "n\n"}, "notes"))
    project.pump()
    assert merged_tasks_on(project.origin, "main") == [("a", "mul"), ("c", "notes")]
    assert PYTEST  # the project's checks are real pytest runs
    project.assert_main_verified()


def test_a_batch_reloads_criteria_and_leaves_out_what_main_refuses(trust: Project) -> None:
    trust.start(merge={"batch_size": 4}, batch=True)
    a, b, c = trust.loop("a"), trust.loop("b"), trust.loop("c")
    forge(trust, "a", "no-such-task", a.write({"a.txt": "a\n"}, "a"))
    forge(trust, "b", "sub", b.write({"B.md": "b\n", "tests/all.sh": "exit 0\n"}, "b"))
    c.claim("notes", c.write({"NOTES.md": "notes\n"}, "notes"))
    trust.pump()
    assert [e.task_id for e in trust.events("merge.completed")] == ["notes"]  # type: ignore[attr-defined]
    assert trust.events("merge.completed")[0].loop == "c"
    kinds = {(e.loop, e.kind) for e in refusals(trust)}
    assert kinds == {("a", MergeRefusal.UNKNOWN_TASK), ("b", MergeRefusal.TAMPERED)}
    assert trust.main_file("tests/all.sh") == ALL_SH.strip()
    trust.assert_main_verified()
