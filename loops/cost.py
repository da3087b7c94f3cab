"""The cost of one agent call, and where it came from.

In order: the agent's own report (Claude Code's `total_cost_usd`), checked by
`events.checked_cost`; else its tokens times the model's price (`events.DEFAULT_PRICES`,
overridden by `prices` in project.json); else unknown, never a silent $0. The worker
records the figure and its source in `iteration.finished` and logs one cost line."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from events import (
    DEFAULT_PRICES,
    CostSource,
    ModelPrice,
    checked_cost,
    model_price,
    price_tokens,
)
from loops.runners import AgentResult

__all__ = ["Cost", "Pricer"]

log = logging.getLogger("loops.cost")


@dataclass(frozen=True)
class Cost:
    """An iteration's cost in US dollars (None: unknown), its source, and the model it
    was priced as."""

    usd: float | None
    source: CostSource
    model: str | None = None

    def line(self, result: AgentResult) -> str:
        """The terminal's cost line for this call."""
        t = result.tokens
        tokens = f"{t.input_tokens + t.cache_read_tokens + t.cache_write_tokens} in, {t.output_tokens} out"
        if self.source is CostSource.AGENT:
            return f"Cost: ${self.usd:.4f} (reported by the agent; {tokens} tokens)"
        if self.source is CostSource.PRICE_TABLE:
            return f"Cost: ${self.usd:.4f} (price table, {self.model}; {tokens} tokens)"
        return f"Cost: unknown (no cost reported and no price for it; {tokens} tokens)"


class Pricer:
    """Prices agent calls with one table (the defaults, then the operator's entries).
    Warns once per model it has no price for, and whenever an agent's report is refused."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self.prices: dict[str, ModelPrice] = {**DEFAULT_PRICES, **(prices or {})}
        self._warned: set[str | None] = set()

    def cost(self, result: AgentResult, model: str | None = None) -> Cost:
        """The cost of the call `result` reports; `model` is the configured model, for
        an agent that does not say which one it ran."""
        model = result.model or model
        reported = checked_cost(result.cost_usd)
        if reported.usd is not None:
            return Cost(reported.usd, CostSource.AGENT, model)
        if result.tokens.total == 0:
            if reported.problem:
                log.warning(
                    "%s: not trusted, and no tokens to price: cost unknown", reported.problem
                )
            return Cost(None, CostSource.NONE, model)
        price = model_price(model, self.prices)
        if reported.problem:
            fallback = "priced from the table instead" if price else "cost unknown"
            log.warning("%s: not trusted; %s", reported.problem, fallback)
        if price is not None:
            return Cost(price_tokens(result.tokens, price), CostSource.PRICE_TABLE, model)
        if model not in self._warned:
            self._warned.add(model)
            if model is None:
                log.warning(
                    "the agent reported tokens but no cost and no model: its cost is counted "
                    "as unknown; set `model` in the loop's config.json to price it"
                )
            else:
                log.warning(
                    "no price for model %r: its cost is counted as unknown; add it to "
                    '`prices` in project.json, e.g. "prices": {"%s": {"input": 3, '
                    '"output": 15}} (US dollars per million tokens)',
                    model,
                    model,
                )
        return Cost(None, CostSource.NONE, model)
