from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from events import Criterion, NaturalCheck, ScriptCheck
from loops.prompt import PromptInput, build_prompt

CRITERIA = [
    Criterion(criterion="tests pass", check=ScriptCheck(run="pytest -q tests/")),
    Criterion(criterion="looks right", check=NaturalCheck(description="GET /health is 200")),
]


def _input(**kw: object) -> PromptInput:
    base: dict[str, object] = dict(
        task_id="add-endpoint",
        title="Add GET /health",
        description="Add a route.",
        criteria=CRITERIA,
        goal="Health endpoint",
        context="Flask app",
        instructions=["style"],
    )
    base.update(kw)
    return PromptInput(**base)  # type: ignore[arg-type]


def test_prompt_holds_task_criteria_commands_and_claim_protocol() -> None:
    text = build_prompt(_input(last_failure="E   assert 1 == 2", guidance=["use jsonify"]))
    assert "# Task add-endpoint: Add GET /health" in text
    assert "`pytest -q tests/`" in text and "GET /health is 200" in text
    assert "assert 1 == 2" in text and "use jsonify" in text
    assert "<promise>add-endpoint done</promise>" in text and "BLOCKED:" in text


def test_prompt_stays_bounded_after_many_failures() -> None:
    history = [f"iteration {i}: no claim; changed nothing; " + "x" * 300 for i in range(500)]
    text = build_prompt(
        _input(
            last_failure="F" * 200_000 + "\nFINAL ERROR LINE",
            history=history,
            guidance=["hint " * 100] * 200,
            description="d" * 100_000,
        ),
        limit=16_000,
    )
    assert len(text.encode()) <= 16_000
    # The most useful parts survive the cut: the criteria, the end of the failure,
    # the latest iteration, the claim protocol.
    assert "FINAL ERROR LINE" in text
    assert "iteration 499" in text and "iteration 0:" not in text
    assert "`pytest -q tests/`" in text and "<promise>" in text


@given(
    st.text(max_size=3000),
    st.text(max_size=3000),
    st.lists(st.text(max_size=500), max_size=30),
    st.integers(min_value=2_000, max_value=40_000),
)
def test_prompt_never_exceeds_limit(
    desc: str, failure: str, history: list[str], limit: int
) -> None:
    text = build_prompt(
        _input(description=desc, last_failure=failure, history=history), limit=limit
    )
    assert len(text.encode()) <= limit
