"""Watching many loops: with 50 loops the dashboard groups them by what they need, the
problem loops first (blocked, waiting on a person, silent, failing), and draws a
timeline of iterations, verdicts and merges per loop. The grouping is the read model's
(`LoopView.attention`); the page is checked in a real Chromium, and a screenshot is
kept in test-artifacts/dashboard-50-loops.png."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

import events as ev
from app.dashboard import serve
from events.view import Attention, SystemView
from tests.cli.conftest import System
from tests.cli.sample import GATE, MERGE, W, criterion, heartbeat
from tests.cli.test_dashboard_browser import ARTIFACTS, TOKEN, browser  # noqa: F401
from tests.conftest import wait_until

LOOPS = 50
KINDS = [  # by i % 10: what loop i is doing
    Attention.BLOCKED,
    Attention.PERSON,
    Attention.SILENT,
    Attention.FAILING,
    Attention.WORKING,
    Attention.WORKING,
    Attention.WORKING,
    Attention.WAITING,
    Attention.DONE,
    Attention.DONE,
]


def loop_history(i: int, now: datetime) -> list[ev.Event]:
    """Loop i's last hour: a few iterations (and verdicts and merges), then its state."""
    name, task, kind = f"loop-{i:02d}", f"T-{i:02d}", KINDS[i % 10]
    at = [now - timedelta(minutes=55 - 5 * k - i % 5) for k in range(10)]
    out: list[ev.Event] = [
        ev.LoopStarted(
            source=W, loop=name, agent="claude", pid=i, host="h", tasks_total=1, ts=at[0]
        ),
        ev.TaskStarted(source=W, loop=name, task_id=task, attempt=1, ts=at[0]),
    ]
    for k in range(1, 4 + i % 4):
        out.append(
            ev.IterationFinished(
                source=W,
                loop=name,
                task_id=task,
                iteration=k,
                attempt=1,
                outcome=ev.IterationOutcome.CONTINUE,
                duration_s=60,
                ts=at[k],
            )
        )
    commit = f"c{i:02d}"
    beat_at = now if kind is not Attention.SILENT else now - timedelta(minutes=30)
    status = ev.LoopStatus.PAUSED if kind is Attention.WAITING else ev.LoopStatus.RUNNING
    if kind is Attention.BLOCKED:
        out.append(ev.TaskBlocked(source=W, loop=name, task_id=task, reason="no DB", ts=at[8]))
    elif kind is Attention.PERSON:
        out.append(
            ev.EscalationRaised(
                source=W,
                loop=name,
                escalation_id=f"e-{i:04d}",
                kind=ev.EscalationKind.QUESTION,
                severity=ev.Severity.HIGH,
                question="Which API version?",
                task_id=task,
                ts=at[8],
            )
        )
    elif kind is Attention.FAILING:
        out.append(
            ev.VerificationFailed(
                source=GATE,
                loop=name,
                task_id=task,
                commit=commit,
                attempt=1,
                verdict=ev.VerificationVerdict.CHECKS_FAILED,
                reason="1 of 1 criteria failed",
                ts=at[8],
            )
        )
    elif kind is Attention.DONE:
        out += [
            ev.VerificationPassed(
                source=GATE,
                loop=name,
                task_id=task,
                commit=commit,
                attempt=1,
                criteria=[criterion("checks pass", True, "ok")],
                ts=at[8],
            ),
            ev.MergeCompleted(
                source=MERGE,
                loop=name,
                task_id=task,
                commit=commit,
                merged_commit=f"m{i:02d}",
                main_before="0",
                ts=at[9],
            ),
        ]
    passed = 1 if kind is Attention.DONE else 0
    out.append(heartbeat(name, status=status, task_id=task, passed=passed, total=1, ts=beat_at))
    return out


def history(now: datetime) -> list[ev.Event]:
    return [e for i in range(LOOPS) for e in loop_history(i, now)]


def expected_groups() -> list[tuple[str, int]]:
    counts = {a: sum(KINDS[i % 10] is a for i in range(LOOPS)) for a in Attention}
    return [(a.value, n) for a, n in counts.items() if n]


def test_the_view_groups_loops_by_what_they_need() -> None:
    now = datetime.now(UTC)
    view = SystemView.from_events(history(now)).refresh(now)
    for i in range(LOOPS):
        assert view.loops[f"loop-{i:02d}"].attention is KINDS[i % 10], i
    done = view.loops["loop-08"]
    assert [m.kind for m in done.timeline][-2:] == ["verified", "merged"]
    assert len(view.loops["loop-04"].timeline) == 3 + 4 % 4


@pytest.fixture
def dashboard(system: System) -> Iterator[str]:
    system.bus.publish_many(history(datetime.now(UTC)))
    stop = threading.Event()
    urls: list[str] = []
    thread = threading.Thread(
        target=serve, args=(system.bus, "127.0.0.1", 0, TOKEN, stop, urls.append)
    )
    thread.start()
    try:
        yield wait_until(lambda: urls and urls[0])
    finally:
        stop.set()
        thread.join(timeout=15)


def test_fifty_loops_in_chromium_problem_loops_first(dashboard: str, browser: object) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    driver = browser
    driver.get(f"{dashboard}#token={TOKEN}")
    wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#loops article.loop")) == LOOPS)

    headings = [
        el.get_attribute("data-group")
        for el in driver.find_elements(By.CSS_SELECTOR, "#loops .attention-group")
    ]
    assert headings == [name for name, _ in expected_groups()]
    # In page order: every loop comes after its group's heading, problem loops first.
    order = driver.execute_script(
        "return [...document.querySelectorAll('#loops .attention-group, #loops article.loop')]"
        ".map(e => e.dataset.group || e.dataset.loop)"
    )
    group, seen = None, []
    for item in order:
        if not item.startswith("loop-"):
            group = item
            continue
        assert KINDS[int(item[5:]) % 10].value == group, (item, group)
        seen.append(item)
    assert len(seen) == LOOPS and seen[0] == "loop-00"  # blocked, top of the page
    summary = driver.find_element(By.CSS_SELECTOR, "#loops .attention-summary").text
    assert "blocked: 5" in summary and "done: 10" in summary
    # A timeline per loop, one mark per iteration, verdict and merge.
    done = driver.find_element(By.CSS_SELECTOR, "article[data-loop='loop-08']")
    marks = done.find_elements(By.CSS_SELECTOR, "svg.timeline rect.tl-mark")
    assert len(marks) == 3 + 8 % 4 + 2
    assert len(done.find_elements(By.CSS_SELECTOR, "rect.tl-merged")) == 1
    assert len(driver.find_elements(By.CSS_SELECTOR, "#loops svg.timeline")) == LOOPS

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-50-loops.png"
    driver.set_window_size(1440, 2400)
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_loops_status_at_fifty_loops_puts_the_problem_loops_first() -> None:
    """`loops status` at 50 loops: a count per state, then the loops by what they need
    (blocked, waiting on a person, silent, failing first), and the tasks of those only."""
    from cli.fmt import render

    now = datetime.now(UTC)
    text = render(SystemView.from_events(history(now)), now)
    lines = text.splitlines()
    summary = ", ".join(f"{name} {n}" for name, n in expected_groups())
    assert f"by state: {summary}" in lines
    start = lines.index("LOOPS") + 2  # past the header row
    by_length = sorted(Attention, key=lambda a: -len(a.value))
    needs = [
        next(a for a in by_length if line.strip().startswith(a.value + " "))
        for line in lines[start : start + LOOPS]
    ]
    assert [a.rank for a in needs] == sorted(a.rank for a in needs)
    assert needs[0] is Attention.BLOCKED and needs[-1] is Attention.DONE
    tasks = lines[lines.index("TASKS (of the loops that need attention)") + 2 :]
    shown = {line.split()[0] for line in tasks if line.startswith("  loop-")}
    assert shown == {f"loop-{i:02d}" for i in range(LOOPS) if KINDS[i % 10].rank <= 3}
    assert "  tasks of 30 other loop(s): loops status --json" in lines
