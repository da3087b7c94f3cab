"""Batch merging: test several verified tasks together, bisect when the batch fails.

`BatchMergeQueue` takes each `verification.passed` into a durable queue (the
`StateStore`) and acks it; after every poll of its subscription it merges what is
queued, up to `MergeSettings.batch_size` tasks at a time: each is squashed onto the
current main in turn (a conflicting one, or one main does not know, or one that changes
protected files no person approved, is reported and left out), the checks of every task
in the batch (reloaded from main), of every task merged before and the repository's test
command run once on the combined tree,
and main moves to ONE commit carrying every task's trailers, so main still only holds
trees whose checks ran. A batch whose checks fail is split in halves, each merged (and
split) again, down to single tasks, whose failures are reported as usual.

A crash leaves the queue in the store; the restarted queue finds what already landed
(`landed_as`) and merges the rest."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence

from bus.api import Subscription
from events import (
    Event,
    LoopsError,
    MergeQueued,
    VerificationPassed,
)
from gates.checks import Check
from gates.gitutil import fetch, git, main_ref, resolve_commit, scratch
from gates.merge import GROUP, TYPES, MergeQueue, Refused, _caused, landed_as
from gates.settings import derived_id

log = logging.getLogger(__name__)

QUEUE_KEY = "merge-queue"


class BatchMergeQueue(MergeQueue):
    """A `MergeQueue` that merges up to `settings.batch_size` verified tasks at once."""

    def subscribe(self, consumer: str) -> Subscription:
        inner = self.bus.subscribe(GROUP, consumer, self.handle, types=TYPES)
        return _FlushingSubscription(inner, self)

    def handle(self, event: Event) -> None:
        if not isinstance(event, VerificationPassed):
            super().handle(event)
            return
        queue = self._load()
        if all(VerificationPassed.model_validate_json(q).id != event.id for q in queue):
            queue.append(event.model_dump_json())
            self.store.set(QUEUE_KEY, json.dumps(queue))
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
        return [VerificationPassed.model_validate_json(q) for q in self._load()]

    def flush(self) -> int:
        """Merge everything queued, batch by batch; returns the number of tasks handled."""
        done = 0
        while True:
            batch = self.pending()[: max(1, self.settings.batch_size)]
            if not batch:
                return done
            self.merge_batch(batch)
            handled = {vp.id for vp in batch}
            left = [
                q
                for q in self._load()
                if VerificationPassed.model_validate_json(q).id not in handled
            ]
            self.store.set(QUEUE_KEY, json.dumps(left))
            done += len(batch)

    def merge_batch(self, batch: Sequence[VerificationPassed]) -> None:
        """Land `batch` (or each half of it, recursively, when its checks fail)."""
        s = self.settings
        for _ in range(s.max_races):
            if s.remote:
                fetch(s.repo, s.remote)
            base = resolve_commit(s.repo, main_ref(s.main, s.remote))
            todo: list[VerificationPassed] = []
            for vp in batch:
                if base is None or resolve_commit(s.repo, vp.commit) is None:
                    todo.append(vp)  # `merge` reports it
                    continue
                recorded = self.store.get(_key(vp)) is not None
                landed = landed_as(s.repo, vp.commit, base, squashed=recorded)
                if landed is not None:
                    self._already_merged(vp, _key(vp), base, landed)
                else:
                    todo.append(vp)
            if len(todo) <= 1 or base is None:
                for vp in todo:
                    self.merge(vp)
                return
            with scratch(s.repo, base, pool="merge") as wt:
                planned: list[tuple[VerificationPassed, list[Check]]] = []
                for vp in todo:
                    try:
                        planned.append((vp, self._checks_of(wt, vp)))  # `wt` is main here
                    except Refused as exc:
                        self._conflicted(vp, exc.files, exc.reason, exc.kind)
                tasks = {(vp.loop or "", vp.task_id) for vp, _ in planned}
                others = self._recheck(wt, base, tasks)
                protected = self._protected(base, [c for _, cs in planned for c in cs])
                included: list[VerificationPassed] = []
                checks: list[Check] = []
                for vp, own in planned:
                    head = git(wt, "rev-parse", "HEAD")
                    if not self._squash(wt, vp, head):
                        continue
                    try:
                        self._refuse_tampering(vp, head, self._commit(wt, [vp]), protected)
                    except Refused as exc:
                        git(wt, "reset", "--hard", "--quiet", head)
                        self._conflicted(vp, exc.files, exc.reason, exc.kind)
                        continue
                    included.append(vp)
                    checks += own
                if not included:
                    return
                git(wt, "reset", "--soft", "--quiet", base)
                merged = self._commit(wt, included)
                try:
                    self._run_checks(wt, checks, others)
                except Refused as exc:
                    if len(included) == 1:
                        self.merge(included[0])  # reports the failure as a single merge does
                        return
                    log.info("merge: batch of %d failed (%s); bisecting", len(included), exc)
                    half = len(included) // 2
                    self.merge_batch(included[:half])
                    self.merge_batch(included[half:])
                    return
                for vp in included:
                    self.store.set(_key(vp), json.dumps({"merged": merged, "main_before": base}))
                if self.before_main_moves is not None:
                    self.before_main_moves(merged)
                if self._move_main(merged, base):
                    for vp in included:
                        self._completed(vp, merged, base)
                    return
            log.info("merge: main moved under a batch of %d; merging again", len(included))
        for vp in batch:
            self.merge(vp)  # main keeps moving: one at a time, each with its own retries

    def _load(self) -> list[str]:
        raw = self.store.get(QUEUE_KEY)
        return list(json.loads(raw)) if raw else []


def _key(vp: VerificationPassed) -> str:
    return f"merge:{vp.loop}:{vp.task_id}:{vp.commit}"


class _FlushingSubscription:
    """The queue's subscription: after each poll, the queued merges are done."""

    def __init__(self, inner: Subscription, queue: BatchMergeQueue) -> None:
        self.inner = inner
        self.queue = queue
        self.group = inner.group
        self.consumer = inner.consumer

    def poll(self, block_ms: int = 1000) -> int:
        handled = self.inner.poll(block_ms)
        self._flush()
        return handled

    def drain(self, max_rounds: int = 1000) -> int:
        handled = self.inner.drain(max_rounds)
        self._flush()
        return handled

    def run(self, stop: threading.Event, block_ms: int = 1000) -> None:
        self._flush()  # what a previous (crashed) process left queued
        while not stop.is_set():
            self.poll(block_ms)

    def _flush(self) -> None:
        try:
            self.queue.flush()
        except LoopsError as exc:  # git or a race: the queue is durable, the next poll retries
            log.warning("merge: flushing the queue failed, will retry: %s", exc)
