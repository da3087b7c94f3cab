"""`loops validate PATH...`: check SPEC.yaml, config.json, test-state.json, health.json
and project.json (a directory: every file of the project in it, `loops.validate`).

Prints `OK path` per good file (and a `NOTE` line when a person should know something
of it) and one line per problem, naming file and field; exits 1 if anything is wrong.
Never a traceback: whatever the input, the answer is a line.
"""

from __future__ import annotations

import argparse
import sys

from cli.context import settings_of
from loops.validate import validate_paths

EXIT_OK, EXIT_FAIL = 0, 1


def run(args: argparse.Namespace) -> int:
    report = validate_paths(args.paths, settings_of(args).project_dir)
    bad = [lines for lines in report.problems.values() if lines]
    for path, problems in report.problems.items():
        if not problems:
            print(f"OK {path}")
            problems = [f"NOTE {note}" for note in report.notes.get(path, [])]
        for line in problems:
            print(" ".join(line.splitlines()))
    sys.stdout.flush()
    if not bad:
        return EXIT_OK
    count = sum(map(len, bad))
    print(
        f"loops validate: {count} problem{'s' * (count != 1)} "
        f"in {len(bad)} file{'s' * (len(bad) != 1)}",
        file=sys.stderr,
    )
    return EXIT_FAIL
