"""The merge queue: one merge slot between verified commits and main.

For each `verification.passed`, in order: reload the task's criteria from the main it
merges onto (the event's own list of criteria is never trusted: a `verification.passed`
is a hint to go and look, not a licence), merge the verified commit onto that main in a
scratch worktree, refuse it if it changes protected files no person approved, run the
task's script checks, the script checks of every task merged before and the
repository's test command on the merged tree, and move main only if they pass, by a
non-force push (or a compare-and-swap of the ref when there is no remote). Main
therefore only ever holds commits whose checks ran on exactly that tree.

Crash safety: before merging, the queue asks whether the commit is already in main
(a retried job after a crash finds its own work done); the merged commit and the main
it was built on are recorded in the `Store`, keyed by task and commit, so the
retried job reports the same `merge.completed`."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bus.api import Bus, Subscription
from events import (
    CriterionResult,
    Decision,
    EscalationAnswered,
    EscalationKind,
    EscalationRaised,
    Event,
    MergeCompleted,
    MergeConflicted,
    MergeQueued,
    MergeRefusal,
    Role,
    Severity,
    Source,
    VerificationPassed,
)
from gates import CriteriaLoader
from gates.checks import Check, run_checks, scrubbed_env
from gates.criteria import load_criteria, script_checks
from gates.errors import MergeError, WorktreeBlocked
from gates.gitutil import (
    conflicted_files,
    fetch,
    is_ancestor,
    main_ref,
    push_main,
    resolve_commits,
    scratch,
    update_ref_cas,
)
from gates.protect import changes, flagged_files, protected_files, tree_files
from gates.receipts import StreamReceipts
from gates.settings import MergeSettings, derived_escalation_id, derived_id
from infra.git import git, run_git
from infra.store import Store

log = logging.getLogger("loops.merge")

GROUP = "merge"
TYPES = ("verification.passed", "escalation.answered")
TEST_COMMAND = "the repository's test command"
BATCH_TRAILER = "Loops-Batch: "

MergedTasks = Callable[[Path, str], list[tuple[str, str]]]
"""`(repo, rev) -> [(loop, task_id)]`: the tasks already merged into `rev`, whose script
checks the merge queue runs again on every merged tree (`recheck_merged`)."""


def merged_tasks_on(repo: Path, rev: str) -> list[tuple[str, str]]:
    """The tasks merged into `rev`, read from the `Loops-Task:` trailers of the commits the
    merge queue landed (git history: nothing to lose in a crash), oldest first, once each."""
    out = run_git(
        repo, "log", "--reverse", "--format=%B", "--fixed-strings", "--grep=Loops-Task: ", rev
    ).stdout
    found: dict[tuple[str, str], None] = {}
    for line in out.splitlines():
        if line.startswith("Loops-Task: "):
            loop, sep, task = line.removeprefix("Loops-Task: ").strip().partition("/")
            if sep and loop and task:
                found[(loop, task)] = None
    return list(found)


class Refused(Exception):
    """A task the merge queue will not land, and why (reported as `merge.conflicted`)."""

    def __init__(self, kind: MergeRefusal, reason: str, files: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.files = list(files)


class MergeQueue:
    """Consumes `verification.passed`; publishes `merge.queued` and then
    `merge.completed` or `merge.conflicted` (and an escalation after N conflicts)."""

    def __init__(
        self,
        bus: Bus,
        settings: MergeSettings,
        *,
        loader: CriteriaLoader,
        merged_tasks: MergedTasks = merged_tasks_on,
        store: Store | None = None,
        source: Source | None = None,
        before_main_moves: Callable[[str], None] | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        # The same reader of main's criteria as the gate's (injected by `app/compose.py`).
        self.loader = loader
        self.merged_tasks = merged_tasks
        self._recheck_cache: tuple[str, list[tuple[tuple[str, str], Check]]] | None = None
        self.store = store or Store.memory()
        self.receipts = StreamReceipts(bus)  # what each task cost, for `merge.completed`
        self.source = source or Source(role=Role.MERGE)
        # Called with the merged commit once its checks passed, just before main moves
        # (fault injection for crash tests; a no-op in production).
        self.before_main_moves = before_main_moves
        # What the queue ran (check rounds = trees checked; commands = checks run).
        self.stats: Counter[str] = Counter()

    def subscribe(self, consumer: str) -> Subscription:
        """This queue as consumer `consumer` of the `merge` group. Run one consumer: it is
        the single merge slot (a second one is safe, main only moves by compare-and-swap,
        but it only adds races)."""
        return self.bus.subscribe(GROUP, consumer, self.handle, types=TYPES)

    def handle(self, event: Event) -> None:
        if isinstance(event, VerificationPassed):
            self.merge(event)
        elif isinstance(event, EscalationAnswered):
            self._answered(event)

    # ------------------------------------------------------------------ merging

    def merge(self, vp: VerificationPassed) -> None:
        s = self.settings
        key = f"merge:{vp.loop}:{vp.task_id}:{vp.commit}"
        self._publish(
            MergeQueued(
                id=derived_id(vp.id, "queued"),
                source=self.source,
                task_id=vp.task_id,
                commit=vp.commit,
                position=0,  # one slot: the queued commit is the one being merged
                **_caused(vp),
            )
        )
        for _ in range(s.max_races):
            if s.remote:
                fetch(s.repo, s.remote)
            commit, base = resolve_commits(s.repo, vp.commit, main_ref(s.main, s.remote))
            if commit is None:
                reason = f"verified commit {vp.commit[:12]} is not in the repository"
                self._conflicted(vp, [], reason, MergeRefusal.MISSING_COMMIT)
                return
            if base is None:
                raise MergeError(f"no {s.main!r} branch", vp.task_id, vp.commit)
            # Only a merge this queue recorded can have landed as a squash of it.
            landed = landed_as(s.repo, vp.commit, base, squashed=self.store.get(key) is not None)
            if landed is not None:
                self._already_merged(vp, key, base, landed)
                return
            with scratch(s.repo, base, pool="merge") as wt:
                try:
                    checks = self._checks_of(wt, vp)  # read while `wt` is main
                    others = self._recheck(wt, base, {(vp.loop or "", vp.task_id)})
                    protected = self._protected(base, checks)
                except Refused as exc:
                    self._conflicted(vp, exc.files, exc.reason, exc.kind)
                    return
                merged = self._build(wt, vp, base)
                if merged is None:
                    return  # conflicted: reported
                try:
                    self._refuse_tampering(vp, base, merged, protected)
                    self._run_checks(wt, checks, others)
                except Refused as exc:
                    self._conflicted(vp, exc.files, exc.reason, exc.kind)
                    return
                self.store.set(key, json.dumps({"merged": merged, "main_before": base}))
                if self.before_main_moves is not None:
                    self.before_main_moves(merged)
                try:
                    moved = self._move_main(merged, base)
                except WorktreeBlocked as exc:
                    self.store.delete(key)
                    self._conflicted(vp, exc.files, str(exc), MergeRefusal.BLOCKED)
                    return
                if moved:
                    self._completed(vp, merged, base)
                    return
            log.info("merge: main moved under %s/%s; merging again", vp.loop, vp.task_id)
        raise MergeError(f"main moved {s.max_races} times during one merge", vp.task_id, vp.commit)

    # ------------------------------------------------------------------ what to check

    def _checks_of(self, main_root: Path, vp: VerificationPassed) -> list[Check]:
        """The task's script checks, as main (checked out at `main_root`) says; `Refused`
        when main does not know the task (no criteria, no default check)."""
        s = self.settings
        criteria, why = load_criteria(
            self.loader, main_root, vp.loop or "", vp.task_id, s.default_check
        )
        if not criteria:
            raise Refused(MergeRefusal.UNKNOWN_TASK, f"refused: {why}")
        # Natural-language criteria: the queue cannot judge them; it relies on the gate's
        # verdict (signed, so an agent cannot forge it) and runs what it can run.
        return [Check(c, sc.run, sc.timeout_s) for c, sc in script_checks(criteria)]

    def _protected(self, base: str, checks: Sequence[Check]) -> set[str]:
        files = tree_files(self.settings.repo, base)
        return protected_files(files, self.settings.protected, [c.run for c in checks])

    def _recheck(self, main_root: Path, base: str, skip: set[tuple[str, str]]) -> list[Check]:
        """The script checks of every task already merged into `base` (criteria from
        main at `main_root`): a later merge must not break an earlier task's criteria."""
        s = self.settings
        if not s.recheck_merged:
            return []
        if self._recheck_cache is None or self._recheck_cache[0] != base:
            found = []
            for loop, task_id in self.merged_tasks(s.repo, base):
                # A task main no longer knows (its spec changed) has nothing to re-run.
                criteria, _ = load_criteria(self.loader, main_root, loop, task_id, None)
                for criterion, sc in script_checks(criteria):
                    label = f"{loop}/{task_id} (merged): {criterion}"
                    found.append(((loop, task_id), Check(label, sc.run, sc.timeout_s)))
            self._recheck_cache = (base, found)
        return [c for task, c in self._recheck_cache[1] if task not in skip]

    def _refuse_tampering(
        self, vp: VerificationPassed, before: str, after: str, protected: set[str]
    ) -> None:
        """`Refused` when the change `before..after` (one task's) touches protected files
        that the gate did not list as approved. On the merged tree such a file differs
        from main only because the task changed it, and checking main's version instead
        would check a tree other than the one landing: the queue refuses instead. The
        gate lists `flagged_files` in a `verification.passed` only after a person
        approved them (or under policy `allow`); decision events are signed, so an agent
        cannot forge that list."""
        flagged = flagged_files(changes(self.settings.repo, before, after), protected)
        unapproved = [f for f in flagged if f not in set(vp.flagged_files)]
        if unapproved:
            raise Refused(
                MergeRefusal.TAMPERED,
                "refused: it changes protected files no person approved: " + ", ".join(unapproved),
                unapproved,
            )

    def _build(self, wt: Path, vp: VerificationPassed, base: str) -> str | None:
        """The merged commit, built in `wt` (checked out at `base`); None on a conflict.

        The task's work lands as ONE commit on top of main (a squash), so every commit
        main ever holds is a tree whose checks ran (invariant 3); the agent's own
        iteration commits stay on its branch. The trailers make a landed merge
        recognisable after a crash (`landed_as`)."""
        if not self._squash(wt, vp, base):
            return None
        return self._commit(wt, [vp])

    def _squash(self, wt: Path, vp: VerificationPassed, head: str, *, report: bool = True) -> bool:
        """Stage `vp.commit` merged onto `head` (checked out in `wt`); on a conflict,
        report it (unless not `report`), put `wt` back at `head` and return False."""
        proc = run_git(wt, "merge", "--squash", "--no-commit", vp.commit, check=False)
        if proc.returncode == 0:
            return True
        files = conflicted_files(wt)
        run_git(wt, "reset", "--hard", "--quiet", head, check=False)
        if report:
            self._conflicted(vp, files, "conflict" if files else proc.stdout[-800:])
        return False

    def _commit(self, wt: Path, vps: Sequence[VerificationPassed], batch: str | None = None) -> str:
        """Commit what is staged in `wt` as the landing of `vps`, one trailer pair each;
        `batch`: the commit is stacked in that batch (`Loops-Batch:`, gates/README.md)."""
        names = ", ".join(f"{vp.loop}/{vp.task_id}" for vp in vps)
        subject = f"{names}: verified by coding-loops"
        body = "".join(
            f"Loops-Task: {vp.loop}/{vp.task_id}\nLoops-Commit: {vp.commit}\n" for vp in vps
        )
        if batch is not None:
            body += f"{BATCH_TRAILER}{batch}\n"
        git(
            wt,
            "commit",
            "--quiet",
            "--allow-empty",
            "--no-verify",
            "-m",
            subject,
            "-m",
            body,
        )
        return git(wt, "rev-parse", "HEAD")

    def _run_checks(self, wt: Path, checks: Sequence[Check], others: Sequence[Check]) -> None:
        """`_check_results`, `Refused` with the first failure (checks not started by
        then are not run)."""
        results = self._check_results(wt, checks, others, fail_fast=True)
        failed = next((r for r in results if not r.passed), None)
        if failed is not None:
            raise Refused(MergeRefusal.CHECKS_FAILED, _failure(failed))

    def _check_results(
        self,
        wt: Path,
        checks: Sequence[Check],
        others: Sequence[Check],
        *,
        test_command: bool = True,
        fail_fast: bool = False,
    ) -> list[CriterionResult]:
        """Run on the merged tree in `wt` the tasks' script checks (from main's criteria),
        the repository's test command and the checks of the tasks merged before
        (`others`), each command once, concurrently in a bounded pool (`check_workers`),
        each with its own timeout and output cap."""
        s = self.settings
        todo = list(checks)
        if s.test_command and test_command:
            todo.append(Check(TEST_COMMAND, s.test_command))
        unique: dict[str, Check] = {}
        for check in [*todo, *others]:
            unique.setdefault(check.run, check)
        results = run_checks(
            list(unique.values()),
            wt,
            workers=s.check_workers,
            default_timeout_s=s.check_timeout_s,
            tail_bytes=s.tail_bytes,
            env=scrubbed_env(),
            fail_fast=fail_fast,
        )
        self.stats["check_rounds"] += 1
        self.stats["check_commands"] += len(results)
        return results

    def _move_main(self, merged: str, base: str) -> bool:
        s = self.settings
        if s.remote:
            return push_main(s.repo, s.remote, merged, s.main)  # the next merge fetches
        return update_ref_cas(s.repo, f"refs/heads/{s.main}", merged, base)

    # ------------------------------------------------------------------ outcomes

    def _already_merged(self, vp: VerificationPassed, key: str, base: str, landed: str) -> None:
        raw = self.store.get(key)
        record = json.loads(raw) if raw else {}
        # A batch records the tip it landed (the tree whose checks ran), not the task's own
        # squash inside it.
        self._completed(vp, record.get("merged") or landed, record.get("main_before") or base)

    def _completed(self, vp: VerificationPassed, merged: str, base: str) -> None:
        self.store.delete(f"tries:{vp.loop}:{vp.task_id}")
        self._publish(
            MergeCompleted(
                id=derived_id(vp.loop or "", vp.task_id, vp.commit, "completed"),
                source=self.source,
                task_id=vp.task_id,
                commit=vp.commit,
                merged_commit=merged,
                main_before=base,
                receipt=self.receipts.receipt(vp.loop, vp.task_id, vp.commit),
                **_caused(vp),
            )
        )

    def _count_once(self, counter: str, cause: str) -> tuple[int, bool]:
        """`counter` counted once per `cause`: its count as of `cause`, and whether
        `cause` was counted before (a redelivery or a rerun is not another)."""
        seen = self.store.get(cause)
        count = int(seen) if seen else self.store.incr(counter)
        self.store.set(cause, str(count))
        return count, seen is not None

    def _conflicted(
        self,
        vp: VerificationPassed,
        files: list[str],
        reason: str,
        kind: MergeRefusal = MergeRefusal.CONFLICT,
    ) -> None:
        # a redelivery is not another try
        tries, _ = self._count_once(f"tries:{vp.loop}:{vp.task_id}", f"conflicted:{vp.id}")
        escalate = tries >= self.settings.max_conflicts
        eid = derived_escalation_id(vp.loop or "", vp.task_id, str(tries)) if escalate else None
        self._publish(
            MergeConflicted(
                id=derived_id(vp.id, "conflicted"),
                source=self.source,
                task_id=vp.task_id,
                commit=vp.commit,
                files=files,
                tries=tries,
                reason=reason,
                kind=kind,
                escalation_id=eid,
                **_caused(vp),
            )
        )
        if eid is not None:
            self.store.set(f"escalation:{eid}", json.dumps([vp.loop, vp.task_id]))
            where = f" in {', '.join(files)}" if files else ""
            self._publish(
                EscalationRaised(
                    id=derived_id(vp.id, "escalation"),
                    source=self.source,
                    escalation_id=eid,
                    kind=EscalationKind.QUESTION,
                    severity=Severity.HIGH,
                    question=(
                        # A person's uncommitted files: theirs to commit or stash (the
                        # reason says so), not something to resolve on the loop's branch.
                        f"{vp.loop}/{vp.task_id} cannot land: {reason}"
                        if kind is MergeRefusal.BLOCKED
                        else f"{vp.loop}/{vp.task_id} failed to merge {tries} times{where}. "
                        "Resolve it on the loop's branch, then answer retry (or skip)."
                    ),
                    task_id=vp.task_id,
                    options=[Decision.RETRY.value, Decision.SKIP.value],
                    **_caused(vp),
                )
            )

    def _answered(self, answer: EscalationAnswered) -> None:
        raw = self.store.get(f"escalation:{answer.escalation_id}")
        if raw is None:
            return
        loop, task_id = json.loads(raw)
        if answer.decision in (Decision.RETRY, Decision.SKIP, Decision.APPROVE):
            self.store.delete(f"tries:{loop}:{task_id}")  # a fresh budget of tries
            self.store.delete(f"escalation:{answer.escalation_id}")

    def _publish(self, event: Event) -> None:
        log.info("merge: %s %s", event.type, getattr(event, "task_id", ""))
        self.bus.publish(event)


def landed_as(repo: Path, commit: str, main: str, *, squashed: bool = True) -> str | None:
    """The commit on `main` that carries `commit`'s work: the commit itself if main
    contains it, else (when it may have been `squashed`) the squash merge whose trailer
    names it; None if not merged."""
    if is_ancestor(repo, commit, main):
        return commit
    if not squashed:
        return None
    found = git(
        repo, "log", "--format=%H", "-1", "--fixed-strings", f"--grep=Loops-Commit: {commit}", main
    )
    return found or None


def _failure(result: CriterionResult) -> str:
    tail = result.output_tail[-800:]
    return f"checks failed on the merged tree: {result.criterion}\n{tail}"


def _caused(event: Event) -> dict[str, Any]:
    """`event.caused()`, typed for keyword unpacking into another event."""
    return dict(event.caused())
