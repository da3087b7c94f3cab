"""`loops up` runs many loops in one log: each line of a loop's threads names its loop."""

from __future__ import annotations

import logging

from cli.running import LoopNames


def record(thread: str, msg: str, *args: object) -> logging.LogRecord:
    rec = logging.LogRecord("loops.worker", logging.INFO, __file__, 1, msg, args, None)
    rec.threadName = thread
    return rec


def test_a_loops_lines_name_it_once() -> None:
    names = LoopNames()
    line = record("worker-loop-2-infra", "Iteration %d/%d ...", 3, 10)
    assert names.filter(line) and line.getMessage() == "[loop-2-infra] Iteration 3/10 ..."
    assert names.filter(line) and line.getMessage() == "[loop-2-infra] Iteration 3/10 ..."
    beat = record("heartbeat-a", "heartbeat failed")
    names.filter(beat)
    assert beat.getMessage() == "[a] heartbeat failed"
    named = record("worker-a", "loop %s lost Redis", "a")
    names.filter(named)
    assert named.getMessage() == "loop a lost Redis"
    other = record("gate", "verifying %s", "x")
    names.filter(other)
    assert other.getMessage() == "verifying x"
