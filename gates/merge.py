"""The merge queue: one merge slot between verified commits and main.

For each `verification.passed`, in order: merge the verified commit onto the current
main in a scratch worktree, run the task's checks and the repository's test command on
the merged tree, and move main only if they pass, by a non-force push (or a
compare-and-swap of the ref when there is no remote). Main therefore only ever holds
commits whose checks ran on exactly that tree.

Crash safety: before merging, the queue asks whether the commit is already in main
(a retried job after a crash finds its own work done); the merged commit and the main
it was built on are recorded in the `StateStore`, keyed by task and commit, so the
retried job reports the same `merge.completed`."""

from __future__ import annotations

import json
import logging
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
    Role,
    Severity,
    Source,
    VerificationPassed,
)
from gates.checks import run_script, scrubbed_env
from gates.errors import MergeError, WorktreeBlocked
from gates.gitutil import (
    conflicted_files,
    fetch,
    git,
    is_ancestor,
    main_ref,
    push_main,
    resolve_commits,
    run_git,
    scratch,
    update_ref_cas,
)
from gates.settings import MergeSettings, derived_escalation_id, derived_id
from gates.store import MemoryStore, StateStore

log = logging.getLogger(__name__)

GROUP = "merge"
TYPES = ("verification.passed", "escalation.answered")


class MergeQueue:
    """Consumes `verification.passed`; publishes `merge.queued` and then
    `merge.completed` or `merge.conflicted` (and an escalation after N conflicts)."""

    def __init__(
        self,
        bus: Bus,
        settings: MergeSettings,
        *,
        store: StateStore | None = None,
        source: Source | None = None,
        before_main_moves: Callable[[str], None] | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.store = store or MemoryStore()
        self.source = source or Source(role=Role.MERGE)
        # Called with the merged commit once its checks passed, just before main moves
        # (fault injection for crash tests; a no-op in production).
        self.before_main_moves = before_main_moves

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
                self._conflicted(
                    vp, [], f"verified commit {vp.commit[:12]} is not in the repository"
                )
                return
            if base is None:
                raise MergeError(f"no {s.main!r} branch", vp.task_id, vp.commit)
            # Only a merge this queue recorded can have landed as a squash of it.
            landed = landed_as(s.repo, vp.commit, base, squashed=self.store.get(key) is not None)
            if landed is not None:
                self._already_merged(vp, key, base, landed)
                return
            with scratch(s.repo, base, pool="merge") as wt:
                merged = self._build(wt, vp, base)
                if merged is None:
                    return  # conflicted: reported
                failed = self._run_checks(wt, [vp])
                if failed is not None:
                    tail = failed.output_tail[-800:]
                    reason = f"checks failed on the merged tree: {failed.criterion}\n{tail}"
                    self._conflicted(vp, [], reason)
                    return
                self.store.set(key, json.dumps({"merged": merged, "main_before": base}))
                if self.before_main_moves is not None:
                    self.before_main_moves(merged)
                try:
                    moved = self._move_main(merged, base)
                except WorktreeBlocked as exc:
                    self.store.delete(key)
                    self._conflicted(vp, exc.files, str(exc))
                    return
                if moved:
                    self._completed(vp, merged, base)
                    return
            log.info("merge: main moved under %s/%s; merging again", vp.loop, vp.task_id)
        raise MergeError(f"main moved {s.max_races} times during one merge", vp.task_id, vp.commit)

    def _build(self, wt: Path, vp: VerificationPassed, base: str) -> str | None:
        """The merged commit, built in `wt` (checked out at `base`); None on a conflict.

        The task's work lands as ONE commit on top of main (a squash), so every commit
        main ever holds is a tree whose checks ran (invariant 3); the agent's own
        iteration commits stay on its branch. The trailers make a landed merge
        recognisable after a crash (`landed_as`)."""
        if not self._squash(wt, vp, base):
            return None
        return self._commit(wt, [vp])

    def _squash(self, wt: Path, vp: VerificationPassed, head: str) -> bool:
        """Stage `vp.commit` merged onto `head` (checked out in `wt`); on a conflict,
        report it, put `wt` back at `head` and return False."""
        proc = run_git(wt, "merge", "--squash", "--no-commit", vp.commit, check=False)
        if proc.returncode == 0:
            return True
        files = conflicted_files(wt)
        run_git(wt, "reset", "--hard", "--quiet", head, check=False)
        self._conflicted(vp, files, "conflict" if files else proc.stdout[-800:])
        return False

    def _commit(self, wt: Path, vps: Sequence[VerificationPassed]) -> str:
        """Commit what is staged in `wt` as the landing of `vps`, one trailer pair each."""
        names = ", ".join(f"{vp.loop}/{vp.task_id}" for vp in vps)
        subject = f"{names}: verified by coding-loops"
        body = "".join(
            f"Loops-Task: {vp.loop}/{vp.task_id}\nLoops-Commit: {vp.commit}\n" for vp in vps
        )
        git(
            wt,
            "-c",
            "user.name=coding-loops",
            "-c",
            "user.email=loops@localhost",
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

    def _run_checks(self, wt: Path, vps: Sequence[VerificationPassed]) -> CriterionResult | None:
        """Runs the tasks' script checks (as the gate ran them, from main's criteria) and
        the repository's test command, each command once; the first failure, or None."""
        s = self.settings
        env = scrubbed_env()
        commands = [
            (r.criterion, r.command) for vp in vps for r in vp.criteria if r.kind == "script"
        ]
        if s.test_command:
            commands.append(("the repository's test command", s.test_command))
        seen: set[str] = set()
        for criterion, command in commands:
            if not command or command in seen:
                continue
            seen.add(command)
            result = run_script(
                command,
                wt,
                criterion=criterion,
                timeout_s=s.check_timeout_s,
                tail_bytes=s.tail_bytes,
                env=env,
                record_group=True,
            )
            if not result.passed:
                return result
        return None

    def _move_main(self, merged: str, base: str) -> bool:
        s = self.settings
        if s.remote:
            return push_main(s.repo, s.remote, merged, s.main)  # the next merge fetches
        return update_ref_cas(s.repo, f"refs/heads/{s.main}", merged, base)

    # ------------------------------------------------------------------ outcomes

    def _already_merged(self, vp: VerificationPassed, key: str, base: str, landed: str) -> None:
        raw = self.store.get(key)
        record = json.loads(raw) if raw else {}
        self._completed(vp, landed, record.get("main_before") or base)

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
                **_caused(vp),
            )
        )

    def _conflicted(self, vp: VerificationPassed, files: list[str], reason: str) -> None:
        seen = self.store.get(f"conflicted:{vp.id}")  # a redelivery is not another try
        tries = int(seen) if seen else self.store.incr(f"tries:{vp.loop}:{vp.task_id}")
        self.store.set(f"conflicted:{vp.id}", str(tries))
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
                        f"{vp.loop}/{vp.task_id} failed to merge {tries} times{where}. "
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


def _caused(event: Event) -> dict[str, Any]:
    """`event.caused()`, typed for keyword unpacking into another event."""
    return dict(event.caused())
