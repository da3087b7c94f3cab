"""An honest agent: implements add() and sub() correctly and says so.

Options: `--slow` (two iterations: new tests first, then the code, with pauses, the way a
careful agent works), `--big MB` (prints MB megabytes of log before its promise),
`--only NAME` (implements only that function, so that it never conflicts with a
loop working on the other one)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

FIXES = {
    '    raise NotImplementedError("add")': "    return a + b",
    '    raise NotImplementedError("sub")': "    return a - b",
}
NEW_TEST = """from calc.ops import add, sub


def test_add_more():
    assert add(-1, 1) == 0


def test_sub_more():
    assert sub(1, 1) == 0
"""


def implement(only: str | None) -> None:
    ops = Path("calc/ops.py")
    text = ops.read_text()
    for old, new in FIXES.items():
        if only is None or f'"{only}"' in old:
            text = text.replace(old, new)
    ops.write_text(text)


def main(argv: list[str]) -> int:
    task = os.environ.get("LOOPS_TASK_ID", "?")
    prompt = sys.stdin.read()
    if "--slow" in argv:
        time.sleep(1.5)
        if not Path("tests/test_more.py").exists():
            Path("tests/test_more.py").write_text(NEW_TEST)
            Path("tests/check_more.py").write_text(
                "import tests.test_more as t\n\nt.test_add_more()\n"
            )
            print("Added tests first; implementing next iteration.")
            return 0
        time.sleep(1.5)
    implement(argv[argv.index("--only") + 1] if "--only" in argv else None)
    if "--big" in argv:
        mb = int(argv[argv.index("--big") + 1])
        line = ("x" * 1023 + "\n").encode()
        out = sys.stdout.buffer
        for _ in range(mb * 1024):
            out.write(line)
        out.flush()
    print(
        f"Implemented ({len(prompt)} chars of prompt). <promise>{task} done</promise>", flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
