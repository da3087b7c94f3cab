"""Row 6: poison the stream (a non-UTF-8 `type`, NaN, a huge entry, bad JSON, deep
nesting, wrong types, a non-UTF-8 field name), then claim a wrong add()."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import hostile as h

TASK = os.environ.get("LOOPS_TASK_ID", "")


def poison_entries(loop: str, task: str) -> list[dict[bytes, bytes]]:
    """Stream entries no consumer can decode (the test writes them too, as the operator)."""
    base = {
        "id": uuid.uuid4().hex,
        "version": 1,
        "ts": "2026-01-01T00:00:00Z",
        "source": {"role": "gate", "instance": "x:1"},
        "loop": loop,
    }
    nan = json.dumps({**base, "type": "task.claimed", "task_id": task, "attempt": float("nan"),
                      "commit": "0" * 40, "branch": "loop/x"})  # fmt: skip
    huge = json.dumps({**base, "type": "task.claimed", "task_id": task, "attempt": 1,
                       "commit": "0" * 40, "branch": "x" * (8 << 20)})  # fmt: skip
    wrong = json.dumps({**base, "type": "merge.completed", "loop": 5})
    entries: list[list[bytes | str]] = [
        ["type", b"\xff", "id", uuid.uuid4().hex, "data", b"\xff"],
        ["type", "task.claimed", "id", uuid.uuid4().hex, "data", nan],
        ["type", "task.claimed", "id", uuid.uuid4().hex, "data", huge],
        ["type", "verification.passed", "id", uuid.uuid4().hex, "data", "{"],
        ["type", "verification.passed", "id", uuid.uuid4().hex, "data", "[" * 100_000],
        ["type", "merge.completed", "id", uuid.uuid4().hex, "data", wrong],
        ["type", "loop.heartbeat", "id", b"\xfe\xff", "data", json.dumps(1e308 * 10)],
        [b"\xfe", b"\xff", "data", json.dumps({**base, "type": "\udcff"}, ensure_ascii=False).encode(errors="surrogatepass")],
        ["type", "task.passed"],
    ]  # fmt: skip
    return [
        {
            (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
            for k, v in zip(e[::2], e[1::2], strict=True)
        }
        for e in entries
    ]


def poison(client: h.Resp, stream: bytes) -> None:
    for fields in poison_entries(os.environ.get("LOOPS_LOOP", ""), TASK):
        try:
            entry = client.cmd("XADD", stream, "*", *[x for kv in fields.items() for x in kv])
            h.report("poisoned", entry=str(entry))
        except h.RespError as exc:
            h.report("poison-refused", error=str(exc)[:200])


def main() -> int:
    mark = h.marker(sys.argv[1])
    sys.stdin.read()
    client = h.open_bus()
    if client is not None:
        for stream in h.event_streams(client):
            poison(client, stream)
        client.close()
    h.wrong_add(mark)
    print(f"<promise>{TASK} done</promise>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
