"""What an agent's reply means, and why a run failed.

`parse_outcome` reads the markers users already know: a `<promise>...</promise>` anywhere
(ralph_loop) or a `PASSED` line (the coding-loops harness) is a CLAIM to verify, never
a verdict; a `BLOCKED: <question>` line asks a person. Precedence when a reply holds
several: promise, then BLOCKED, then PASSED.

`classify_run` turns how a process ended into a typed failure (DESIGN.md invariant 6):
usage limit (with `retry_at` when the agent says when it resets), outage, timeout,
empty reply, agent error. `retry_at_from_headers` reads an API 429's headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from events import FailureKind, IterationOutcome
from loops.runners import AgentResult

__all__ = [
    "Failure",
    "ReplyOutcome",
    "classify_run",
    "detect_outage",
    "detect_usage_limit",
    "outcome_of",
    "parse_outcome",
    "parse_reply",
    "parse_reset",
    "retry_at_from_headers",
]


@dataclass(frozen=True)
class ReplyOutcome:
    """The outcome of one iteration.

    `text` is the claim for CLAIMED (the promise text, or the PASSED line) and the
    question for BLOCKED; empty otherwise.
    """

    kind: IterationOutcome
    text: str = ""
    failure: FailureKind | None = None
    failure_detail: str | None = None


@dataclass(frozen=True)
class Failure:
    """A typed failure of a run, with the reset time of a usage limit when known."""

    kind: FailureKind
    detail: str
    retry_at: datetime | None = None


# --- reply markers ------------------------------------------------------------------

_PROMISE = re.compile(r"<promise>(.*?)</promise>", re.IGNORECASE | re.DOTALL)
_LEAD = r"^[ \t>*_#`~\-+•]*"  # markdown decoration before a marker: "**", "> ", "- ", "## "
_PASSED = re.compile(
    _LEAD
    + r"(?:(?:TEST|TASK|STATUS|RESULT)[ _:]*)?PASSED\b[*_`~]*[ \t]*(?:[:\-\u2013\u2014][ \t]*)?(.*)$",
    re.MULTILINE,
)
_BLOCKED = re.compile(
    _LEAD
    + r"(?:(?:TEST|TASK|STATUS|RESULT)[ _:]*)?(?:BLOCKED\b|Blocked(?=[*_`~]*:))[*_`~]*[ \t]*"
    + r"(?:[:\-\u2013\u2014][ \t]*)?(.*)$",
    re.MULTILINE,
)
_BLOCKED_TAG = re.compile(r"<blocked>(.*?)</blocked>", re.IGNORECASE | re.DOTALL)
_PYTEST_ID = re.compile(r"^\S+::\S+")  # "PASSED tests/x.py::test_y" in a pytest -rA summary
NO_REASON = "the agent said BLOCKED without a reason; see its last reply"


def parse_outcome(reply: str) -> ReplyOutcome:
    """Classify a reply: CLAIMED, BLOCKED (with its question), CONTINUE, or EMPTY_REPLY."""
    if not reply.strip():
        return ReplyOutcome(
            IterationOutcome.FAILED,
            failure=FailureKind.EMPTY_REPLY,
            failure_detail="the agent's reply was empty",
        )
    promise = _PROMISE.search(reply)
    if promise:
        return ReplyOutcome(IterationOutcome.CLAIMED, text=promise.group(1).strip())
    question = _blocked_question(reply)
    if question is not None:
        return ReplyOutcome(IterationOutcome.BLOCKED, text=question)
    for match in _PASSED.finditer(reply):
        rest = match.group(1).strip()
        if _PYTEST_ID.match(rest):
            continue
        return ReplyOutcome(IterationOutcome.CLAIMED, text=match.group(0).strip(" \t>*_#`~-+•"))
    return ReplyOutcome(IterationOutcome.CONTINUE)


parse_reply = parse_outcome


def _blocked_question(reply: str) -> str | None:
    tag = _BLOCKED_TAG.search(reply)
    if tag:
        return tag.group(1).strip() or NO_REASON
    match = _BLOCKED.search(reply)
    if not match:
        return None
    first = match.group(1).strip().strip("*_`~").strip()
    if first:
        return first
    # "BLOCKED" alone on its line: the reason is the paragraph that follows.
    following: list[str] = []
    for line in reply[match.end() :].splitlines():
        if line.strip():
            following.append(line.strip())
        elif following:
            break
    return " ".join(following) or NO_REASON


def outcome_of(result: AgentResult) -> ReplyOutcome:
    """The outcome of a run: its failure if it failed, else what its reply says."""
    if result.failure is not None:
        return ReplyOutcome(
            IterationOutcome.FAILED, failure=result.failure, failure_detail=result.failure_detail
        )
    return parse_outcome(result.reply)


# --- usage limits -------------------------------------------------------------------

# Claude Code's own banners: trusted even when the run "succeeded", because the whole
# reply is the banner ("Claude AI usage limit reached|1762952400", "You've hit your
# limit · resets 7pm (America/Los_Angeles)", "5-hour limit reached ∙ resets 3pm").
_BANNER = re.compile(
    r"^\W*(?:claude(?: ai)? usage limit reached"
    r"|you(?:'|\u2019)ve (?:hit|reached) your (?:\w+ )?limit"
    r"|[\w-]+[- ]hour limit reached"
    r"|(?:weekly|session|opus|sonnet) limit reached"
    r"|claude usage limit reached)",
    re.IGNORECASE,
)
# Looser forms, only believed when the run failed (an agent may write about limits).
_LIMIT = re.compile(
    r"usage limit|rate[ _-]?limit(?:ed|_error| exceeded| reached)?|\b429\b|too many requests"
    r"|(?:hit|reached|exceeded) (?:your|the) (?:\w+ )?limit|[\w-]+[- ]hour limit"
    r"|quota exceeded|insufficient_quota|resource_exhausted|limit will reset",
    re.IGNORECASE,
)
_UNIX_TS = re.compile(r"limit reached\|(\d{9,13})", re.IGNORECASE)
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_CLOCK = re.compile(
    r"(?:reset(?:s|ting)?|available(?: again)?|try again|retry)\s+(?:at\s+|on\s+)?"
    r"(?:(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+"
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:at\s+)?)?"
    r"(?P<h>\d{1,2})(?::(?P<mi>\d{2}))?\s*(?P<ap>[ap]\.?m\.?)?"
    r"(?:\s*\((?P<tz>[A-Za-z][A-Za-z0-9_+\-/]*)\))?",
    re.IGNORECASE,
)
_ISO = re.compile(
    r"(?:reset(?:s|ting)?|available(?: again)?|retry|try again)\s+(?:at\s+|on\s+)?"
    r"(?P<iso>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)",
    re.IGNORECASE,
)
_DURATION = re.compile(
    r"(?:reset(?:s|ting)?|try again|retry(?:ing)?|available(?: again)?|wait)\s+in\s+"
    r"(?P<spec>(?:\d+(?:\.\d+)?\s*(?:hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b[\s,and]*)+)",
    re.IGNORECASE,
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])", re.IGNORECASE)
_RETRY_AFTER = re.compile(r"retry[-_ ]after\W{0,3}(\d+(?:\.\d+)?)", re.IGNORECASE)


def detect_usage_limit(
    text: str, now: datetime | None = None, *, failed: bool = True
) -> Failure | None:
    """A USAGE_LIMIT failure if `text` reports a usage or rate limit, else None.

    With `failed=False` (the run exited cleanly) only Claude Code's own banners count,
    since an agent's reply may well talk about rate limits.
    """
    matched = _BANNER.search(text.strip()) or (failed and _LIMIT.search(text))
    if not matched:
        return None
    line = _line_around(text, matched.start())
    return Failure(FailureKind.USAGE_LIMIT, line, parse_reset(text, now))


def parse_reset(text: str, now: datetime | None = None) -> datetime | None:
    """When a limit resets, as an aware UTC datetime, from the forms agents print.

    Understands `...|<unix-ts>`, `resets 3pm (Europe/London)`, `resets Apr 23 at 4pm`,
    `reset at 2026-01-07T15:00:00Z`, `try again in 2h 30m`, `retry-after: 30`.
    A clock time without a date is the next such time; without a zone, local time.
    """
    now = now or datetime.now(UTC)
    if match := _UNIX_TS.search(text):
        stamp = int(match.group(1))
        return datetime.fromtimestamp(stamp / 1000 if stamp > 10**11 else stamp, UTC)
    if match := _ISO.search(text):
        return _parse_iso(match.group("iso"), now)
    if match := _DURATION.search(text):
        seconds = sum(
            float(n) * {"h": 3600, "m": 60, "s": 1}[u.lower()]
            for n, u in _DURATION_PART.findall(match.group("spec"))
        )
        return now + timedelta(seconds=seconds)
    if match := _RETRY_AFTER.search(text):
        return now + timedelta(seconds=float(match.group(1)))
    for match in _CLOCK.finditer(text):
        if match.group("ap") or match.group("mi"):
            return _clock_time(match, now)
    return None


def _clock_time(match: re.Match[str], now: datetime) -> datetime | None:
    hour = int(match.group("h"))
    minute = int(match.group("mi") or 0)
    ampm = (match.group("ap") or "").lower().replace(".", "")
    if ampm == "pm" and hour < 12:
        hour += 12
    elif ampm == "am" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        return None
    zone = _zone(match.group("tz"))
    local_now = now.astimezone(zone)
    if match.group("mon"):
        month = _MONTHS.index(match.group("mon").lower()[:3]) + 1
        day = int(match.group("day"))
        try:
            when = datetime(local_now.year, month, day, hour, minute, tzinfo=zone)
            if when < local_now - timedelta(days=1):  # "Jan 2" printed in late December
                when = when.replace(year=local_now.year + 1)
        except ValueError:
            return None
    else:
        when = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if when <= local_now:
            when += timedelta(days=1)
    return when.astimezone(UTC)


def _zone(name: str | None) -> tzinfo:
    if name:
        if name.upper() in ("UTC", "GMT", "Z"):
            return UTC
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC


def _parse_iso(value: str, now: datetime) -> datetime | None:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo or UTC)
    return when.astimezone(UTC)


def retry_at_from_headers(
    headers: Mapping[str, str], now: datetime | None = None
) -> datetime | None:
    """When to retry after an API 429: `retry-after`, else the `anthropic-ratelimit-*-reset`s."""
    now = now or datetime.now(UTC)
    lower = {k.lower(): v for k, v in headers.items()}
    if value := lower.get("retry-after"):
        try:
            return now + timedelta(seconds=float(value))
        except ValueError:
            try:
                return parsedate_to_datetime(value).astimezone(UTC)
            except (TypeError, ValueError):
                pass
    if value := lower.get("anthropic-ratelimit-unified-reset"):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError):
            pass
    resets = [
        when
        for key, value in lower.items()
        if key.startswith("anthropic-ratelimit-") and key.endswith("-reset")
        if (when := _parse_iso(value, now)) is not None
    ]
    return max(resets) if resets else None


# --- outages and the rest -----------------------------------------------------------

_OUTAGE = re.compile(
    r"overloaded|\b(?:500|502|503|504|529)\b|internal server error|bad gateway"
    r"|service unavailable|gateway time-?out|\bapi_error\b|ECONNREFUSED|ECONNRESET|ETIMEDOUT"
    r"|ENOTFOUND|EAI_AGAIN|socket hang up|connection (?:error|refused|reset)|fetch failed"
    r"|network error|unable to connect to (?:the )?api|request timed out",
    re.IGNORECASE,
)


_ERROR_REPLY_MAX = 2000


def detect_outage(text: str) -> Failure | None:
    """An OUTAGE failure if `text` reports a 5xx, an overload or a connection error."""
    match = _OUTAGE.search(text)
    if not match:
        return None
    return Failure(FailureKind.OUTAGE, _line_around(text, match.start()))


def classify_run(
    *,
    exit_code: int | None,
    reply: str,
    stderr: str = "",
    timed_out: bool = False,
    timeout_s: float | None = None,
    now: datetime | None = None,
) -> Failure | None:
    """The typed failure of a finished process, or None when it ran fine.

    A non-zero exit that still produced a reply is not a failure (the seed treats its
    output as a normal iteration) unless that output reports a limit or an outage.
    """
    if timed_out:
        limit = f" of {timeout_s:g}s" if timeout_s is not None else ""
        return Failure(
            FailureKind.TIMEOUT,
            f"the agent exceeded its timeout{limit}; its process group was killed",
        )
    failed = exit_code not in (0, None)
    combined = f"{reply}\n{stderr}" if stderr.strip() else reply
    if found := detect_usage_limit(reply, now, failed=failed):
        return found
    if failed:
        if found := detect_usage_limit(combined, now):
            return found
        # A long reply is real work that happens to mention "500"; a short one is the error.
        if len(reply) <= _ERROR_REPLY_MAX and (found := detect_outage(combined)):
            return found
        if not reply.strip():
            tail = stderr.strip().splitlines()[-1:] or ["no output"]
            return Failure(FailureKind.AGENT_ERROR, f"the agent exited {exit_code}: {tail[0]}")
    if not reply.strip():
        return Failure(FailureKind.EMPTY_REPLY, "the agent's reply was empty")
    return None


def _line_around(text: str, pos: int, limit: int = 300) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start : end if end != -1 else len(text)].strip()
    return line[:limit]
