"""The merge queue puts each landed task's receipt into its `merge.completed`, from
the task's events on the stream, even those published before the queue started, and
the same receipt again when a restarted queue reports the merge once more."""

from __future__ import annotations

import math

import events as ev
from gates import MergeQueue, MergeSettings
from tests.gates.conftest import APP, Project, load_tasks
from tests.gates.test_flow import MUL

WORKER = ev.Source(role=ev.Role.WORKER, instance="test:a")
WRONG = APP + "\n\ndef mul(a, b):\n    return 0\n"


def call(
    n: int, attempt: int, cost: float | None, outcome: ev.IterationOutcome, commit: str | None
) -> ev.IterationFinished:
    return ev.IterationFinished(
        source=WORKER,
        loop="a",
        task_id="mul",
        iteration=n,
        attempt=attempt,
        outcome=outcome,
        duration_s=10.0 * n,
        tokens=ev.TokenUsage(input_tokens=100 * n, output_tokens=10 * n),
        cost_usd=cost,
        cost_source=ev.CostSource.AGENT if cost is not None else ev.CostSource.NONE,
        commit=commit,
    )


def test_a_merged_task_carries_its_receipt(project: Project) -> None:
    a = project.loop("a")
    publish = project.bus.publish
    publish(call(1, 1, 0.10, ev.IterationOutcome.CONTINUE, None))
    wrong = a.write({"app.py": WRONG}, "mul, wrong")
    publish(call(2, 1, 0.20, ev.IterationOutcome.CLAIMED, wrong))
    a.claim("mul", wrong)  # the gate rejects it: mul returns 0
    publish(call(3, 2, None, ev.IterationOutcome.CONTINUE, None))  # no cost reported
    right = a.write({"app.py": MUL}, "mul")
    publish(call(4, 2, 0.30, ev.IterationOutcome.CLAIMED, right))
    a.claim("mul", right)
    # The queue starts after all of it: what it knows of the task, it reads from the stream.
    project.start()
    project.pump()

    assert len(project.events("verification.failed", task_id="mul")) == 1
    (done,) = project.events("merge.completed", task_id="mul")
    assert isinstance(done, ev.MergeCompleted) and done.commit == right
    receipt = done.receipt
    assert receipt is not None
    assert receipt.agent_calls == 4 and receipt.uncosted_calls == 1
    assert receipt.cost_usd == math.fsum([0.10, 0.20, 0.30])
    assert (receipt.failed_calls, receipt.failed_cost_usd) == (3, math.fsum([0.10, 0.20]))
    assert receipt.tokens == ev.TokenUsage(input_tokens=1000, output_tokens=100)
    assert receipt.wall_time_s == 100.0
    assert (receipt.verification_runs, receipt.attempts) == (2, 2)

    # A restarted queue that gets the verdict again reports the merge with the same receipt.
    (verified,) = project.events("verification.passed", task_id="mul")
    assert isinstance(verified, ev.VerificationPassed)
    again = MergeQueue(
        project.bus,
        MergeSettings(repo=project.clone("merge-again"), test_command=project.test_command),
        loader=load_tasks,
        store=project.store,
    )
    again.handle(verified)
    reported = [e for e in project.events("merge.completed") if e.id == done.id]
    assert len(reported) == 2 and all(
        isinstance(e, ev.MergeCompleted) and e.receipt == receipt for e in reported
    )
