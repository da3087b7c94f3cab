"""bench/side_by_side.py's reading of benchmark output and its table; nothing is run
or timed here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PATH = Path(__file__).resolve().parents[2] / "bench" / "side_by_side.py"


def load() -> ModuleType:
    # bench/ is scripts, not a package (bench/bus.py would shadow the `bus` package).
    spec = importlib.util.spec_from_file_location("side_by_side", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["side_by_side"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sbs = load()


def test_last_json_is_the_last_object_line_past_noise() -> None:
    out = (
        'table {"not": json\n'
        '{"a": 1}\n'
        '{"runs": [{"loops": 30, "s_per_task": 0.4}]}\n'
        "[1, 2]\n"
        "Warning: something after the figures\n"
    )
    assert sbs.last_json(out) == {"runs": [{"loops": 30, "s_per_task": 0.4}]}
    with pytest.raises(ValueError):
        sbs.last_json("a table\n[1]\n{broken\n")


def test_flatten_keeps_numbers_by_dotted_path() -> None:
    value = {
        "p50_ms": 0.3,
        "runs": [{"merged": 60, "traceback": False, "log": None}],
        "loops": {"lies": 3, "name": "x"},
    }
    assert sbs.flatten(value) == {
        "p50_ms": 0.3,
        "runs.0.merged": 60.0,
        "runs.0.traceback": 0.0,
        "loops.lies": 3.0,
    }


def row(better: str, before: list[float], after: list[float]):  # type: ignore[no-untyped-def]
    return sbs.Row("b", "f", better, before, after)


@pytest.mark.parametrize(
    ("better", "before", "after", "reading"),
    [
        (sbs.LOWER, [10, 12, 11], [13, 14, 15], "worse"),
        (sbs.LOWER, [10, 12, 11], [7, 8, 9], "better"),
        (sbs.LOWER, [10, 12, 11], [9, 11, 20], "same"),  # the ranges overlap
        (sbs.HIGHER, [10, 12, 11], [13, 14, 15], "better"),
        (sbs.HIGHER, [10, 12, 11], [7, 8, 9], "worse"),
        (sbs.HIGHER, [10, 12], [], "missing"),
        (sbs.HIGHER, [10], [20], "one run"),
        ("", [10, 11], [20, 21], ""),  # a figure without a direction is not judged
    ],
)
def test_reading_needs_the_ranges_apart(
    better: str, before: list[float], after: list[float], reading: str
) -> None:
    assert row(better, before, after).reading == reading


def test_ratio_is_of_medians() -> None:
    assert row(sbs.LOWER, [1, 2, 100], [2, 4, 5]).ratio == 2.0
    assert row(sbs.LOWER, [0, 0], [0]).ratio == 1.0
    assert row(sbs.LOWER, [0], [1]).ratio is None


def test_rows_and_table_from_run_records() -> None:
    bench = sbs.Bench("scale", "scale.py", (), (("runs.0.s_per_task", sbs.LOWER),))

    def rec(side: str, round_no: int, s_per_task: float, wall: float) -> dict[str, object]:
        figures = {"runs.0.s_per_task": s_per_task, "wall_s": wall}
        return {"bench": "scale", "side": side, "round": round_no, "figures": figures}

    runs = [
        rec("before", 1, 0.5, 60),
        rec("after", 1, 0.7, 61),
        rec("before", 2, 0.6, 58),
        {"bench": "scale", "side": "after", "round": 2, "error": "exit 1"},  # adds nothing
        rec("before", 3, 0.5, 62),
        rec("after", 3, 0.8, 59),
        {"bench": "other", "side": "after", "round": 1, "figures": {"runs.0.s_per_task": 9}},
    ]
    rows = sbs.rows_of(runs, [bench])
    assert [(r.figure, r.before, r.after, r.pairs) for r in rows] == [
        ("runs.0.s_per_task", [0.5, 0.6, 0.5], [0.7, 0.8], [(0.5, 0.7), (0.5, 0.8)]),
        ("wall_s", [60, 58, 62], [61, 59], [(60, 61), (62, 59)]),
    ]
    lines = sbs.table(rows).splitlines()
    assert lines[2] == (
        "| scale | runs.0.s_per_task | lower | 0.5 (0.5..0.6) | 0.75 (0.7..0.8) | 1.50 | 2/2 "
        "| **worse** |"
    )
    assert lines[3] == "| scale | wall_s | lower | 60 (58..62) | 60 (59..61) | 1.00 | 1/2 | same |"


def test_worse_rounds_counts_by_direction() -> None:
    pairs = [(1.0, 2.0), (3.0, 1.0), (2.0, 2.0)]
    assert sbs.Row("b", "f", sbs.LOWER, pairs=pairs).worse_rounds == "1/3"
    assert sbs.Row("b", "f", sbs.HIGHER, pairs=pairs).worse_rounds == "1/3"
    assert sbs.Row("b", "f", sbs.HIGHER, pairs=[(1.0, 0.5), (1.0, 0.9)]).worse_rounds == "2/2"
    assert sbs.Row("b", "f", "", pairs=pairs).worse_rounds == ""


def test_all_adds_the_figures_not_chosen_without_a_reading() -> None:
    bench = sbs.Bench("bus", "bus.py", (), (("p50_ms", sbs.LOWER),))
    runs = [
        {"bench": "bus", "side": side, "figures": {"p50_ms": 1.0, "raw_p99_ms": 2.0}}
        for side in ("before", "after")
    ]
    rows = sbs.rows_of(runs, [bench], show_all=True)
    assert [(r.figure, r.reading) for r in rows] == [("p50_ms", "one run"), ("raw_p99_ms", "")]
