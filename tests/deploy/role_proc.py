"""A role process for the runtime tests, driven through Redis lists.

Each step waits up to 0.2 s for a token on `{prefix}:inbox` (an "event"), records
`{prefix}:started`, then holds the event until a token arrives on `{prefix}:finish`
and counts it in `{prefix}:done`. A test can so signal the process mid-event.

Usage: python role_proc.py URL PREFIX ROLE INTERVAL_S
"""

from __future__ import annotations

import sys
import threading

from app.runtime import run_role
from bus import connect


def main() -> int:
    url, prefix, role, interval = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    client = connect(url)

    def step(stop: threading.Event) -> None:
        if client.blpop([f"{prefix}:inbox"], timeout=0.2) is None:
            return
        client.incr(f"{prefix}:started")
        client.blpop([f"{prefix}:finish"], timeout=5)
        client.incr(f"{prefix}:done")

    try:
        return run_role(
            role,
            None,
            client,
            step,
            stop=threading.Event(),
            prefix=prefix,
            presence_interval_s=interval,
        )
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
