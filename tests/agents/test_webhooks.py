"""Webhooks: signed JSON, checked by a receiving server on 127.0.0.1; retries."""

from __future__ import annotations

import socket

from agents.webhooks import BackgroundNotifier, WebhookNotifier, WebhookTarget, sign, verify
from events import Severity
from tests.agents.webhook_server import Receiver, webhook_server
from tests.conftest import wait_until

SECRET = "s3cret-for-tests"


def test_signature_round_trip() -> None:
    body = b'{"a": 1}'
    header = sign(SECRET, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify("other", body, header)
    assert not verify(SECRET, body, None)


def test_the_receiver_checks_the_signature() -> None:
    with webhook_server(Receiver(SECRET)) as rx:
        good = WebhookNotifier([WebhookTarget(rx.url, SECRET)], sleep=lambda s: None)
        [ok] = good.deliver({"event": "escalation.raised", "severity": "high", "question": "?"})
        assert ok.ok and ok.status == 200 and ok.attempts == 1
        assert rx.received == [{"event": "escalation.raised", "severity": "high", "question": "?"}]
        bad = WebhookNotifier([WebhookTarget(rx.url, "wrong")], sleep=lambda s: None)
        [no] = bad.deliver({"event": "x"})
        assert not no.ok and no.status == 401 and no.attempts == 1  # a 4xx is not retried
        assert rx.rejected == 1


def test_retries_on_500_with_exponential_backoff() -> None:
    sleeps: list[float] = []
    with webhook_server(Receiver(SECRET, fail_first=2)) as rx:
        notifier = WebhookNotifier(
            [WebhookTarget(rx.url, SECRET)], backoff_s=0.5, tries=4, sleep=sleeps.append
        )
        [ok] = notifier.deliver({"event": "e"})
        assert ok.ok and ok.attempts == 3
        assert sleeps == [0.5, 1.0]
        assert len(rx.received) == 1
        assert len(set(rx.deliveries)) == 1


def test_gives_up_after_the_bounded_tries() -> None:
    sleeps: list[float] = []
    with webhook_server(Receiver(SECRET, fail_first=100)) as rx:
        notifier = WebhookNotifier(
            [WebhookTarget(rx.url, SECRET)],
            tries=5,
            backoff_s=1,
            max_backoff_s=3,
            sleep=sleeps.append,
        )
        [res] = notifier.deliver({"event": "e"})
        assert not res.ok and res.attempts == 5 and res.status == 500
        assert sleeps == [1, 2, 3, 3]


def test_unreachable_url_times_out_and_gives_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    notifier = WebhookNotifier(
        [WebhookTarget(f"http://127.0.0.1:{port}/", SECRET)],
        timeout_s=1,
        tries=2,
        sleep=lambda s: None,
    )
    [res] = notifier.deliver({"event": "e"})
    assert not res.ok and res.attempts == 2 and res.error


def test_min_severity_filters_targets() -> None:
    with webhook_server(Receiver(SECRET)) as rx:
        notifier = WebhookNotifier([WebhookTarget(rx.url, SECRET, min_severity=Severity.HIGH)])
        assert notifier.deliver({"severity": "low"}) == []
        assert len(notifier.deliver({"severity": "critical"})) == 1


def test_background_notifier_delivers_off_thread() -> None:
    with webhook_server(Receiver(SECRET)) as rx:
        bg = BackgroundNotifier(WebhookNotifier([WebhookTarget(rx.url, SECRET)]))
        bg.notify({"event": "one"})
        bg.notify({"event": "two"})
        wait_until(lambda: len(rx.received) == 2)
        bg.close()
        assert [r["event"] for r in rx.received] == ["one", "two"]
