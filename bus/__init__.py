"""The bus: typed events over one Redis stream, consumer groups, ack, reclaim, dead
letters, replay; the connection settings. See README.md. (The embedded server a
`loops up` starts is `infra.embedded`.)

Imports `events` only. Nothing connects at import time: clients are passed in."""

from bus.api import Bus, Handler, Subscription
from bus.consumer import RedisSubscription, SubscriptionStats
from bus.deadletter import DeadLetter, read_dead_letters
from bus.idempotency import Dedupe, Idempotency, Window
from bus.ledger import PassedLedger
from bus.router import Inbox, Router, router_group
from bus.settings import CONNECTION_ERRORS, BusSettings, TrimPolicy, connect
from bus.streams import RedisBus, stream_id

__all__ = [
    "CONNECTION_ERRORS",
    "Bus",
    "BusSettings",
    "DeadLetter",
    "Dedupe",
    "Handler",
    "Idempotency",
    "Inbox",
    "PassedLedger",
    "RedisBus",
    "RedisSubscription",
    "Router",
    "Subscription",
    "SubscriptionStats",
    "TrimPolicy",
    "Window",
    "connect",
    "read_dead_letters",
    "router_group",
    "stream_id",
]
