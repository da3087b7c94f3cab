"""Notifications to people: JSON POSTed to configured URLs, signed, retried.

Each request carries `X-Loops-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact
body with the shared secret, and `X-Loops-Delivery`, an id that stays the same across
retries (so a receiver can drop duplicates). Retries back off exponentially, a bounded
number of times; every call has a timeout. The secret never leaves this module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from events import Severity, new_id
from events.view.escalations import SEVERITY_RANK

log = logging.getLogger("loops.agents")

SIGNATURE_HEADER = "X-Loops-Signature"
DELIVERY_HEADER = "X-Loops-Delivery"
Payload = Mapping[str, Any]


class Notifier(Protocol):
    """Sends one notification to people (webhooks, chat, mail ...)."""

    def notify(self, payload: Payload) -> None: ...


def sign(secret: str | bytes, body: bytes) -> str:
    """The signature header's value for `body`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """For receivers: whether `header` is the signature of `body` (constant time)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: str = field(repr=False)
    min_severity: Severity = Severity.LOW


@dataclass(frozen=True)
class Delivery:
    """What became of one notification to one URL."""

    url: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 425, 429)


class WebhookNotifier:
    """POSTs notifications to each target; synchronous, bounded in time."""

    def __init__(
        self,
        targets: Sequence[WebhookTarget],
        *,
        timeout_s: float = 5.0,
        tries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.targets = list(targets)
        self.timeout_s = timeout_s
        self.tries = max(1, tries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep

    def notify(self, payload: Payload) -> None:
        self.deliver(payload)

    def deliver(self, payload: Payload) -> list[Delivery]:
        """Send `payload` to every target whose severity threshold it meets."""
        severity = payload.get("severity")
        rank = SEVERITY_RANK.get(Severity(severity), 0) if severity else 0
        body = json.dumps(dict(payload), sort_keys=True, default=str).encode()
        delivery_id = new_id()
        return [
            self._post(t, body, delivery_id)
            for t in self.targets
            if rank >= SEVERITY_RANK[t.min_severity]
        ]

    def _post(self, target: WebhookTarget, body: bytes, delivery_id: str) -> Delivery:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "coding-loops",
            SIGNATURE_HEADER: sign(target.secret, body),
            DELIVERY_HEADER: delivery_id,
        }
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self.tries + 1):
            request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    status = int(response.status)
                return Delivery(target.url, True, attempt, status)
            except urllib.error.HTTPError as exc:
                status, error = exc.code, f"HTTP {exc.code}"
                exc.close()
                if not _retryable(exc.code):
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                status, error = None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt < self.tries:
                self.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
        log.warning("webhook %s gave up after %d attempt(s): %s", target.url, attempt, error)
        return Delivery(target.url, False, attempt, status, error)


class BackgroundNotifier:
    """Runs another notifier on a thread, so a slow webhook never holds up the agent.
    Notifications queued when the process dies are lost; the escalations are not."""

    def __init__(self, inner: Notifier, max_queue: int = 1000) -> None:
        self.inner = inner
        self._queue: queue.Queue[Payload | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def notify(self, payload: Payload) -> None:
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            log.warning("notification queue full; dropped a notification")

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            try:
                self.inner.notify(payload)
            except Exception:  # one broken notification must not stop the later ones
                log.exception("notifier failed")
            finally:
                self._queue.task_done()

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (up to `timeout_s`), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)
