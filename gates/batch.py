"""Batch-and-bisect: the default merge queue whenever more than one verified claim waits.

`BatchMergeQueue` takes each `verification.passed` into a durable queue (the
`Store`) and acks it. After every poll of its subscription it takes up to
`batch_size` claims, in fair order (`gates.order`: ageing, a cost per retry), once `batch_size`
wait or the oldest has waited `fill_wait_s` (claims that arrive while a batch is tested
are read before the next batch is picked). A lone claim is a stack of one: the one-slot
queue's checks, plus the retry that tells a flaky check from a broken claim.

A batch is a **stack**: each claim is squash-merged onto the one before, as a commit of
its own (`Loops-Task:`, `Loops-Commit:` and `Loops-Batch: <id>` trailers). A claim that
conflicts inside the stack (or that main does not know, or that changes protected files
no person approved) is dropped from the batch and reported (`merge.conflicted` with its
`kind`; a conflict goes to the loop's conflict resolution). Then:

1. The merge checks run once on the tip: the stacked tasks' criteria (reloaded from
   main), the checks of every task merged before, the repository's test command.
   Green: main moves to the tip in one compare-and-set.
2. Red: the checks that failed run again on the unchanged tip. One that now passes is
   **flaky** (`check.flaky`, counted per command; more than `flaky_escalate_after`
   times and a person is asked to fix it); `flaky_policy` decides whether the batch
   lands (`pass`) or stays queued (`block`).
3. Red twice: bisect the prefixes of the stack on the checks that failed twice (main
   passes them, the tip does not), at most ceil(log2 n) runs of those checks only. The
   first prefix that fails them ends with the **culprit**: it goes back to its loop with
   the failing output (`kind: checks_failed`). The claims after it are stacked again on
   the one before it, and the new tip gets the full merge checks once (the good claims'
   re-verification): green, main moves to it; red, they stay queued for the next batch.

Invariant 3 per landing: main's ref only ever points to a tree whose checks ran. The
commits inside a landing below its tip were never checked alone; each carries
`Loops-Batch: <id>`, and the landing's tip (the last commit of that batch id on main) is
the tree that was checked. See gates/README.md.

A crash leaves the queue in the store; the restarted queue finds what already landed
(`landed_as`) and merges the rest."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.api import Subscription
from events import (
    CheckFlaky,
    CriterionResult,
    EscalationAnswered,
    EscalationKind,
    EscalationRaised,
    Event,
    LoopsError,
    MergeQueued,
    MergeRefusal,
    Severity,
    VerificationPassed,
)
from gates.checks import Check
from gates.errors import WorktreeBlocked
from gates.gitutil import fetch, main_ref, resolve_commit, scratch
from gates.merge import GROUP, TYPES, MergeQueue, Refused, _caused, _failure, landed_as
from gates.order import Waiting, pick
from gates.settings import FlakyPolicy, derived_escalation_id, derived_id
from infra.git import git

log = logging.getLogger("loops.merge")

QUEUE_KEY = "merge-queue"


@dataclass
class _Stacked:
    vp: VerificationPassed
    commit: str  # its squash commit, on top of the one before
    checks: list[Check]  # its script checks, from main's criteria


@dataclass
class _Stack:
    """A batch being built in a scratch worktree: what a claim needs to be stacked."""

    wt: Path
    base: str
    batch_id: str
    protected: set[str]
    others: list[Check]  # the checks of the tasks merged before
    items: list[_Stacked] = field(default_factory=list)
    # Claims that conflict with an earlier claim of this stack, not with main: they wait
    # for the next round, on the main this batch lands (where a conflict is a real one,
    # which the loop can resolve against main).
    deferred: list[VerificationPassed] = field(default_factory=list)


@dataclass
class _Verdict:
    """What testing a stack decided: land `landing` (its last commit is the checked
    tip); the culprit, and the claims to keep queued."""

    landing: list[_Stacked]
    culprit: _Stacked | None = None
    failure: CriterionResult | None = None
    requeue: list[VerificationPassed] = field(default_factory=list)


class BatchMergeQueue(MergeQueue):
    """A `MergeQueue` that stacks up to `settings.batch_size` verified claims, tests the
    tip once and bisects a red stack."""

    def __init__(self, *args: Any, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock  # wall clock: queue times survive a restart
        # When the last batch's test ended: a claim queued before then has waited for
        # company already (while that batch was tested), so no fill wait holds it.
        self.tested_until: float | None = None

    def subscribe(self, consumer: str) -> Subscription:
        inner = self.bus.subscribe(GROUP, consumer, self.handle, types=TYPES)
        return _FlushingSubscription(inner, self)

    def handle(self, event: Event) -> None:
        if isinstance(event, EscalationAnswered) and self._flaky_answered(event):
            return
        if not isinstance(event, VerificationPassed):
            super().handle(event)
            return
        queue = self._load()
        if all(w.vp.id != event.id for w in queue):
            queue.append(Waiting(event, self.clock()))
            self._save(queue)
        self._publish(
            MergeQueued(
                id=derived_id(event.id, "queued"),
                source=self.source,
                task_id=event.task_id,
                commit=event.commit,
                position=len(queue) - 1,
                **_caused(event),
            )
        )

    def pending(self) -> list[VerificationPassed]:
        return [w.vp for w in self._load()]

    def flush(self, *, force: bool = True, refill: Callable[[], object] | None = None) -> int:
        """Merge what is queued, batch by batch; returns the number of claims settled.
        Without `force`, a queue shorter than a batch waits until its oldest claim has
        waited `fill_wait_s` (the run loop polls again meanwhile), unless that claim came
        while the last batch was tested (it has waited for company already). `refill` (the
        subscription's non-blocking read) runs before each batch after the first, so
        the claims that arrived while a batch was tested join the next one instead of
        leaving the rest of the queue to be merged alone."""
        s = self.settings
        done = 0
        held: set[str] = set()  # kept queued by the flaky policy: tried on the next flush
        first = True
        while True:
            if not first and refill is not None:
                refill()
            first = False
            queue = [w for w in self._load() if w.vp.id not in held]
            if not queue:
                return done
            now = self.clock()
            oldest = min(w.since for w in queue)
            waited = now - oldest >= s.fill_wait_s
            waited |= self.tested_until is not None and oldest <= self.tested_until
            if not force and len(queue) < s.batch_size and not waited:
                return done
            batch = pick(
                queue, s.batch_size, now=now, tries=self._tries, retry_cost_s=s.retry_cost_s
            )
            keep = {vp.id for vp in self.merge_batch([w.vp for w in batch])}
            self.tested_until = self.clock()
            if keep == {w.vp.id for w in batch}:
                held |= keep  # nothing settled: do not spin on it
            settled = {w.vp.id for w in batch} - keep
            self._save([w for w in self._load() if w.vp.id not in settled])
            done += len(settled)

    def merge_batch(self, batch: Sequence[VerificationPassed]) -> list[VerificationPassed]:
        """Land what of `batch` can land; returns the claims to keep queued."""
        s = self.settings
        for _ in range(s.max_races):
            if s.remote:
                fetch(s.repo, s.remote)
            base = resolve_commit(s.repo, main_ref(s.main, s.remote))
            todo: list[VerificationPassed] = []
            for vp in batch:
                if base is None or resolve_commit(s.repo, vp.commit) is None:
                    self.merge(vp)  # reports the missing commit (or raises: no main)
                    continue
                recorded = self.store.get(_key(vp)) is not None
                landed = landed_as(s.repo, vp.commit, base, squashed=recorded)
                if landed is not None:
                    self._already_merged(vp, _key(vp), base, landed)
                else:
                    todo.append(vp)
            if not todo or base is None:
                return []
            # A lone claim is a stack of one: the same checks as the one-slot queue, and
            # a failed check gets the same retry (a flaky check is not its loop's fault).
            with scratch(s.repo, base, pool="merge") as wt:
                stack = self._stack(wt, base, todo)
                if not stack.items:
                    return stack.deferred
                verdict = self._test(stack)
                if verdict.landing:
                    tip = verdict.landing[-1].commit
                    for item in verdict.landing:
                        record = {"merged": tip, "main_before": base}
                        self.store.set(_key(item.vp), json.dumps(record))
                    if self.before_main_moves is not None:
                        self.before_main_moves(tip)
                    try:
                        moved = self._move_main(tip, base)
                    except WorktreeBlocked as exc:  # as the one-slot queue: the loops are told
                        for item in verdict.landing:
                            self.store.delete(_key(item.vp))
                            self._conflicted(item.vp, exc.files, str(exc), MergeRefusal.BLOCKED)
                        verdict.landing = []
                        moved = True
                    if not moved:
                        log.info("merge: main moved under a batch; merging again")
                        continue
                    for item in verdict.landing:
                        self._completed(item.vp, tip, base)
                if verdict.culprit is not None and verdict.failure is not None:
                    reason = _failure(verdict.failure)
                    self._conflicted(verdict.culprit.vp, [], reason, MergeRefusal.CHECKS_FAILED)
                return [*verdict.requeue, *stack.deferred]
        for vp in batch:
            self.merge(vp)  # main keeps moving: one at a time, each with its own retries
        return []

    # ------------------------------------------------------------------ the stack

    def _stack(self, wt: Path, base: str, todo: Sequence[VerificationPassed]) -> _Stack:
        """Squash each claim onto the one before in `wt` (checked out at `base`); a claim
        that main does not know, conflicts or tampers is reported and left out."""
        planned: list[tuple[VerificationPassed, list[Check]]] = []
        for vp in todo:
            try:
                planned.append((vp, self._checks_of(wt, vp)))  # `wt` is main here
            except Refused as exc:
                self._conflicted(vp, exc.files, exc.reason, exc.kind)
        others = self._recheck(wt, base, {(vp.loop or "", vp.task_id) for vp, _ in planned})
        stack = _Stack(
            wt=wt,
            base=base,
            batch_id=derived_id(*(vp.id for vp, _ in planned))[:12],
            protected=self._protected(base, [c for _, cs in planned for c in cs]),
            others=others,
        )
        for vp, own in planned:
            self._push(stack, vp, own)
        return stack

    def _push(self, stack: _Stack, vp: VerificationPassed, own: list[Check]) -> bool:
        """Stack `vp` on the worktree's HEAD; False (reported) if it cannot be."""
        head = git(stack.wt, "rev-parse", "HEAD")
        if not self._squash(stack.wt, vp, head, report=not stack.items):
            if stack.items:
                stack.deferred.append(vp)
            return False  # else reported: the loop merges main, resolves it, claims again
        commit = self._commit(stack.wt, [vp], batch=stack.batch_id)
        try:
            self._refuse_tampering(vp, head, commit, stack.protected)
        except Refused as exc:
            git(stack.wt, "reset", "--hard", "--quiet", head)
            self._conflicted(vp, exc.files, exc.reason, exc.kind)
            return False
        stack.items.append(_Stacked(vp, commit, own))
        return True

    def _run_at(
        self, stack: _Stack, n: int, only: set[str] | None = None, fail_fast: bool = False
    ) -> list[CriterionResult]:
        """The merge checks of the first `n` stacked claims (those whose command is in
        `only`, if given), on the tree of the n-th."""
        git(stack.wt, "reset", "--hard", "--quiet", stack.items[n - 1].commit)
        git(stack.wt, "clean", "-ffdxq")
        own = [c for item in stack.items[:n] for c in item.checks]
        others = stack.others
        test_command = True
        if only is not None:
            own = [c for c in own if c.run in only]
            others = [c for c in others if c.run in only]
            test_command = self.settings.test_command in only
        return self._check_results(
            stack.wt, own, others, test_command=test_command, fail_fast=fail_fast
        )

    def _commands(self, stack: _Stack, n: int) -> set[str]:
        """Every command of the merge checks of the first `n` stacked claims."""
        runs = {c.run for item in stack.items[:n] for c in item.checks}
        runs |= {c.run for c in stack.others}
        return runs | ({self.settings.test_command} if self.settings.test_command else set())

    def _test(self, stack: _Stack) -> _Verdict:
        items, n = stack.items, len(stack.items)
        # Fail fast: a red tip is retried and bisected on its failed checks anyway; the
        # checks not started are run only if it turns out green after all.
        first = self._run_at(stack, n, fail_fast=True)
        if all(r.passed for r in first):
            return _Verdict(landing=list(items))
        failed = {r.command or "" for r in first if not r.passed}
        log.info("merge: a stack of %d failed; running its failed checks again", n)
        again = self._run_at(stack, n, only=failed)
        still = {r.command or "" for r in again if not r.passed}
        flaky = [r for r in first if not r.passed and r.command not in still]
        block = self.settings.flaky_policy == FlakyPolicy.BLOCK
        if not still:  # the failed checks now pass: run those the first run skipped
            rest = self._commands(stack, n) - {r.command or "" for r in first}
            more = self._run_at(stack, n, only=rest) if rest else []
            again = [*again, *more]
            still = {r.command or "" for r in more if not r.passed}
        if flaky:
            self._flaky(flaky, stack, blocked=block and not still)
        if not still:
            if block:
                return _Verdict(landing=[], requeue=[i.vp for i in items])
            return _Verdict(landing=list(items))
        # Bisect the prefixes on the checks that failed twice: main passes them, the tip
        # does not; the first prefix that fails them ends with the culprit.
        failure = next(r for r in again if not r.passed)
        good, bad = 0, n
        while bad - good > 1:
            mid = (good + bad) // 2
            self.stats["isolate_runs"] += 1
            red = next((r for r in self._run_at(stack, mid, only=still) if not r.passed), None)
            if red is None:
                good = mid
            else:
                bad, failure = mid, red
        culprit = items[bad - 1]
        log.info("merge: bisected a stack of %d: %s breaks it", n, culprit.vp.task_id)
        return self._without(stack, bad - 1, culprit, failure)

    def _without(
        self, stack: _Stack, index: int, culprit: _Stacked, failure: CriterionResult
    ) -> _Verdict:
        """Stack again without the culprit (the claims after it onto the one before it)
        and check the whole new tip once: that re-verifies the good claims before they
        land. Red again: they stay queued, for the next batch."""
        items = stack.items
        head = items[index - 1].commit if index else stack.base
        git(stack.wt, "reset", "--hard", "--quiet", head)
        git(stack.wt, "clean", "-ffdxq")
        stack.items = items[:index]
        for item in items[index + 1 :]:
            self._push(stack, item.vp, item.checks)
        if not stack.items:
            return _Verdict(landing=[], culprit=culprit, failure=failure)
        self.stats["isolate_runs"] += 1
        results = self._run_at(stack, len(stack.items))
        if all(r.passed for r in results):
            return _Verdict(landing=list(stack.items), culprit=culprit, failure=failure)
        return _Verdict(
            landing=[], culprit=culprit, failure=failure, requeue=[i.vp for i in stack.items]
        )

    # ------------------------------------------------------------------ flaky checks

    def _flaky(self, flaky: Sequence[CriterionResult], stack: _Stack, blocked: bool) -> None:
        tree = stack.items[-1].commit
        tasks = [f"{i.vp.loop}/{i.vp.task_id}" for i in stack.items]
        limit = self.settings.flaky_escalate_after
        for result in flaky:
            command = result.command or result.criterion
            digest = hashlib.sha1(command.encode()).hexdigest()[:12]
            count, seen = self._count_once(f"flaky:{digest}", f"flaky-seen:{tree}:{digest}")
            self.stats["flaky"] += 0 if seen else 1
            eid = derived_escalation_id("flaky", command) if count == limit + 1 else None
            self._publish(
                CheckFlaky(
                    id=derived_id(tree, command, "flaky"),
                    source=self.source,
                    criterion=result.criterion,
                    command=command,
                    tree=tree,
                    task_ids=tasks,
                    count=count,
                    blocked=blocked,
                    output_tail=result.output_tail[-800:],
                    escalation_id=eid,
                )
            )
            if eid is not None:
                self.store.set(f"flaky-escalation:{eid}", digest)
                self._publish(
                    EscalationRaised(
                        id=derived_id(tree, command, "flaky-escalation"),
                        source=self.source,
                        escalation_id=eid,
                        kind=EscalationKind.INCIDENT,
                        severity=Severity.MEDIUM,
                        question=(
                            f"The merge check `{result.criterion}` ({command}) was flaky "
                            f"{count} times: it failed, then passed on the unchanged tree. "
                            "Please fix the check, then answer (its count starts again)."
                        ),
                    )
                )

    def _flaky_answered(self, answer: EscalationAnswered) -> bool:
        digest = self.store.get(f"flaky-escalation:{answer.escalation_id}")
        if digest is None:
            return False
        self.store.delete(f"flaky:{digest}")
        self.store.delete(f"flaky-escalation:{answer.escalation_id}")
        return True

    def flaky_count(self, command: str) -> int:
        """How often `command` was flaky since a person last answered about it."""
        raw = self.store.get(f"flaky:{hashlib.sha1(command.encode()).hexdigest()[:12]}")
        return int(raw) if raw else 0

    # ------------------------------------------------------------------ the queue

    def _tries(self, vp: VerificationPassed) -> int:
        raw = self.store.get(f"tries:{vp.loop}:{vp.task_id}")
        return int(raw) if raw else 0

    def _load(self) -> list[Waiting]:
        raw = self.store.get(QUEUE_KEY)
        out = []
        for item in json.loads(raw) if raw else []:
            if isinstance(item, str):  # written before queue times were kept
                item = {"vp": item, "since": 0.0}
            out.append(Waiting(VerificationPassed.model_validate_json(item["vp"]), item["since"]))
        return out

    def _save(self, queue: Sequence[Waiting]) -> None:
        data = [{"vp": w.vp.model_dump_json(), "since": w.since} for w in queue]
        self.store.set(QUEUE_KEY, json.dumps(data))


def _key(vp: VerificationPassed) -> str:
    return f"merge:{vp.loop}:{vp.task_id}:{vp.commit}"


class _FlushingSubscription:
    """The queue's subscription: after each poll, the queued merges are done (a short
    queue waits for the fill wait); `drain` (burst mode) merges everything queued."""

    def __init__(self, inner: Subscription, queue: BatchMergeQueue) -> None:
        self.inner = inner
        self.queue = queue
        self.group = inner.group
        self.consumer = inner.consumer

    def poll(self, block_ms: int = 1000) -> int:
        handled = self.inner.poll(block_ms)
        self._flush(force=False)
        return handled

    def drain(self, max_rounds: int = 1000) -> int:
        handled = self.inner.drain(max_rounds)
        self._flush(force=True)
        return handled

    def run(self, stop: threading.Event, block_ms: int = 1000) -> None:
        self._flush(force=False)  # what a previous (crashed) process left queued
        while not stop.is_set():
            self.poll(block_ms)

    def _flush(self, *, force: bool) -> None:
        try:
            self.queue.flush(force=force, refill=lambda: self.inner.poll(0))
        except LoopsError as exc:  # git or a race: the queue is durable, the next poll retries
            log.warning("merge: flushing the queue failed, will retry: %s", exc)
