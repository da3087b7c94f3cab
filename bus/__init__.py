"""The bus: typed events over one Redis stream, consumer groups, ack, reclaim, dead
letters, replay; the connection settings and the embedded server. See README.md.

Imports `events` only. Nothing connects at import time: clients are passed in."""

from bus.api import Bus, Handler, Subscription
from bus.consumer import RedisSubscription, SubscriptionStats
from bus.deadletter import DeadLetter, read_dead_letters
from bus.embedded import (
    EmbeddedServer,
    ServerStartFailed,
    recorded_settings,
    recorded_url,
    resolve_settings,
    resolve_url,
    state_dir,
)
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
    "EmbeddedServer",
    "Handler",
    "Idempotency",
    "Inbox",
    "PassedLedger",
    "RedisBus",
    "RedisSubscription",
    "Router",
    "ServerStartFailed",
    "Subscription",
    "SubscriptionStats",
    "TrimPolicy",
    "Window",
    "connect",
    "read_dead_letters",
    "recorded_settings",
    "recorded_url",
    "resolve_settings",
    "resolve_url",
    "router_group",
    "state_dir",
    "stream_id",
]
