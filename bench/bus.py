"""Bus benchmark: the project's typed bus against raw redis-py, on one Redis.

    python bench/bus.py                       # REDIS_URL, else 127.0.0.1:6379
    python bench/bus.py --quick               # fewer events (a smoke run)

Measures, on the same ~500-byte entry:
- raw redis-py (the ceiling): single XADD; pipelined XADD in batches of 100;
  XREADGROUP COUNT 100 with one XACK per batch;
- the typed bus: `publish` (one event), `publish_many` (batches of 100), and a
  subscription draining the stream (decode and validate, a no-op handler, ack);
- publish-to-handler latency (p50, p99) at 500 events/s, for the bus and for a raw
  XADD / XREADGROUP BLOCK / XACK loop (consumer in a thread of this process).

Prints a table, then as its last line one JSON object of the figures (ratios are
typed over raw). Every key it creates is under a fresh prefix and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bus import BusSettings, RedisBus, connect
from events import Event, Role, Source, TaskHint, encode

SOURCE = Source(role=Role.WORKER, instance="bench-host:12345")
BATCH = 100


def make_event(i: int) -> TaskHint:
    """A `task.hint` whose JSON form is about 500 bytes."""
    return TaskHint(
        source=SOURCE,
        loop="loop-alpha",
        correlation_id=uuid.uuid4().hex,
        task_id=f"TASK-{i:05d}",
        text="Focus on the failing parser test; the fixture path is wrong. " * 3,
    )


def interleaved(variants: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Events per second of each variant. Each call of a variant handles one chunk and
    returns how many events it handled; the variants take turns, chunk by chunk, so
    that load from other processes on the machine hits them alike, and each rate is
    taken from the median chunk, so that a stall does not decide the result."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        for name, chunk in variants.items():
            started = time.perf_counter()
            sizes[name] = chunk()
            times[name].append(time.perf_counter() - started)
    return {name: sizes[name] / statistics.median(times[name]) for name in variants}


class Bench:
    def __init__(self, client: redis.Redis, quick: bool, signed: bool = True) -> None:
        self.client = client
        # Roles sign every event (bus/signing.py); --unsigned measures without it.
        self.key = b"bench-signing-key-0123456789abcdef" if signed else None
        self.r: Any = client
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.rounds = 10 if quick else 40
        self.one_chunk = 100  # single publishes per chunk
        self.batch_chunk = 10  # batches of 100 per chunk
        self.latency_s = 0.5 if quick else 2.0  # per turn; raw and typed take 3 turns each
        self.sample = make_event(0)
        self.fields = encode(self.sample)
        self.results: dict[str, float] = {}

    def bus(self, name: str) -> RedisBus:
        settings = BusSettings(prefix=f"{self.prefix}:{name}", signing_key=self.key)
        return RedisBus(self.client, settings=settings)

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i : i + 500])

    def events(self, n: int) -> list[Event]:
        return [make_event(i) for i in range(n)]

    # ------------------------------------------------------------------ publish

    def publish(self) -> None:
        r = self.r
        raw_stream = f"{self.prefix}:raw:events"
        fields = self.fields
        bus = self.bus("typed")
        one = self.one_chunk
        per_batch = self.batch_chunk * BATCH
        singles = iter(self.events(one * self.rounds))
        batches = iter(self.events(per_batch * self.rounds))

        def raw_one() -> int:
            for _ in range(one):
                r.xadd(raw_stream, fields)
            return one

        def typed_one() -> int:
            for _ in range(one):
                bus.publish(next(singles))
            return one

        def raw_batch() -> int:
            for _ in range(self.batch_chunk):
                pipe = r.pipeline(transaction=False)
                for _ in range(BATCH):
                    pipe.xadd(raw_stream, fields)
                pipe.execute()
            return per_batch

        def typed_batch() -> int:
            for _ in range(self.batch_chunk):
                bus.publish_many([next(batches) for _ in range(BATCH)])
            return per_batch

        rates = interleaved({"raw_one": raw_one, "typed_one": typed_one}, self.rounds)
        rates |= interleaved({"raw_batch": raw_batch, "typed_batch": typed_batch}, self.rounds)
        self.results |= rates
        self.clear()

    # ------------------------------------------------------------------ consume

    def consume(self) -> None:
        r = self.r
        per_chunk = self.batch_chunk * BATCH
        n = per_chunk * self.rounds
        raw_stream = f"{self.prefix}:raw:events"
        for _ in range(0, n, BATCH):
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.xadd(raw_stream, self.fields)
            pipe.execute()
        r.xgroup_create(raw_stream, "g", id="0", mkstream=True)
        bus = self.bus("typed")
        events = self.events(n)
        for i in range(0, n, BATCH):
            bus.publish_many(events[i : i + BATCH])
        handled = [0]

        def noop(event: Event) -> None:
            handled[0] += 1

        sub = bus.subscribe("g", "c", noop)

        def raw_consume() -> int:
            done = 0
            while done < per_chunk:
                reply = r.xreadgroup("g", "c", {raw_stream: ">"}, count=BATCH)
                entries = reply[0][1]
                r.xack(raw_stream, "g", *[eid for eid, _ in entries])
                done += len(entries)
            return done

        def typed_consume() -> int:
            done = 0
            while done < per_chunk:
                done += sub.poll(block_ms=0)
            return done

        self.results |= interleaved(
            {"raw_consume": raw_consume, "typed_consume": typed_consume}, self.rounds
        )
        assert handled[0] == n, handled[0]
        self.clear()

    # ------------------------------------------------------------------ latency

    def _paced(self, publish: Callable[[int], None], total: int) -> None:
        """Call `publish(i)` for i < total at 500 per second."""
        interval = 1 / 500
        next_at = time.perf_counter()
        for i in range(total):
            now = time.perf_counter()
            if next_at > now:
                time.sleep(next_at - now)
            publish(i)
            next_at += interval

    @staticmethod
    def _collect(latencies: list[float], total: int) -> None:
        deadline = time.monotonic() + 10
        while len(latencies) < total and time.monotonic() < deadline:
            time.sleep(0.01)

    def typed_turn(self, turn: int, total: int) -> list[float]:
        """Publish-to-handler latencies of the bus, one turn of `total` events."""
        bus = self.bus(f"latency{turn}")
        sent: dict[str, float] = {}
        latencies: list[float] = []

        def on_event(event: Event) -> None:
            latencies.append(time.perf_counter() - sent[event.id])

        sub = bus.subscribe("g", "c", on_event)
        stop = threading.Event()
        consumer = threading.Thread(target=sub.run, args=(stop, 1000))
        consumer.start()
        events = self.events(total)

        def publish(i: int) -> None:
            event = events[i]
            sent[event.id] = time.perf_counter()
            bus.publish(event)

        try:
            self._paced(publish, total)
            self._collect(latencies, total)
        finally:
            stop.set()
            consumer.join(5)
        return latencies

    def raw_turn(self, turn: int, total: int) -> list[float]:
        """The same with raw redis-py: XADD; XREADGROUP COUNT 100 BLOCK 1000; XACK."""
        r = self.r
        stream = f"{self.prefix}:rawlat{turn}:events"
        r.xgroup_create(stream, "g", id="0", mkstream=True)
        sent: dict[bytes, float] = {}
        latencies: list[float] = []
        stop = threading.Event()

        def consume() -> None:
            while not stop.is_set():
                reply = r.xreadgroup("g", "c", {stream: ">"}, count=BATCH, block=1000)
                if not reply:
                    continue
                entries = reply[0][1]
                for _, fields in entries:
                    latencies.append(time.perf_counter() - sent[fields[b"id"]])
                r.xack(stream, "g", *[eid for eid, _ in entries])

        consumer = threading.Thread(target=consume)
        consumer.start()
        all_fields = [encode(e) for e in self.events(total)]

        def publish(i: int) -> None:
            fields = all_fields[i]
            sent[fields["id"].encode()] = time.perf_counter()
            r.xadd(stream, fields)

        try:
            self._paced(publish, total)
            self._collect(latencies, total)
        finally:
            stop.set()
            consumer.join(5)
        return latencies

    def latency(self) -> None:
        """Raw and typed take turns (3 each), so that machine load hits both alike."""
        total = int(self.latency_s * 500)
        typed: list[float] = []
        raw: list[float] = []
        for turn in range(3):
            raw += self.raw_turn(turn, total)
            typed += self.typed_turn(turn, total)

        def pct(values: list[float], q: float) -> float:
            return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000

        res = self.results
        res["p50_ms"], res["p99_ms"] = pct(typed, 0.5), pct(typed, 0.99)
        res["raw_p50_ms"], res["raw_p99_ms"] = pct(raw, 0.5), pct(raw, 0.99)
        res["latency_events"] = float(min(len(typed), len(raw)))
        self.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    )
    parser.add_argument("--quick", action="store_true", help="fewer events, for a smoke run")
    parser.add_argument(
        "--unsigned", action="store_true", help="publish without a signing key (old setups)"
    )
    args = parser.parse_args(argv)
    client = connect(BusSettings.from_dsn(args.redis, block_ms=1000))
    bench = Bench(client, args.quick, signed=not args.unsigned)
    started = time.perf_counter()
    try:
        client.ping()
        info: Any = client.info("server")
        bench.publish()
        bench.consume()
        bench.latency()
    except redis.ConnectionError as exc:
        print(f"error: cannot reach Redis at {args.redis}: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.clear()
        client.close()
    r = bench.results
    ratios = {
        "publish_one_ratio": r["typed_one"] / r["raw_one"],
        "publish_batch_ratio": r["typed_batch"] / r["raw_batch"],
        "consume_ratio": r["typed_consume"] / r["raw_consume"],
    }
    print(
        f"bus benchmark: Redis {info.get('redis_version')} at {args.redis}, "
        f"entry {sum(len(k) + len(v) for k, v in bench.fields.items())} bytes, "
        f"Python {sys.version.split()[0]}, redis-py {redis.__version__}, "
        f"{time.perf_counter() - started:.1f} s"
    )
    rows = [
        ("publish one (XADD)", r["raw_one"], r["typed_one"], ratios["publish_one_ratio"]),
        ("publish batch of 100", r["raw_batch"], r["typed_batch"], ratios["publish_batch_ratio"]),
        (
            "consume (COUNT 100 + XACK)",
            r["raw_consume"],
            r["typed_consume"],
            ratios["consume_ratio"],
        ),
    ]
    print(f"{'':28} {'raw ev/s':>10} {'typed ev/s':>11} {'ratio':>6}")
    for name, raw, typed, ratio in rows:
        print(f"{name:28} {raw:>10,.0f} {typed:>11,.0f} {ratio:>6.2f}")
    print(
        f"{'latency at 500 ev/s (ms)':28} {'raw':>10} {'typed':>11}\n"
        f"{'  p50':28} {r['raw_p50_ms']:>10.3f} {r['p50_ms']:>11.3f}\n"
        f"{'  p99':28} {r['raw_p99_ms']:>10.3f} {r['p99_ms']:>11.3f}"
    )
    figures = {
        **{k: round(v, 3) for k, v in ratios.items()},
        "p50_ms": round(r["p50_ms"], 3),
        "p99_ms": round(r["p99_ms"], 3),
        "raw_p99_ms": round(r["raw_p99_ms"], 3),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
