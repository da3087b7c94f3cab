"""What a reply means (claims, questions) and how a failed run is typed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import FailureKind, IterationOutcome
from loops.runners import AgentResult
from loops.runners.outcome import (
    NO_REASON,
    classify_run,
    detect_usage_limit,
    outcome_of,
    parse_outcome,
    parse_reset,
    retry_at_from_headers,
)

NOW = datetime(2026, 1, 7, 9, 15, tzinfo=UTC)
C, B, K = IterationOutcome.CLAIMED, IterationOutcome.BLOCKED, IterationOutcome.CONTINUE


@pytest.mark.parametrize(
    ("reply", "kind", "text"),
    [
        ("All done.\n<promise>all tasks complete</promise>", C, "all tasks complete"),
        ("<PROMISE>\n  multi\n  line\n</PROMISE> trailing", C, "multi\n  line"),
        ("inline <promise>x</promise> in prose", C, "x"),
        ("<promise></promise>", C, ""),
        ("Work done.\nPASSED", C, "PASSED"),
        ("PASSED: CP-SPEC-005 implemented", C, "PASSED: CP-SPEC-005 implemented"),
        ("**PASSED**", C, "PASSED"),
        ("TEST PASSED", C, "TEST PASSED"),
        ("Status: PASSED", K, ""),  # lower-case "Status" is prose, not the marker
        ("STATUS: PASSED", C, "STATUS: PASSED"),
        ("BLOCKED: which database should I use?", B, "which database should I use?"),
        ("I tried.\n**BLOCKED**: need the API key for staging", B, "need the API key for staging"),
        ("BLOCKED - no access to the repo", B, "no access to the repo"),
        ("Blocked: the spec contradicts itself", B, "the spec contradicts itself"),
        (
            "BLOCKED\n\nShould the endpoint be public?\nOr private?\n\nthanks",
            B,
            "Should the endpoint be public? Or private?",
        ),
        ("BLOCKED", B, NO_REASON),
        ("<blocked>pick a licence</blocked>", B, "pick a licence"),
        ("BLOCKED: need creds\n<promise>done</promise>", C, "done"),  # promise wins
        ("PASSED\nBLOCKED: one question", B, "one question"),  # a question beats PASSED
        ("tests/test_app.py::test_health PASSED [100%]", K, ""),
        ("PASSED tests/test_app.py::test_health", K, ""),  # pytest -rA summary line
        ("3 passed in 0.12s", K, ""),
        ("the build is blocked by flaky tests", K, ""),
        ("Still working on the parser.", K, ""),
    ],
)
def test_parse_outcome_table(reply: str, kind: IterationOutcome, text: str) -> None:
    outcome = parse_outcome(reply)
    assert outcome.kind is kind
    assert outcome.text == text
    assert outcome.failure is None


@pytest.mark.parametrize("reply", ["", "   \n\t "])
def test_empty_reply_is_a_failure(reply: str) -> None:
    outcome = parse_outcome(reply)
    assert outcome.kind is IterationOutcome.FAILED
    assert outcome.failure is FailureKind.EMPTY_REPLY


def test_outcome_of_prefers_the_runs_failure() -> None:
    failed = AgentResult(reply="<promise>x</promise>", failure=FailureKind.TIMEOUT)
    assert outcome_of(failed).kind is IterationOutcome.FAILED
    assert outcome_of(failed).failure is FailureKind.TIMEOUT
    assert outcome_of(AgentResult(reply="<promise>x</promise>")).kind is C


# --- usage limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Claude AI usage limit reached|1767779100", datetime(2026, 1, 7, 9, 45, tzinfo=UTC)),
        ("Claude AI usage limit reached|1767779100000", datetime(2026, 1, 7, 9, 45, tzinfo=UTC)),
        ("5-hour limit reached ∙ resets 3pm (UTC)", datetime(2026, 1, 7, 15, 0, tzinfo=UTC)),
        (
            "You've hit your limit · resets 7pm (America/Los_Angeles)",
            datetime(2026, 1, 8, 3, 0, tzinfo=UTC),
        ),
        ("You've hit your limit · resets 9am (UTC)", datetime(2026, 1, 8, 9, 0, tzinfo=UTC)),
        (
            "You've hit your limit · resets Apr 23 at 4pm (America/Recife)",
            datetime(2026, 4, 23, 19, 0, tzinfo=UTC),
        ),
        (
            "You've hit your limit · resets Jan 21, 5am (Etc/GMT-9)",
            datetime(2026, 1, 20, 20, 0, tzinfo=UTC),
        ),
        (
            "Claude usage limit reached. Your limit will reset at 10:30am (Europe/London).",
            datetime(2026, 1, 7, 10, 30, tzinfo=UTC),
        ),
        ("rate limited, try again in 2h 30m", NOW + timedelta(hours=2, minutes=30)),
        ("Retrying in 90 seconds", NOW + timedelta(seconds=90)),
        ("limit resets at 2026-01-07T12:00:00Z", datetime(2026, 1, 7, 12, tzinfo=UTC)),
        ("retry-after: 30", NOW + timedelta(seconds=30)),
        ("usage limit reached", None),
    ],
)
def test_parse_reset(text: str, expected: datetime | None) -> None:
    assert parse_reset(text, NOW) == expected


def test_reset_without_a_zone_is_local_time() -> None:
    when = parse_reset("resets 11pm", NOW)
    assert when is not None
    local = when.astimezone(datetime.now().astimezone().tzinfo)
    assert (local.hour, local.minute) == (23, 0)
    assert NOW < when <= NOW + timedelta(days=1)


def test_usage_banner_counts_even_on_a_clean_exit() -> None:
    found = classify_run(exit_code=0, reply="Claude AI usage limit reached|1767779100", now=NOW)
    assert found is not None and found.kind is FailureKind.USAGE_LIMIT
    assert found.retry_at == datetime(2026, 1, 7, 9, 45, tzinfo=UTC)


def test_talk_about_rate_limits_in_a_good_reply_is_not_a_limit() -> None:
    reply = "Implemented rate limit exceeded handling: the API now answers 429."
    assert classify_run(exit_code=0, reply=reply, now=NOW) is None
    assert detect_usage_limit(reply, NOW, failed=False) is None


def test_usage_limit_on_stderr_of_a_failed_run() -> None:
    found = classify_run(
        exit_code=1, reply="", stderr="Error: 429 rate_limit_error, retry after 12", now=NOW
    )
    assert found is not None and found.kind is FailureKind.USAGE_LIMIT
    assert found.retry_at == NOW + timedelta(seconds=12)


def test_retry_at_from_headers() -> None:
    assert retry_at_from_headers({"Retry-After": "20"}, NOW) == NOW + timedelta(seconds=20)
    assert retry_at_from_headers({"retry-after": "Wed, 07 Jan 2026 10:00:00 GMT"}, NOW) == datetime(
        2026, 1, 7, 10, tzinfo=UTC
    )
    assert retry_at_from_headers(
        {"anthropic-ratelimit-unified-reset": "1767779100"}, NOW
    ) == datetime(2026, 1, 7, 9, 45, tzinfo=UTC)
    assert retry_at_from_headers(
        {
            "anthropic-ratelimit-requests-reset": "2026-01-07T09:16:00Z",
            "anthropic-ratelimit-tokens-reset": "2026-01-07T09:20:00Z",
        },
        NOW,
    ) == datetime(2026, 1, 7, 9, 20, tzinfo=UTC)
    assert retry_at_from_headers({}, NOW) is None


# --- other failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}',
        "API Error: 500 Internal server error",
        "Error: connect ECONNREFUSED 127.0.0.1:443",
        "API Error: Connection error.",
        "503 Service Unavailable",
    ],
)
def test_outage(text: str) -> None:
    found = classify_run(exit_code=1, reply="", stderr=text, now=NOW)
    assert found is not None and found.kind is FailureKind.OUTAGE
    assert found.detail


def test_timeout_crash_empty_and_fine() -> None:
    timeout = classify_run(exit_code=None, reply="partial", timed_out=True, timeout_s=2)
    assert timeout is not None and timeout.kind is FailureKind.TIMEOUT
    assert "2s" in timeout.detail
    crash = classify_run(exit_code=3, reply="", stderr="Traceback\nKeyError: 'x'")
    assert crash is not None and crash.kind is FailureKind.AGENT_ERROR
    assert "KeyError" in crash.detail and "3" in crash.detail
    empty = classify_run(exit_code=0, reply="  \n")
    assert empty is not None and empty.kind is FailureKind.EMPTY_REPLY
    # The seed treats the output of a non-zero exit as a normal iteration.
    assert classify_run(exit_code=1, reply="I changed app.py") is None
    assert classify_run(exit_code=0, reply="done") is None


def test_zone_names_from_the_banners_exist() -> None:
    for name in ("America/Los_Angeles", "America/Recife", "Etc/GMT-9", "Europe/London"):
        ZoneInfo(name)


@given(st.text(max_size=2000))
def test_parsers_never_raise(reply: str) -> None:
    outcome = parse_outcome(reply)
    assert outcome.kind in IterationOutcome
    parse_reset(reply, NOW)
    classify_run(exit_code=1, reply=reply, stderr=reply, now=NOW)


@given(
    st.lists(
        st.sampled_from(["resets ", "in ", "1h", " ", "2m", "and", ",", "5", "pm", "("]),
        max_size=400,
    )
)
def test_reset_parser_handles_repetitive_input(parts: list[str]) -> None:
    """Repetitive near-matches (the shape that makes regexes backtrack) still parse."""
    text = "".join(parts) + "!"
    parse_reset(text, NOW)
    detect_usage_limit(text, NOW)
