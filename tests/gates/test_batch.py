"""Batch-and-bisect: verified claims stacked one on another, checked once at the tip and
landed by one move of main; a red stack is retried once (flaky checks), then bisected so
the good prefix lands and only the culprit goes back to its loop."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import RedisBus
from events import (
    CheckFlaky,
    Decision,
    EscalationRaised,
    MergeConflicted,
    MergeRefusal,
    Role,
    Source,
    VerificationPassed,
)
from gates import BatchMergeQueue, MergeSettings
from gates.gitutil import remove_scratch
from gates.order import Waiting, pick
from gates.settings import FlakyPolicy
from infra.git import git
from tests.gates.conftest import APP, TASKS, Project, load_tasks, make_project, script
from tests.gates.test_flow import MUL, answer

SUB = {"sub.py": "def sub(a, b):\n    return a - b\n", "app.py": "from sub import sub\n" + APP}
# A package `app/` hides app.py: every other task's tests break, its own check passes.
BREAKER = {"NOTES.md": "n\n", "app/__init__.py": ""}


def trailers(project: Project, commit: str, name: str) -> list[str]:
    body = git(project.origin, "log", "-1", "--format=%B", commit)
    return [ln.split(": ", 1)[1] for ln in body.splitlines() if ln.startswith(f"{name}: ")]


def landings(project: Project) -> list[str]:
    """What main pointed at, oldest first (the seed first)."""
    return git(project.origin, "reflog", "show", "--format=%H", "refs/heads/main").split()[::-1]


def test_a_batch_lands_as_a_stack_checked_once_at_its_tip(project: Project) -> None:
    project.start(merge={"batch_size": 4}, batch=True)
    a, b, c = project.loop("a"), project.loop("b"), project.loop("c")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    b.claim("sub", b.write(SUB, "sub"))
    c.claim("notes", c.write({"NOTES.md": "notes\n"}, "notes"))
    project.pump()

    done = project.events("merge.completed")
    assert sorted(e.task_id for e in done) == ["mul", "notes", "sub"]  # type: ignore[attr-defined]
    assert {e.merged_commit for e in done} == {project.main()}  # type: ignore[attr-defined]
    # One squash commit per claim, each on the one before; main moved once, to the tip.
    stack = git(project.origin, "rev-list", "--reverse", "main").split()[1:]
    assert len(stack) == 3 and len(landings(project)) == 2
    assert [trailers(project, c, "Loops-Task")[0] for c in stack] == ["a/mul", "b/sub", "c/notes"]
    (batch,) = {trailers(project, c, "Loops-Batch")[0] for c in stack}
    assert batch
    assert project.marker.read_text().split() == [project.main()]  # checked once, at the tip
    assert [e.position for e in project.events("merge.queued")] == [0, 1, 2]  # type: ignore[attr-defined]
    assert project.merge is not None and project.merge.stats["check_rounds"] == 1
    project.assert_main_verified()


def test_a_red_stack_is_retried_then_bisected_and_its_good_prefix_lands(
    project: Project,
) -> None:
    project.start(merge={"batch_size": 4}, batch=True)
    a, b, c = project.loop("a"), project.loop("b"), project.loop("c")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    c.claim("notes", c.write(BREAKER, "notes"))  # the culprit, second in the stack
    b.claim("sub", b.write(SUB, "sub"))
    project.pump()

    (conflict,) = project.events("merge.conflicted")
    assert isinstance(conflict, MergeConflicted) and conflict.task_id == "notes"
    assert conflict.kind is MergeRefusal.CHECKS_FAILED
    assert "checks failed on the merged tree" in conflict.reason
    assert "ImportError" in conflict.reason  # the failing output goes back to the loop
    # mul and sub, stacked again without the culprit and checked at the new tip, landed.
    assert sorted(e.task_id for e in project.events("merge.completed")) == ["mul", "sub"]  # type: ignore[attr-defined]
    assert "NOTES.md" not in git(project.origin, "ls-tree", "--name-only", "main")
    assert project.merge is not None
    stats = project.merge.stats
    # Two bisection steps on the failed checks (ceil(log2 3)), then one full run of the
    # re-stacked good claims.
    assert stats["isolate_runs"] == math.ceil(math.log2(3)) + 1
    assert len(landings(project)) == 2  # mul and sub landed together, in one move of main
    assert stats["flaky"] == 0 and project.events("check.flaky") == []
    checked = project.marker.read_text().split()
    assert all(tip in checked for tip in landings(project)[1:])
    project.assert_main_verified()


def test_a_conflict_inside_a_stack_leaves_only_that_claim_out(project: Project) -> None:
    project.start(merge={"batch_size": 4}, batch=True)
    a, b, c = project.loop("a"), project.loop("b"), project.loop("c")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    b.claim("sub", b.write({"app.py": APP + "\n\ndef sub(a, b):\n    return a - b\n"}, "sub"))
    c.claim("notes", c.write({"NOTES.md": "notes\n"}, "notes"))
    project.pump()
    assert sorted(e.task_id for e in project.events("merge.completed")) == ["mul", "notes"]  # type: ignore[attr-defined]
    (conflict,) = project.events("merge.conflicted")
    assert conflict.task_id == "sub" and conflict.files == ["app.py"]  # type: ignore[attr-defined]
    assert conflict.kind is MergeRefusal.CONFLICT  # type: ignore[attr-defined]
    assert git(project.origin, "rev-list", "--count", "main") == "3"
    assert len(landings(project)) == 2
    project.assert_main_verified()


class Crash(Exception):
    """Stands for the process dying just before main moves."""


def test_a_batch_interrupted_before_main_moves_lands_once_after_restart(
    project: Project,
) -> None:
    project.start(merge={"batch_size": 4}, batch=True)
    assert isinstance(project.merge, BatchMergeQueue)

    def die(merged: str) -> None:
        raise Crash(merged)

    project.merge.before_main_moves = die
    a, b = project.loop("a"), project.loop("b")
    a_commit = a.write({"app.py": MUL}, "mul")
    a.claim("mul", a_commit)
    b.claim("sub", b.write(SUB, "sub"))
    seed = project.main()
    with pytest.raises(Crash):
        project.pump()
    assert project.main() == seed and project.events("merge.completed") == []

    # A new process: same durable store, same bus; the queued tasks are still queued.
    restarted = BatchMergeQueue(
        project.bus, project.merge.settings, loader=load_tasks, store=project.store
    )
    assert [vp.task_id for vp in restarted.pending()] == ["mul", "sub"]
    assert restarted.flush() == 2
    done = project.events("merge.completed")
    assert sorted(e.task_id for e in done) == ["mul", "sub"]  # type: ignore[attr-defined]
    assert {e.merged_commit for e in done} == {project.main()}  # type: ignore[attr-defined]
    assert git(project.origin, "rev-list", "--count", "main") == "3"
    assert restarted.pending() == [] and restarted.flush() == 0


def test_a_lone_claim_waits_for_the_fill_wait_then_merges_alone(project: Project) -> None:
    now = [1000.0]
    project.start(merge={"batch_size": 3, "fill_wait_s": 2.0}, batch=True)
    assert isinstance(project.merge, BatchMergeQueue)
    project.merge.clock = lambda: now[0]
    gate_sub, merge_sub = project._subs
    a = project.loop("a")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    gate_sub.drain()
    merge_sub.poll(block_ms=10)
    assert [vp.task_id for vp in project.merge.pending()] == ["mul"]  # waiting for company
    now[0] += 2.5
    merge_sub.poll(block_ms=10)
    assert project.merge.pending() == []
    assert [e.task_id for e in project.events("merge.completed")] == ["mul"]  # type: ignore[attr-defined]


def test_claims_that_arrive_while_a_batch_is_tested_join_the_next_batch(
    tmp_path: Path, fake_bus: RedisBus
) -> None:
    """Three claims wait (batches of 2); a fourth arrives while the first batch is being
    tested and the fill wait has passed. The queue reads it before it picks the next
    batch, so the third and the fourth land together instead of one by one."""
    tasks = {**TASKS, "d/more": [script("more exists", "test -f MORE.md")]}
    project = make_project(tmp_path, fake_bus, tasks=tasks)
    try:
        now = [1000.0]
        project.start(merge={"batch_size": 2, "fill_wait_s": 2.0}, batch=True)
        assert isinstance(project.merge, BatchMergeQueue)
        project.merge.clock = lambda: now[0]
        gate_sub, merge_sub = project._subs
        a, b, c, d = (project.loop(n) for n in "abcd")
        a.claim("mul", a.write({"app.py": MUL}, "mul"))
        b.claim("sub", b.write(SUB, "sub"))
        c.claim("notes", c.write({"NOTES.md": "notes\n"}, "notes"))
        gate_sub.drain()
        more = d.write({"MORE.md": "more\n"}, "more")

        def arrives(merged: str) -> None:
            if now[0] == 1000.0:  # during the first batch only
                now[0] += 5.0  # the fill wait has passed for the claim left waiting
                d.claim("more", more)
                gate_sub.drain()

        project.merge.before_main_moves = arrives
        merge_sub.poll(block_ms=10)

        done = {e.task_id: e.merged_commit for e in project.events("merge.completed")}  # type: ignore[attr-defined]
        assert sorted(done) == ["more", "mul", "notes", "sub"]
        assert done["mul"] == done["sub"] != done["notes"] == done["more"] == project.main()
        assert len(landings(project)) == 3  # the seed and two batches
        project.assert_main_verified()
    finally:
        project.close()


def test_a_claim_that_came_while_a_batch_was_tested_is_not_held_for_the_fill_wait(
    tmp_path: Path, fake_bus: RedisBus
) -> None:
    """The fill wait is for a claim that finds the queue idle. One that arrived while
    the last batch was tested has waited for company already: it goes next at once."""
    tasks = {**TASKS, "d/more": [script("more exists", "test -f MORE.md")]}
    project = make_project(tmp_path, fake_bus, tasks=tasks)
    try:
        now = [1000.0]
        project.start(merge={"batch_size": 3, "fill_wait_s": 2.0}, batch=True)
        assert isinstance(project.merge, BatchMergeQueue)
        project.merge.clock = lambda: now[0]
        gate_sub, merge_sub = project._subs
        a, d = project.loop("a"), project.loop("d")
        a.claim("mul", a.write({"app.py": MUL}, "mul"))
        gate_sub.drain()
        merge_sub.poll(block_ms=10)
        assert [vp.task_id for vp in project.merge.pending()] == ["mul"]  # the fill wait
        more = d.write({"MORE.md": "more\n"}, "more")

        def arrives(merged: str) -> None:
            if not project.events("task.claimed", task_id="more"):
                d.claim("more", more)  # while mul's batch is tested
                gate_sub.drain()

        project.merge.before_main_moves = arrives
        now[0] += 2.5
        merge_sub.poll(block_ms=10)

        assert project.merge.pending() == []
        done = {e.task_id: e.merged_commit for e in project.events("merge.completed")}  # type: ignore[attr-defined]
        assert sorted(done) == ["more", "mul"] and done["more"] == project.main() != done["mul"]
        project.assert_main_verified()
    finally:
        project.close()


# ---------------------------------------------------------------------- flaky checks

# Fails on its 2nd run only: the gate's run passes, the queue's first run on the tip
# fails, the retry on the unchanged tip passes.
FLAKY_CHECK = "n=$(cat {f} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}; test $n -ne 2"


@pytest.fixture
def flaky_project(tmp_path: Path, fake_bus: RedisBus) -> Iterator[Project]:
    command = FLAKY_CHECK.format(f=tmp_path / "runs")
    tasks = {**TASKS, "c/flaky": [script("the flaky check passes", command)]}
    project = make_project(tmp_path, fake_bus, tasks=tasks)
    try:
        yield project
        project.assert_main_verified()
    finally:
        project.close()


def claim_flaky_batch(project: Project) -> None:
    a, c = project.loop("a"), project.loop("c")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    c.claim("flaky", c.write({"FLAKY.md": "f\n"}, "flaky"))
    project.pump()


def test_a_check_that_fails_then_passes_unchanged_is_recorded_as_flaky(
    flaky_project: Project,
) -> None:
    project = flaky_project
    project.start(merge={"batch_size": 4}, batch=True)
    claim_flaky_batch(project)

    (flaky,) = project.events("check.flaky")
    assert isinstance(flaky, CheckFlaky) and flaky.count == 1 and not flaky.blocked
    assert flaky.criterion == "the flaky check passes" and flaky.tree == project.main()
    assert flaky.task_ids == ["a/mul", "c/flaky"] and flaky.escalation_id is None
    # Policy `pass` (the default): the batch landed, no culprit, no bisection.
    assert sorted(e.task_id for e in project.events("merge.completed")) == ["flaky", "mul"]  # type: ignore[attr-defined]
    assert project.events("merge.conflicted") == []
    assert isinstance(project.merge, BatchMergeQueue)
    assert project.merge.stats["isolate_runs"] == 0
    assert project.merge.flaky_count(flaky.command) == 1


def test_a_lone_claim_gets_the_same_retry_and_its_flaky_check_does_not_refuse_it(
    flaky_project: Project,
) -> None:
    project = flaky_project
    project.start(merge={"batch_size": 4, "fill_wait_s": 0.0}, batch=True)
    c = project.loop("c")
    c.claim("flaky", c.write({"FLAKY.md": "f\n"}, "flaky"))
    project.pump()

    (flaky,) = project.events("check.flaky")
    assert isinstance(flaky, CheckFlaky) and flaky.task_ids == ["c/flaky"]
    assert [e.task_id for e in project.events("merge.completed")] == ["flaky"]  # type: ignore[attr-defined]
    assert project.events("merge.conflicted") == []
    assert flaky.tree == project.main() and len(landings(project)) == 2


def test_the_block_policy_keeps_a_flaky_batch_queued_until_a_clean_run(
    flaky_project: Project,
) -> None:
    project = flaky_project
    project.start(merge={"batch_size": 4, "flaky_policy": FlakyPolicy.BLOCK}, batch=True)
    claim_flaky_batch(project)

    (flaky,) = project.events("check.flaky")
    assert isinstance(flaky, CheckFlaky) and flaky.blocked
    # Landed only on a later flush, whose run on the tip was green at once.
    assert sorted(e.task_id for e in project.events("merge.completed")) == ["flaky", "mul"]  # type: ignore[attr-defined]
    assert project.events("merge.conflicted") == []


def test_a_check_flaky_more_than_n_times_goes_to_a_person(flaky_project: Project) -> None:
    project = flaky_project
    project.start(merge={"batch_size": 4, "flaky_escalate_after": 0}, batch=True)
    claim_flaky_batch(project)

    (flaky,) = project.events("check.flaky")
    (raised,) = project.events("escalation.raised")
    assert isinstance(flaky, CheckFlaky) and isinstance(raised, EscalationRaised)
    assert flaky.escalation_id == raised.escalation_id
    assert "flaky 1 times" in raised.question and "fix the check" in raised.question
    answer(project, raised.escalation_id, Decision.APPROVE)  # "fixed it"
    project.pump()
    assert isinstance(project.merge, BatchMergeQueue)
    assert project.merge.flaky_count(flaky.command) == 0


# ---------------------------------------------------------------------- fair order


def _vp(n: int) -> VerificationPassed:
    return VerificationPassed(
        source=Source(role=Role.GATE),
        loop=f"l{n % 5}",
        task_id=f"t{n}",
        commit=f"{n:040x}",
        attempt=1,
        criteria=[],
    )


def test_a_steady_stream_of_new_claims_cannot_strand_an_old_one() -> None:
    """Two new claims arrive every second, one is served: the queue only grows. The old
    claim has failed three times (each costs 60 s of age): only the claims that arrived
    within those 180 s go before it (360 of them), whatever keeps arriving after."""
    old = Waiting(_vp(0), since=0.0)
    tries = {old.vp.id: 3}
    queue = [old]
    served_at = None
    for now in range(1, 400):
        queue += [Waiting(_vp(2 * now), now), Waiting(_vp(2 * now + 1), now)]
        (first,) = pick(queue, 1, now=now, tries=lambda vp: tries.get(vp.id, 0), retry_cost_s=60.0)
        queue.remove(first)
        if first is old:
            served_at = now
            break
    assert served_at is not None and served_at <= 2 * 3 * 60 + 1
    assert len(queue) > 100  # the stream never let up


def test_the_oldest_claims_go_first_and_a_retry_costs_age() -> None:
    queue = [Waiting(_vp(i), since=float(i)) for i in range(6)]
    tries = {queue[0].vp.id: 1}
    batch = pick(queue, 3, now=10.0, tries=lambda vp: tries.get(vp.id, 0), retry_cost_s=5.0)
    assert [w.vp.task_id for w in batch] == ["t1", "t2", "t3"]  # t0 pays 5 s: age 5 < 6


def test_a_batch_blocked_by_a_persons_files_on_main_is_reported_not_retried_forever(
    tmp_path: Path, fake_bus: RedisBus
) -> None:
    """No remote: main is the person's checkout. An untracked file of theirs is in the
    way of the fast-forward: git refuses, the files stay untouched, and each claim of
    the batch goes back to its loop as `blocked` (as the one-slot queue reports it)."""
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    tasks = {f"c/{t}": [script(f"{t} exists", f"test -f {t}.md")] for t in ("one", "two")}
    (repo / "tasks.json").write_text(json.dumps(tasks))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=s", "-c", "user.email=s@x", "commit", "-q", "-m", "seed")
    seed = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "loop/c")
    commits = {}
    for t in ("one", "two"):
        (repo / f"{t}.md").write_text(f"{t}\n")
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=s", "-c", "user.email=s@x", "commit", "-q", "-m", t)
        commits[t] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    (repo / "two.md").write_text("the person's own notes\n")  # untracked, in the way

    settings = MergeSettings(repo=repo, remote=None, batch_size=4)
    queue = BatchMergeQueue(fake_bus, settings, loader=load_tasks)
    gate = Source(role=Role.GATE)
    for i, (t, commit) in enumerate(commits.items(), 1):
        queue.handle(
            VerificationPassed(
                source=gate, loop="c", task_id=t, commit=commit, attempt=i, criteria=[]
            )
        )
    try:
        queue.flush()
    finally:
        remove_scratch(repo)

    reported = [e for _, e in fake_bus.replay(types=["merge.conflicted"])]
    assert sorted(e.task_id for e in reported) == ["one", "two"]  # type: ignore[attr-defined]
    assert {e.kind for e in reported} == {MergeRefusal.BLOCKED}  # type: ignore[attr-defined]
    assert all("two.md" in e.files for e in reported)  # type: ignore[attr-defined]
    assert list(fake_bus.replay(types=["merge.completed"])) == []
    assert git(repo, "rev-parse", "main") == seed and queue.pending() == []
    assert (repo / "two.md").read_text() == "the person's own notes\n"
