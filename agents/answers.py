"""Reading a person's free-text answer as a decision among a question's options.

"Looks right to me" to a sign-off means approve; "don't merge" means reject. The gate
and the merge queue act on a `decision` only, so an answer that is read as none would
leave its task waiting on a person with no open question. Two readers:

- `read_by_rules(answer, options, kind)`: a small vocabulary with negations ("not ok",
  "doesn't look right", "don't merge"), conservative: mixed signals, a contrast ("ok,
  but ..."), a question back ("ok?") or a negated objection ("not bad") read as None.
  Any other text to a monitor incident (options retry/skip/abort) means retry, with
  the text as the hint: that is what its question says.
- `AnthropicAnswerReader`: the judge model on the Messages API (`anthropic` SDK;
  `ANTHROPIC_BASE_URL`, `ANTHROPIC_API_KEY`, `LOOPS_JUDGE_MODEL` honoured), asked only
  when the rules cannot tell. A failed call reads as None: the question is asked again.

A decision is always one of the question's options (`fit`): "ok" to a merge question
(retry/skip) is retry; "try again" to a sign-off (approve/reject) is reject, with the
text going back to the loop as the hint.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Protocol

import anthropic

from events import Decision, EscalationKind
from infra.model import DEFAULT_MODEL, model_client

log = logging.getLogger("loops.agents")

# Phrases (token sequences) and the decision each one means on its own.
_PHRASES: dict[Decision, tuple[str, ...]] = {
    Decision.APPROVE: (
        "approve", "approved", "approves", "apply", "yes", "y", "yep", "yeah", "yup", "ok", "okay",
        "k", "lgtm", "accept", "accepted", "sure", "agreed", "confirmed", "correct", "right",
        "good", "fine", "great", "perfect", "ship it", "merge it", "merge", "go ahead",
        "go for it", "sounds good", "looks good", "looks right", "looks fine", "looks ok",
        "looks okay", "looks correct", "looks great", "look good", "look right", "look fine",
        "seems right", "seems fine", "seems good", "seems ok", "seems correct", "all good",
        "good to go", "works for me", "it works", "that works", "no problem", "no problems",
        "no issues", "thumbs up",
    ),
    Decision.REJECT: (
        "reject", "rejected", "no", "n", "nope", "nah", "deny", "denied", "wrong",
        "incorrect", "bad", "broken", "looks wrong", "looks bad", "looks off", "needs work",
        "thumbs down",
    ),
    Decision.RETRY: ("retry", "try again", "again", "redo", "rerun", "re run", "one more time"),
    Decision.SKIP: ("skip", "skip it", "move on", "leave it", "drop it", "give up"),
    Decision.ABORT: ("abort", "stop", "stop the loop", "halt", "cancel"),
}  # fmt: skip
_TABLE = sorted(
    ((tuple(p.split()), d) for d, ps in _PHRASES.items() for p in ps), key=lambda x: -len(x[0])
)
_NEGATIONS = {"not", "never", "dont", "cannot", "nothing", "nobody"}
_CONTRAST = {"but", "however", "except", "although", "though", "unless"}
_CONTRACTIONS = (
    (r"\b(do|does|did|is|are|was|were|should|would|could|has|have)n'?t\b", r"\1 not"),
    (r"\bcan'?t\b", "can not"),
    (r"\bwon'?t\b", "will not"),
    (r"\bain'?t\b", "is not"),
)
_SIGNS = (("👍", " thumbs up "), ("👎", " thumbs down "), ("+1", " thumbs up "))


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    for sign, word in _SIGNS:
        text = text.replace(sign, word)
    text = re.sub(r"(^|\s)-1\b", " thumbs down ", text)
    for pattern, repl in _CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    text = text.replace("?", " ? ")
    return re.findall(r"[a-z0-9]+|\?", text.replace("'", ""))


def intents(answer: str) -> set[Decision] | None:
    """The decisions `answer` names; None when it cannot be read by rules at all (a
    contrast, a question back, a negated objection or retry)."""
    toks = _tokens(answer)
    if not toks or "?" in toks or _CONTRAST & set(toks):
        return None
    found: set[Decision] = set()
    i = 0
    while i < len(toks):
        for phrase, decision in _TABLE:
            if tuple(toks[i : i + len(phrase)]) == phrase:
                negated = bool(_NEGATIONS & set(toks[max(0, i - 3) : i]))
                if negated and decision != Decision.APPROVE:
                    return None  # "not bad", "don't retry": too subtle for rules
                found.add(Decision.REJECT if negated else decision)
                i += len(phrase)
                break
        else:
            i += 1
    return found


def fit(decision: Decision, options: Sequence[str]) -> Decision | None:
    """`decision` as one of `options` (the question's), or None if it is not one."""
    opts = {o.strip().lower() for o in options}
    if decision.value in opts:
        return decision
    if decision == Decision.APPROVE and "retry" in opts:
        return Decision.RETRY  # "ok" to "answer retry or skip"
    if decision == Decision.RETRY and "reject" in opts:
        return Decision.REJECT  # try again: the text goes back to the loop as the hint
    if decision == Decision.REJECT and "skip" in opts and "retry" in opts:
        return Decision.SKIP  # "don't merge it" to "answer retry or skip"
    return None


def decision_options(options: Sequence[str]) -> list[Decision]:
    """The options of a question that are decisions (others are not read)."""
    values = {d.value: d for d in Decision}
    return [values[o.strip().lower()] for o in options if o.strip().lower() in values]


def read_by_rules(
    answer: str, options: Sequence[str], kind: EscalationKind | None = None
) -> Decision | None:
    """The decision `answer` means among `options`, by rules; None: cannot tell."""
    if not decision_options(options):
        return None
    found = intents(answer)
    if found is not None and len(found) == 1:
        decided = fit(found.pop(), options)
        if decided is not None:
            return decided
    if kind == EscalationKind.INCIDENT and "retry" in {o.strip().lower() for o in options}:
        return Decision.RETRY  # "retry, or text for the loop's next prompt": a hint
    return None


def is_bare(answer: str) -> bool:
    """The answer is only a decision word or two (no hint worth passing on)."""
    return len(_tokens(answer)) <= 3


class AnswerReader(Protocol):
    """Reads a free-text answer as one of the question's options (None: cannot tell)."""

    name: str

    def read(self, question: str, options: Sequence[str], answer: str) -> Decision | None: ...


SYSTEM = (
    "A person answered a question from an unattended coding system. Decide which of the "
    "question's options their answer means. Reply with exactly one word: one of the "
    "options, or unclear if the answer does not clearly choose one. Negations matter: "
    "'not ok' and 'don't merge' do not approve."
)


class AnthropicAnswerReader:
    """An `AnswerReader` on the Anthropic Messages API (the judge model)."""

    def __init__(
        self,
        *,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 1,
    ) -> None:
        self.model = model or DEFAULT_MODEL
        self.name = f"model:{self.model}"
        self.client = model_client(
            api_key=api_key, base_url=base_url, timeout_s=timeout_s, max_retries=max_retries
        )

    def close(self) -> None:
        self.client.close()

    def read(self, question: str, options: Sequence[str], answer: str) -> Decision | None:
        prompt = (
            f"Question:\n{question}\n\nOptions: {', '.join(options)}\n\n"
            f"The person's answer:\n{answer}\n\nWhich option does the answer mean?"
        )
        try:
            reply = self.client.messages.create(
                model=self.model,
                max_tokens=16,
                system=SYSTEM,
                messages=[{"role": "user", "content": prompt}],
            )
        except anthropic.APIError as exc:  # includes timeouts and connection errors
            log.warning("reading an answer with %s failed: %s", self.model, type(exc).__name__)
            return None
        text = "".join(getattr(block, "text", "") for block in reply.content)
        words = re.findall(r"[a-z]+", text.lower())
        if not words:
            return None
        values = {d.value: d for d in Decision}
        chosen = values.get(words[0])
        return None if chosen is None else fit(chosen, options)


def derived_id(*parts: str) -> str:
    """A stable event id from `parts`: what is published again for the same cause has
    the same id, so consumers (who dedupe on ids) take it once."""
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:32]
