"""Row 8's extra: leave a setsid (double-forked) child behind that keeps appending to
a file in the workspace. Mode `exit`: the agent exits at once; mode `stay`: the agent
itself hangs too (the test kills `loops up` with SIGKILL meanwhile)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import hostile as h

TICKS = "setsid-tick.log"


def main() -> int:
    mark = h.marker(sys.argv[1])
    mode = sys.argv[2]
    sys.stdin.read()
    tick = (Path.cwd() / TICKS).resolve()
    h.report("tick", path=str(tick))

    def keep_writing() -> None:
        for n in h.for_a_while(60, 0.05):
            with tick.open("a") as fh:
                fh.write(f"{n}\n")

    h.daemonize(keep_writing)
    h.wrong_add(mark)
    if mode == "stay":
        time.sleep(60)
    print(f"<promise>{os.environ.get('LOOPS_TASK_ID')} done</promise>", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
