"""What an agent call cost: the price table, the cost source, and the one check of a
figure an agent reported.

An agent's own report of its cost or tokens is untrusted input (DESIGN.md invariant 8):
`checked_cost` and `checked_tokens` are the one place such a figure is accepted,
refused or clamped, for every reader (the cost of an iteration, budgets).

Prices are US dollars per million tokens. The defaults are the list prices of the
Claude models the runners use; a project overrides or adds models with `prices` in
`project.json` (`ProjectConfig.prices`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum

from pydantic import Field

from events.envelope import Frozen
from events.types import TokenUsage

__all__ = [
    "DEFAULT_PRICES",
    "MAX_CALL_COST_USD",
    "MAX_CALL_TOKENS",
    "CheckedCost",
    "CostSource",
    "ModelPrice",
    "Receipt",
    "checked_cost",
    "checked_tokens",
    "model_price",
    "price_tokens",
]

MAX_CALL_COST_USD = 1000.0  # one agent call reporting more than this is not believed
MAX_CALL_TOKENS = 10**9  # nor a token count above this (any one kind)


class CostSource(StrEnum):
    """Where an iteration's `cost_usd` came from."""

    AGENT = "agent"  # the agent's own report (Claude Code's `total_cost_usd`)
    PRICE_TABLE = "price_table"  # its tokens times the model's prices
    NONE = "none"  # unknown: no report, and no tokens or no price for the model


class ModelPrice(Frozen):
    """US dollars per million tokens of one model."""

    input: float = Field(ge=0, allow_inf_nan=False, description="per million input tokens")
    output: float = Field(ge=0, allow_inf_nan=False, description="per million output tokens")
    cache_read: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="per million cache-read tokens"
    )
    cache_write: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="per million cache-write tokens"
    )


def _p(input: float, output: float) -> ModelPrice:
    # Anthropic's list prices: cache reads at 0.1x input, 5-minute cache writes at 1.25x.
    return ModelPrice(input=input, output=output, cache_read=input * 0.1, cache_write=input * 1.25)


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "claude-opus-4-5": _p(5.0, 25.0),
    "claude-opus-4-1": _p(15.0, 75.0),
    "claude-opus-4": _p(15.0, 75.0),
    "claude-sonnet-4-6": _p(3.0, 15.0),
    "claude-sonnet-4-5": _p(3.0, 15.0),
    "claude-sonnet-4": _p(3.0, 15.0),
    "claude-3-7-sonnet": _p(3.0, 15.0),
    "claude-3-5-sonnet": _p(3.0, 15.0),
    "claude-haiku-4-5": _p(1.0, 5.0),
    "claude-3-5-haiku": _p(0.8, 4.0),
    "claude-3-opus": _p(15.0, 75.0),
    "claude-3-haiku": _p(0.25, 1.25),
}


def model_price(model: str | None, table: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of `model`: its exact entry, else the longest entry it starts with
    followed by `-` (a dated id such as `claude-sonnet-4-5-20250929`), else None."""
    if not model:
        return None
    if model in table:
        return table[model]
    best = max((k for k in table if model.startswith(f"{k}-")), key=len, default=None)
    return table[best] if best is not None else None


def price_tokens(tokens: TokenUsage, price: ModelPrice) -> float:
    """The cost in US dollars of `tokens` at `price`."""
    return (
        math.fsum(
            (
                tokens.input_tokens * price.input,
                tokens.output_tokens * price.output,
                tokens.cache_read_tokens * price.cache_read,
                tokens.cache_write_tokens * price.cache_write,
            )
        )
        / 1_000_000
    )


class CheckedCost(Frozen):
    """A reported cost after `checked_cost`: the value to trust (None: none), and the
    one line saying why a figure was refused."""

    usd: float | None
    problem: str | None = None


def checked_cost(reported: object) -> CheckedCost:
    """An agent-reported cost in US dollars, checked: a number that is finite, not
    negative and at most `MAX_CALL_COST_USD` is kept; anything else is refused (None)
    with the reason, so the caller falls back to the price table and says so."""
    if reported is None:
        return CheckedCost(usd=None)
    if isinstance(reported, bool) or not isinstance(reported, int | float):
        return CheckedCost(usd=None, problem=f"reported cost {reported!r} is not a number")
    value = float(reported)
    if not math.isfinite(value):
        return CheckedCost(usd=None, problem=f"reported cost {value} is not a finite number")
    if value < 0:
        return CheckedCost(usd=None, problem=f"reported cost {value} is negative")
    if value > MAX_CALL_COST_USD:
        return CheckedCost(
            usd=None,
            problem=f"reported cost ${value:g} for one call is above ${MAX_CALL_COST_USD:g}",
        )
    return CheckedCost(usd=value)


def checked_tokens(reported: object) -> int:
    """An agent-reported token count, clamped to 0..`MAX_CALL_TOKENS` (0 when it is not
    a finite number)."""
    if isinstance(reported, bool) or not isinstance(reported, int | float):
        return 0
    if isinstance(reported, float) and not math.isfinite(reported):
        return 0
    return min(max(int(reported), 0), MAX_CALL_TOKENS)


class Receipt(Frozen):
    """What one merged task cost, summed over every agent call on it (a pure fold of
    the task's events: `events.receipts`). The failed part is every call but the one
    whose claim merged: calls whose claims were rejected and calls that ended
    without a claim."""

    task_id: str
    commit: str  # the verified commit that merged
    agent_calls: int = 0
    tokens: TokenUsage = TokenUsage()
    cost_usd: float = 0.0  # the calls whose cost is known
    uncosted_calls: int = 0  # calls of unknown cost (not counted as $0)
    wall_time_s: float = 0.0  # the agent calls' durations
    verification_runs: int = 0
    attempts: int = 0
    failed_calls: int = 0
    failed_cost_usd: float = 0.0

    @property
    def tokens_in(self) -> int:
        t = self.tokens
        return t.input_tokens + t.cache_read_tokens + t.cache_write_tokens

    @property
    def tokens_out(self) -> int:
        return self.tokens.output_tokens
