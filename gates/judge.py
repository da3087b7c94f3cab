"""A model judges natural-language criteria, separately from the worker that claimed them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from events import Criterion, CriterionResult
from gates import Judgement
from gates.errors import JudgeError
from infra.model import DEFAULT_MODEL, model_client

_VERDICT = re.compile(r"[\W_]*(PASS|FAIL)\b", re.IGNORECASE)

_SYSTEM = (
    "You are the verification gate of a coding system. An agent claims that a change "
    "satisfies an acceptance criterion. Judge only from the evidence given: the diff and "
    "the output of the automated checks. Be strict: when the evidence does not show that "
    "the criterion holds, it fails. Answer with PASS or FAIL on the first line, then one "
    "or two sentences of reason."
)


def _prompt(criterion: Criterion, diff: str, script_results: Sequence[CriterionResult]) -> str:
    description = getattr(criterion.check, "description", "")
    checks = "\n".join(
        f"- {r.criterion}: {'passed' if r.passed else 'FAILED'} (`{r.command}`)\n"
        f"{r.output_tail[-1500:]}"
        for r in script_results
    )
    return (
        f"Criterion: {criterion.criterion}\n"
        f"How to check it: {description}\n\n"
        f"Automated checks on the same commit:\n{checks or '(none)'}\n\n"
        f"The change (git diff against main):\n{diff}\n"
    )


def parse_verdict(text: str) -> Judgement:
    """PASS/FAIL on the first non-empty line; anything else is an unreadable reply."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise JudgeError("empty reply from the judge")
    match = _VERDICT.match(lines[0])
    reason = " ".join(lines[1:]) or lines[0]
    if match:
        return Judgement(match.group(1).upper() == "PASS", reason)
    raise JudgeError(f"unreadable verdict: {lines[0][:80]!r}")


class AnthropicJudge:
    """A `Judge` on the Messages API (`infra.model`), with the key and base URL of the
    settings (`app.compose.make_judge`)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        max_tokens: int = 400,
        client: Any = None,
    ) -> None:
        self.name = model
        self.model = model
        self.max_tokens = max_tokens
        self._client = client or model_client(
            api_key=api_key, base_url=base_url, timeout_s=timeout_s, max_retries=max_retries
        )

    def judge(
        self, criterion: Criterion, diff: str, script_results: Sequence[CriterionResult]
    ) -> Judgement:
        import anthropic

        try:
            reply = self._client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=_SYSTEM,
                messages=[{"role": "user", "content": _prompt(criterion, diff, script_results)}],
            )
        except anthropic.APIError as exc:
            raise JudgeError(
                f"judge {self.model} failed: {type(exc).__name__}", self.name
            ) from None
        text = "".join(getattr(block, "text", "") for block in reply.content)
        try:
            return parse_verdict(text)
        except JudgeError as exc:
            raise JudgeError(exc.reason, self.name) from None

    def close(self) -> None:
        self._client.close()
