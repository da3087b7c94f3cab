"""The worker's main loop: handle bus events, choose a task, iterate, heartbeat.

`poll(block_ms)` handles waiting bus events (calling `loops.reactions.handle`) and
returns how many it handled; waiting is always done inside `poll`, so a command or
a verdict wakes the loop at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from bus import CONNECTION_ERRORS
from events import LoopStatus
from loops.reactions import reload_book
from loops.runtime import Phase
from loops.worker import LoopWorker

log = logging.getLogger("loops.worker")

Poll = Callable[[int], int]


@dataclass(frozen=True)
class WorkerExit:
    """How a worker run ended."""

    reason: str
    restart: bool = False


def _heartbeats(worker: LoopWorker, done: threading.Event) -> threading.Thread:
    def beat() -> None:
        while not done.wait(worker.heartbeat_s):
            try:
                worker.heartbeat()
            except Exception:  # a missed beat must not kill the loop; the monitor sees it
                log.exception("heartbeat failed")

    thread = threading.Thread(target=beat, name=f"heartbeat-{worker.loop}", daemon=True)
    thread.start()
    return thread


def _wait(
    worker: LoopWorker, poll: Poll, seconds: float, stop: threading.Event, *, wake: bool = True
) -> None:
    """Wait `seconds` on the worker's clock, handling events as they come: woken early
    by any event when `wake` (a usage window the event may have moved), else only by a
    stop or a pause (`auto_continue_delay` is honoured whatever else arrives; a paused
    loop shows as paused, and a person's resume goes on at once)."""
    deadline = worker.clock() + timedelta(seconds=seconds)
    while not stop.is_set() and not worker.stop_requested and not worker.state.paused:
        left_ms = int((deadline - worker.clock()).total_seconds() * 1000)
        if left_ms <= 0:
            return
        if poll(min(left_ms, 500)) and wake:
            return


def _retry(what: str, call: Callable[[], object], stop: threading.Event) -> None:
    """`call()` until it gets through: a lost Redis is waited out with back-off
    (the worker's outbox keeps what it had to publish), never the loop's death."""
    backoff = 0.1
    while True:
        try:
            call()
            return
        except CONNECTION_ERRORS as exc:
            log.warning("%s: lost Redis (%s); retrying in %.1fs", what, exc, backoff)
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, 5.0)


def _robust(poll: Poll, loop: str, stop: threading.Event) -> Poll:
    """`poll` that waits out a lost Redis (returns 0 after a back-off) instead of raising."""
    backoff = [0.1]

    def robust(block_ms: int) -> int:
        try:
            handled = poll(block_ms)
        except CONNECTION_ERRORS as exc:
            log.warning("loop %s lost Redis (%s); retrying", loop, exc)
            stop.wait(max(backoff[0], block_ms / 1000))
            backoff[0] = min(backoff[0] * 2, 5.0)
            return 0
        backoff[0] = 0.1
        return handled

    return robust


def run_worker(
    worker: LoopWorker,
    poll: Poll,
    stop: threading.Event,
    *,
    until_idle: bool = False,
    idle_block_ms: int = 500,
    resume: Callable[[], None] | None = None,
) -> WorkerExit:
    """Run the loop until stopped, or (with `until_idle`) until no task can progress."""
    worker.cancel = stop
    poll = _robust(poll, worker.loop, stop)
    _retry("loop start", worker.started, stop)
    if resume is not None:
        _retry("loop resume", resume, stop)
    _retry("heartbeat", worker.heartbeat, stop)
    first_iteration = worker.state.iteration  # `-n` / `--max-iterations` count this run's
    worker.run_base = first_iteration
    done = threading.Event()
    beat = _heartbeats(worker, done)
    problems: list[str] = []
    status, reason = LoopStatus.STOPPED, "stopped"
    backoff = 0.1
    try:
        while not stop.is_set():
            try:
                if worker.state.outbox:
                    worker.flush()  # what a lost connection left unpublished
                poll(0)
                problems = reload_book(worker, problems)
                worker.announce()
                if worker.stop_requested:
                    reason = worker.stop_requested
                    break
                if worker.state.paused:
                    worker.status = LoopStatus.PAUSED
                    poll(idle_block_ms)
                    continue
                now = worker.clock()
                if worker.state.waiting_until and worker.state.waiting_until > now:
                    worker.status = LoopStatus.WAITING
                    _wait(worker, poll, (worker.state.waiting_until - now).total_seconds(), stop)
                    continue
                worker.state.waiting_until = None
                task = worker.next_task()
                phase = (
                    worker.state.tasks[task.id].phase
                    if task and task.id in worker.state.tasks
                    else None
                )
                if task is None or phase in (Phase.CLAIMED, Phase.VERIFIED):
                    worker.status = LoopStatus.IDLE if task is None else LoopStatus.RUNNING
                    if task is None and (worker.state.crash_hold or worker.state.budget_hold):
                        worker.status = LoopStatus.PAUSED  # until a person answers or resumes
                    if task is None:
                        worker.current = None
                    if until_idle and task is None and not worker.waiting_on_dependency():
                        reason = "no task can make progress"
                        break
                    poll(idle_block_ms)
                    continue
                limit = worker.book.max_iterations
                if limit and worker.state.iteration - first_iteration >= limit:
                    # The task needs another agent run and the budget is spent.
                    worker.budget_exhausted = True
                    log.error("Max iterations (%d) reached without a promise.", limit)
                    reason = f"max iterations ({limit}) reached"
                    break
                worker.iterate(task)
                if worker.book.auto_continue_delay > 0 and not worker.retry_now:
                    _wait(worker, poll, worker.book.auto_continue_delay, stop, wake=False)
                worker.retry_now = False
                backoff = 0.1
            except CONNECTION_ERRORS as exc:
                # What it had to publish waits in the outbox; the next round flushes it.
                log.warning("loop %s lost Redis (%s); retrying", worker.loop, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
    except BaseException as exc:
        status, reason = LoopStatus.ERROR, f"{type(exc).__name__}: {exc}"
        raise
    finally:
        done.set()
        beat.join(timeout=5)
        worker.current = None
        try:
            worker.stopped(status, reason)
        except CONNECTION_ERRORS as exc:
            log.warning("loop %s: could not publish its stop (%s)", worker.loop, exc)
    return WorkerExit(reason=reason, restart=worker.restart_requested)
