"""Two revisions' benchmarks side by side, taking turns, on one machine in one run.

    python bench/side_by_side.py                          # 46690ec against HEAD, 3 rounds
    python bench/side_by_side.py --rounds 5 --only bus,monitor
    python bench/side_by_side.py --before REV --after REV --cache DIR [--clean]
    python bench/side_by_side.py --log /tmp/loops-side-by-side/runs-*.jsonl   # table again

Each revision gets a detached `git worktree` and a venv of its own (`pip install -e`),
made once and kept under `--cache` (default `$TMPDIR/loops-side-by-side/<commit>/`), so
a second run starts at once; `--clean` removes them. Each tree runs its own copy of a
benchmark script (the figures come from the code of that tree).

Every round runs each chosen benchmark on before, then at once on after, so the two
runs of a pair meet the same load from other processes on the machine. The table
gives each side's median and range over the rounds, and in how many rounds after was
worse than before in the same round; a figure reads worse or better only when the
ranges of the two sides do not overlap (else "same"). Each run's figures are the JSON object every
benchmark prints as its last line (flattened: `runs.0.s_per_task`), plus the run's wall
time. A benchmark only one tree has is left out; a flag only one tree's script has
(`Bench.pins`) is passed where the script takes it, and is that tree's default where not.

Prints a Markdown table, then as its last line one JSON object:
{"before": commit, "after": commit, "rounds": N, "rows": [{"bench", "figure", "better",
 "before": [...], "after": [...], "ratio", "worse_rounds", "reading"}, ...], "failures": [...]}
Every run is also recorded, as it ends, in `--cache`'s runs-TIME.jsonl (`--log` prints
its table again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HIGHER, LOWER = "higher", "lower"
VENV_TIMEOUT_S = 900
HELP_TIMEOUT_S = 60


@dataclass(frozen=True)
class Bench:
    """One benchmark invocation: its script, arguments, the figures to show (key in the
    flattened JSON, which way is better) and a timeout for one run."""

    name: str
    script: str
    args: tuple[str, ...]
    figures: tuple[tuple[str, str], ...]
    timeout_s: float = 600.0
    # (flag, value) passed only to a tree whose script's --help lists the flag; the
    # value must be the default of a tree whose script has no such flag.
    pins: tuple[tuple[str, str], ...] = ()


# Sizes for ~15 minutes on 2 cores with 3 rounds: ~150 s a tree a round.
BENCHES = (
    Bench(
        "bus",
        "bus.py",
        ("--quick",),
        (
            ("publish_one_ratio", HIGHER),
            ("publish_batch_ratio", HIGHER),
            ("consume_ratio", HIGHER),
            ("p50_ms", LOWER),
            ("p99_ms", LOWER),
        ),
    ),
    Bench(
        "monitor",
        "monitor.py",
        (),
        (("detect_s_p50", LOWER), ("detect_s_max", LOWER), ("false_actions", LOWER)),
    ),
    Bench(
        "loop_overhead",
        "loop_overhead.py",
        ("--iterations", "30"),
        (
            ("overhead_ms_p50", LOWER),
            ("overhead_ms_p99", LOWER),
            ("prompt_bytes_max", LOWER),
            ("process_iteration_ms_p50_sandbox_on", LOWER),
            ("process_iteration_ms_p50_sandbox_off", LOWER),
        ),
    ),
    Bench(
        "merge_machinery",
        "merge_queue.py",
        ("--machinery", "--rounds", "1"),
        (
            ("merges_per_min", HIGHER),
            ("ratio", HIGHER),
            ("batch_merges_per_min", HIGHER),
            ("batch_ratio", HIGHER),
        ),
    ),
    Bench(
        "merge_realistic",
        "merge_queue.py",
        ("--loops", "3", "--tasks", "3", "--batch", "5"),
        (
            ("one_slot_merges_per_min", HIGHER),
            ("batch_merges_per_min", HIGHER),
            ("batch_checks", LOWER),
            ("batch_merged", HIGHER),
            ("main_red", LOWER),
        ),
    ),
    Bench(
        "scale",
        "scale.py",
        ("--loops", "30"),
        (
            ("runs.0.s_per_task", LOWER),
            ("runs.0.merged", HIGHER),
            ("runs.0.threads", LOWER),
            ("runs.0.redis_connections", LOWER),
            ("runs.0.calls_per_event", LOWER),
            ("runs.0.mb_per_loop", LOWER),
            ("runs.0.claim_to_verify_median_s", LOWER),
        ),
        timeout_s=900.0,
        # 46690ec's scale.py has no --batch and its project default is 5; main's is 10.
        pins=(("--batch", "5"),),
    ),
)
WALL = ("wall_s", LOWER)  # every run's own wall time, measured here


# --------------------------------------------------------------------------- parsing


def last_json(stdout: str) -> dict[str, Any]:
    """The last line of `stdout` that is a JSON object (benchmarks print it last; a
    warning or a progress line may follow it on a loaded machine)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object line in the output")


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """The numbers in a JSON value by dotted path (`runs.0.wall_s`); booleans count as
    0/1, strings and nulls are left out."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    elif isinstance(value, bool | int | float):
        return {prefix: float(value)}
    else:
        return {}
    for key, child in items:
        out.update(flatten(child, f"{prefix}.{key}" if prefix else key))
    return out


# --------------------------------------------------------------------------- summary


@dataclass
class Row:
    bench: str
    figure: str
    better: str
    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    # (before, after) of each round where both sides ran
    pairs: list[tuple[float, float]] = field(default_factory=list)

    @property
    def worse_rounds(self) -> str:
        """In how many rounds after was worse than before in the same round: `k/n`."""
        if not self.better or not self.pairs:
            return ""
        sign = 1 if self.better == HIGHER else -1
        worse = sum(sign * (a - b) < 0 for b, a in self.pairs)
        return f"{worse}/{len(self.pairs)}"

    @property
    def ratio(self) -> float | None:
        if not self.before or not self.after:
            return None
        b, a = statistics.median(self.before), statistics.median(self.after)
        if b == 0:
            return 1.0 if a == 0 else None
        return a / b

    @property
    def reading(self) -> str:
        """`worse` or `better` when the two sides' ranges do not overlap (every after
        run beyond every before run), else `same` (within the noise of the rounds).
        Judged from two runs a side or more."""
        if not self.better:
            return ""
        if not self.before or not self.after:
            return "missing"
        if min(len(self.before), len(self.after)) < 2:
            return "one run"  # no range to judge the noise by
        lo_b, hi_b, lo_a, hi_a = (
            min(self.before),
            max(self.before),
            min(self.after),
            max(self.after),
        )
        if lo_a > hi_b:
            return "better" if self.better == HIGHER else "worse"
        if hi_a < lo_b:
            return "worse" if self.better == HIGHER else "better"
        return "same"


def rows_of(
    runs: list[dict[str, Any]], benches: Iterable[Bench], show_all: bool = False
) -> list[Row]:
    """One row per benchmark figure, from the runs' records (`bench`, `side`, `figures`;
    a failed run has no figures and adds nothing)."""
    rows: list[Row] = []
    for bench in benches:
        mine = [r for r in runs if r["bench"] == bench.name and r.get("figures")]
        wanted = list(bench.figures)
        if show_all:
            seen = {k for r in mine for k in r["figures"]} - {k for k, _ in wanted}
            wanted += [(k, "") for k in sorted(seen - {WALL[0]})]
        for key, better in [*wanted, WALL]:
            row = Row(bench.name, key, better)
            by_round: dict[Any, dict[str, float]] = {}
            for r in mine:
                if key in r["figures"]:
                    getattr(row, r["side"]).append(r["figures"][key])
                    by_round.setdefault(r.get("round"), {})[r["side"]] = r["figures"][key]
            row.pairs = [(v["before"], v["after"]) for v in by_round.values() if len(v) == 2]
            if row.before or row.after:
                rows.append(row)
    return rows


def fmt(x: float) -> str:
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.1f}"


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    med = fmt(statistics.median(values))
    return med if lo == hi else f"{med} ({fmt(lo)}..{fmt(hi)})"


def table(rows: list[Row]) -> str:
    """The comparison as a Markdown table: medians with the range over rounds."""
    lines = [
        "| benchmark | figure | better | before: median (range) | after: median (range) "
        "| after / before | after worse in | reading |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        reading = f"**{r.reading}**" if r.reading == "worse" else r.reading
        lines.append(
            f"| {r.bench} | {r.figure} | {r.better or '-'} | {cell(r.before)} "
            f"| {cell(r.after)} | {ratio} | {r.worse_rounds} | {reading} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- trees


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=120
    ).stdout.strip()


@dataclass(frozen=True)
class Tree:
    """A revision checked out in a worktree, with a venv that has it installed."""

    side: str
    commit: str
    path: Path
    python: Path

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        }
        env["VIRTUAL_ENV"] = str(self.python.parent.parent)
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        return env


def prepare(side: str, rev: str, cache: Path) -> Tree:
    """The worktree and venv of `rev` under `cache/<commit>/`, made if missing."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    home = cache / commit[:12]
    tree, venv = home / "tree", home / "venv"
    python = venv / "bin" / "python"
    if not (tree / ".git").exists() or git("rev-parse", "HEAD", cwd=tree) != commit:
        if tree.exists():
            git("worktree", "remove", "--force", str(tree))
        git("worktree", "prune")
        git("worktree", "add", "--detach", str(tree), commit)
        (home / "ready").unlink(missing_ok=True)
    if not (home / "ready").exists():
        print(f"{side}: venv for {commit[:12]} in {venv} (once)", file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        with (home / "pip.log").open("w") as out:  # pip's warnings, out of the table's way
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "-e", str(tree)],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=VENV_TIMEOUT_S,
            )
        (home / "ready").write_text(commit + "\n")
    return Tree(side, commit, tree, python)


def clean(cache: Path) -> None:
    """Remove the cached worktrees (from git's list too) and venvs."""
    for tree in sorted(cache.glob("*/tree")):
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, timeout=120, check=False
        )
    git("worktree", "prune")
    shutil.rmtree(cache, ignore_errors=True)


def takes(tree: Tree, script: str, flag: str) -> bool:
    """Whether the tree's copy of `script` lists `flag` in its --help."""
    proc = subprocess.run(
        [str(tree.python), str(tree.path / "bench" / script), "--help"],
        cwd=tree.path,
        env=tree.env(),
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT_S,
    )
    return flag in proc.stdout


def argv_for(tree: Tree, bench: Bench) -> list[str]:
    argv = [str(tree.python), str(tree.path / "bench" / bench.script), *bench.args]
    for flag, value in bench.pins:
        if takes(tree, bench.script, flag):
            argv += [flag, value]
    return argv


def run(tree: Tree, bench: Bench, argv: list[str], round_no: int) -> dict[str, Any]:
    """One run of a benchmark on a tree: its figures, or why there are none."""
    record: dict[str, Any] = {"bench": bench.name, "side": tree.side, "round": round_no}
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            cwd=tree.path,
            env=tree.env(),
            capture_output=True,
            text=True,
            timeout=bench.timeout_s,
        )
    except subprocess.TimeoutExpired:
        record["error"] = f"timed out after {bench.timeout_s:g} s"
        return record
    wall = time.perf_counter() - started
    try:
        if proc.returncode != 0:
            raise ValueError(f"exit {proc.returncode}")
        figures = flatten(last_json(proc.stdout))
    except ValueError as exc:
        record["error"] = f"{exc}: {proc.stderr.strip()[-400:]}"
        return record
    figures[WALL[0]] = round(wall, 2)
    record["figures"] = figures
    return record


def report(runs: list[dict[str, Any]], benches: list[Bench], show_all: bool) -> None:
    """The table of `runs`, their failures, and the summary as the last line."""
    rows = rows_of(runs, benches, show_all=show_all)
    print(table(rows))
    failures = [r for r in runs if "error" in r]
    for r in failures:
        print(f"failed: round {r['round']} {r['bench']} {r['side']}: {r['error']}")
    commits = {r["side"]: r.get("commit") for r in runs}
    summary = {
        "before": commits.get("before"),
        "after": commits.get("after"),
        "rounds": max((r["round"] for r in runs), default=0),
        "argv": {f"{r['side']}:{r['bench']}": r.get("argv") for r in runs},
        "rows": [
            {
                "bench": r.bench,
                "figure": r.figure,
                "better": r.better,
                "before": r.before,
                "after": r.after,
                "ratio": None if r.ratio is None else round(r.ratio, 3),
                "worse_rounds": r.worse_rounds,
                "reading": r.reading,
            }
            for r in rows
        ],
        "failures": failures,
    }
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="46690ec", help="revision (default: 46690ec)")
    parser.add_argument("--after", default="HEAD", help="revision (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    names = ",".join(b.name for b in BENCHES)
    parser.add_argument("--only", default=names, help=f"comma-separated, of {names}")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "loops-side-by-side",
        help="where the worktrees and venvs are kept between runs",
    )
    parser.add_argument("--all", action="store_true", help="every figure the benches print")
    parser.add_argument(
        "--log", type=Path, help="print the table of a recorded run (its runs-*.jsonl) and exit"
    )
    parser.add_argument("--clean", action="store_true", help="remove the cache and exit")
    args = parser.parse_args()
    chosen = args.only.split(",")
    unknown = set(chosen) - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.clean:
        clean(args.cache)
        return
    if args.log:
        runs = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
        ran = {r["bench"] for r in runs}
        report(runs, [b for b in BENCHES if b.name in chosen and b.name in ran], args.all)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    trees = [prepare("before", args.before, args.cache), prepare("after", args.after, args.cache)]
    benches = []
    for bench in (b for b in BENCHES if b.name in chosen):
        if all((t.path / "bench" / bench.script).exists() for t in trees):
            benches.append(bench)
        else:
            print(f"{bench.name}: not in both trees, left out", file=sys.stderr)
    argvs = {(t.side, b.name): argv_for(t, b) for t in trees for b in benches}
    log = args.cache / f"runs-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    print(
        f"before {trees[0].commit[:12]}, after {trees[1].commit[:12]}, {args.rounds} "
        f"rounds; runs recorded in {log}",
        file=sys.stderr,
    )
    runs = []
    with log.open("w") as out:
        for round_no in range(1, args.rounds + 1):
            for bench in benches:
                for tree in trees:
                    argv = argvs[(tree.side, bench.name)]
                    record = run(tree, bench, argv, round_no)
                    record.update(commit=tree.commit, argv=argv[1:], load1=os.getloadavg()[0])
                    runs.append(record)
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                    status = record.get("error") or f"{record['figures'][WALL[0]]:.1f} s"
                    print(
                        f"round {round_no} {bench.name:16} {tree.side:6} {status} "
                        f"(load {record['load1']:.1f})",
                        file=sys.stderr,
                    )
    report(runs, benches, args.all)


if __name__ == "__main__":
    main()
