"""The cost of an agent call: the agent's own report, else its tokens times the price
table (which the operator can override), else unknown, with one clear warning."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import events as ev
from infra.settings import Settings
from loops.cost import Pricer
from loops.harness import project_config_from_data
from loops.runners import AgentRequest, AgentResult, make_runner
from loops.runners.anthropic_agent import AnthropicRunner
from tests.fakes.mock_anthropic import MockAnthropic
from tests.loops.test_worker import make_harness  # noqa: F401 - the fixture

KEY = "sk-ant-test-" + "c" * 30
SONNET = ev.DEFAULT_PRICES["claude-sonnet-4-5"]


def used(i: int, o: int) -> ev.TokenUsage:
    return ev.TokenUsage(input_tokens=i, output_tokens=o)


def test_the_agents_own_report_comes_first() -> None:
    result = AgentResult(reply="x", tokens=used(1000, 10), cost_usd=0.5, model="claude-opus-4-1")
    cost = Pricer().cost(result)
    assert (cost.usd, cost.source) == (0.5, ev.CostSource.AGENT)
    assert cost.line(result) == "Cost: $0.5000 (reported by the agent; 1000 in, 10 out tokens)"


def test_tokens_only_are_priced_from_the_table_and_the_operator_overrides_it() -> None:
    result = AgentResult(reply="x", tokens=used(1_000_000, 100_000), model="claude-sonnet-4-5")
    cost = Pricer().cost(result)
    assert cost.source is ev.CostSource.PRICE_TABLE
    assert cost.usd == ev.price_tokens(result.tokens, SONNET) == pytest.approx(4.5)
    assert "price table, claude-sonnet-4-5" in cost.line(result)
    # project.json's `prices` replaces the entry (and adds models the table lacks).
    config = project_config_from_data(
        {
            "prices": {
                "claude-sonnet-4-5": {"input": 1, "output": 2},
                "my-model": {"input": 4, "output": 8},
            }
        }
    )
    assert Pricer(config.prices).cost(result).usd == pytest.approx(1.0 + 0.2)
    mine = AgentResult(reply="x", tokens=used(500_000, 0), model="my-model")
    assert Pricer(config.prices).cost(mine).usd == pytest.approx(2.0)


def test_a_bad_price_in_project_json_is_one_clear_line() -> None:
    with pytest.raises(ev.ValidationFailed) as caught:
        project_config_from_data({"prices": {"m": {"input": -1, "output": 2}}})
    assert "prices.m.input" in str(caught.value) and "project.json" in str(caught.value)


def test_an_unknown_model_is_unknown_cost_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pricer = Pricer()
    result = AgentResult(reply="x", tokens=used(100, 10), model="claude-mock-model")
    with caplog.at_level(logging.WARNING, logger="loops.cost"):
        costs = [pricer.cost(result) for _ in range(3)]
    assert all(c.usd is None and c.source is ev.CostSource.NONE for c in costs)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "no price for model 'claude-mock-model'" in warnings[0] and "project.json" in warnings[0]
    assert costs[0].line(result).startswith("Cost: unknown")
    # No tokens and no report: unknown too, and nothing to warn about.
    assert pricer.cost(AgentResult(reply="x")).source is ev.CostSource.NONE


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -3.0, 5e6])
def test_a_reported_cost_that_cannot_be_true_is_refused_and_said(
    bad: float, caplog: pytest.LogCaptureFixture
) -> None:
    result = AgentResult(
        reply="x", tokens=used(1_000_000, 0), cost_usd=bad, model="claude-sonnet-4-5"
    )
    with caplog.at_level(logging.WARNING, logger="loops.cost"):
        cost = Pricer().cost(result)
    assert (cost.usd, cost.source) == (3.0, ev.CostSource.PRICE_TABLE)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "not trusted; priced from the table instead" in warning
    nothing = AgentResult(reply="x", cost_usd=bad)
    assert Pricer().cost(nothing).usd is None


@pytest.fixture
def anthropic_runner(
    mock_anthropic: MockAnthropic, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AnthropicRunner]:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mock_anthropic.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    built = make_runner(
        "anthropic", model="claude-sonnet-4-5", max_retries=0, settings=Settings.from_env()
    )
    assert isinstance(built, AnthropicRunner)
    yield built
    built.close()


def test_the_sdk_runner_is_priced_from_the_table(
    anthropic_runner: AnthropicRunner, mock_anthropic: MockAnthropic, tmp_path: Path
) -> None:
    turn = {"usage": {"input_tokens": 1000, "output_tokens": 200}}
    mock_anthropic.script(
        [
            {**turn, "content": [{"type": "tool_use", "name": "list_files", "input": {}}]},
            {**turn, "content": [{"type": "text", "text": "<promise>done</promise>"}]},
        ]
    )
    request = AgentRequest(
        prompt="go", worktree=tmp_path, loop="l", task_id="T-1", iteration=1, timeout_s=20.0
    )
    result = anthropic_runner.run(request)
    assert result.failure is None, result.failure_detail
    assert result.cost_usd is None and result.model == "claude-sonnet-4-5"
    assert (result.tokens.input_tokens, result.tokens.output_tokens) == (2000, 400)
    cost = Pricer().cost(result)
    assert cost.source is ev.CostSource.PRICE_TABLE
    assert cost.usd == ev.price_tokens(result.tokens, SONNET) == pytest.approx(0.012)


def test_the_iteration_event_carries_the_cost_and_its_source(make_harness) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    h = make_harness(
        {
            "tasks": {
                "hello": [
                    {"reply": "working", "tokens": {"input": 10, "output": 5}, "cost_usd": 0.25},
                    {"reply": "still working", "tokens": {"input": 10, "output": 5}},
                    {"write": {"hello.py": "print('hi')\n"}, "reply": "<promise>done</promise>"},
                ]
            }
        }
    )
    h.wait_event("task.claimed", task_id="hello")
    calls = [e for e in h.events("iteration.finished") if isinstance(e, ev.IterationFinished)]
    assert [(e.cost_usd, e.cost_source) for e in calls] == [
        (0.25, ev.CostSource.AGENT),
        (None, ev.CostSource.NONE),  # tokens, but no model to price them: unknown, not $0
        (None, ev.CostSource.NONE),
    ]
    assert math.isclose(sum(e.cost_usd or 0 for e in calls), 0.25)


STREAM = """\
{"type": "system", "subtype": "init", "model": "claude-haiku-4-5-20251001", "session_id": "s"}
{"type": "assistant", "message": {"id": "m1", "content": [{"type": "text", "text": "<promise>done</promise>"}]}}
{"type": "result", "subtype": "success", "result": "<promise>done</promise>", "usage": {"input_tokens": 2000000, "output_tokens": 100000, "cache_read_input_tokens": NaN}%s}
"""


@pytest.mark.parametrize(
    ("extra", "source", "usd"),
    [
        ("", ev.CostSource.PRICE_TABLE, 2.5),  # 2M in at $1, 0.1M out at $5
        (', "total_cost_usd": 0.75', ev.CostSource.AGENT, 0.75),
        (', "total_cost_usd": -1e300', ev.CostSource.PRICE_TABLE, 2.5),  # refused
    ],
)
def test_a_command_agent_reports_usage_in_stream_json(
    tmp_path: Path, extra: str, source: ev.CostSource, usd: float
) -> None:
    (tmp_path / "out.jsonl").write_text(STREAM % extra)
    runner = make_runner(f"command:cat {tmp_path / 'out.jsonl'}")
    worktree = tmp_path / "wt"
    worktree.mkdir()
    result = runner.run(
        AgentRequest(prompt="go", worktree=worktree, loop="l", task_id="T", iteration=1)
    )
    assert result.failure is None, result.failure_detail
    assert result.model == "claude-haiku-4-5-20251001"
    assert result.tokens == ev.TokenUsage(input_tokens=2_000_000, output_tokens=100_000)
    cost = Pricer().cost(result)
    assert cost.source is source and cost.usd == pytest.approx(usd)
