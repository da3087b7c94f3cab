"""Text for the terminal shared by the commands: tables, token counts, ages, and the
status table (`loops status`, and `loops up` while it runs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from app.runtime import Presence
from events.view import Attention, Health, LoopView, SystemView, TaskStatus, TaskView, clean

MANY_LOOPS = 20  # from here on, loops are grouped by what they need, problems first


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    out = []
    for row in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)] + [row[-1]]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def human_tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1_000:
        return f"{n / 1_000:.1f}k"
    return str(n)


def ago(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "-"
    s = max(0, int((now - ts).total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d"


def _loop_status(loop: LoopView, now: datetime) -> str:
    status = loop.status.value
    until = loop.waiting_until
    if until is not None and until > now:
        at = until.astimezone().strftime("%H:%M")
        why = (
            f"API outage, retry at {at}"
            if until == loop.outage_until
            else f"waiting for usage reset at {at}"
        )
        status += f" ({why}, {ago(now, until)} left)"
    return status


def _task_note(task: TaskView) -> str:
    v = task.verification
    if task.status in (TaskStatus.FAILED, TaskStatus.BLOCKED, TaskStatus.HELD) and task.reason:
        return clean(task.reason, 70)
    if v is not None and v.criteria:
        held = sum(1 for c in v.criteria if c.passed)
        return f"checks {held}/{len(v.criteria)} held at {v.commit[:8]}"
    return ""


def render(
    view: SystemView, now: datetime | None = None, roles: Sequence[Presence] | None = None
) -> str:
    """The status screen as text (health judged at `now`), with the live role
    processes when `roles` is given."""
    now = now or datetime.now(UTC)
    view.refresh(now)
    lines: list[str] = []
    if roles:
        names = ", ".join(
            clean(f"{p.role}@{p.instance}", 60) + f" ({ago(p.last_beat, now)})" for p in roles
        )
        lines.append(f"roles alive: {names}")
    if not view.loops and not view.escalations:
        lines.append(
            "No events on the stream yet: nothing has run (or wrong --redis / $LOOPS_PREFIX)."
        )
        return "\n".join(lines)

    loops = sorted(view.loops.values(), key=lambda loop: loop.name)
    many = len(loops) >= MANY_LOOPS
    if many:  # problem loops first, grouped by what they need
        loops.sort(key=lambda loop: (loop.attention.rank, loop.name))
    passed = sum(loop.passed for loop in loops)
    total = sum(loop.total for loop in loops)
    lines.append(
        f"{len(loops)} loop(s)  passed {passed}/{total}  tokens {human_tokens(view.tokens)}"
        f"  cost ${view.cost_usd:.2f}  last event {ago(view.last_event, now)} ago"
    )
    lines += [line.strip() for line in view.spend.lines()[-1:]]  # cost per merged task
    if many:
        counts = Counter(loop.attention for loop in loops)
        lines.append(
            "by state: " + ", ".join(f"{a.value} {counts[a]}" for a in Attention if counts[a])
        )
    warnings = sorted({loop.sandbox_warning for loop in loops if loop.sandbox_warning})
    lines += [f"WARNING: {clean(w, 300)}" for w in warnings]
    lines += [f"BUDGET {loop.name}: {loop.budget}" for loop in loops if loop.budget]
    lines += ["", "LOOPS"]
    rows = []
    for loop in loops:
        health = loop.health.value
        if loop.health in (Health.STALE, Health.DEAD):
            health += f" ({ago(loop.last_seen, now)})"
        rows.append(
            ([loop.attention.value] if many else [])
            + [
                clean(loop.name, 32),
                _loop_status(loop, now),
                health,
                clean(loop.task_id or "-", 24),
                str(loop.iteration or "-"),
                f"{loop.passed}/{loop.total}",
                human_tokens(loop.tokens.total),
                f"${loop.cost_usd:.2f}",
            ]
        )
    headers = ["LOOP", "STATUS", "HEALTH", "TASK", "ITER", "PASSED", "TOKENS", "COST"]
    lines += table((["NEEDS"] if many else []) + headers, rows)

    rows = []
    quiet = [loop for loop in loops if many and loop.attention.rank > Attention.FAILING.rank]
    for loop in loops:
        if loop in quiet:
            continue
        for task in sorted(loop.tasks.values(), key=lambda t: t.task_id):
            rows.append(
                [
                    clean(loop.name, 32),
                    clean(task.task_id, 24),
                    task.status.value,
                    str(task.attempts),
                    _task_note(task),
                ]
            )
    if rows:
        lines += ["", "TASKS" + (" (of the loops that need attention)" if many else "")]
        lines += table(["LOOP", "TASK", "STATUS", "ATTEMPTS", "NOTE"], rows)
    if quiet:
        lines.append(f"  tasks of {len(quiet)} other loop(s): loops status --json")

    open_ = view.open_escalations()
    lines += ["", f"ESCALATIONS ({len(open_)} open)"]
    if open_:
        rows = [
            [
                e.id,
                e.status.value,
                e.severity.value if e.severity else "-",
                clean(f"{e.loop or '-'}/{e.task_id}" if e.task_id else e.loop or "-", 40),
                ago(e.raised, now),
                clean(e.question, 80),
            ]
            for e in open_
        ]
        lines += table(["ID", "STATUS", "SEVERITY", "WHERE", "AGE", "QUESTION"], rows)
        lines.append("  answer with: loops answer ID TEXT")

    queue = view.merge_queue()
    lines += ["", f"MERGE QUEUE ({len(queue)})"]
    recent_done = [m for m in view.merges if m not in queue][-3:]
    rows = [
        [
            m.status.value,
            clean(m.loop, 32),
            clean(m.task_id, 24),
            m.commit[:10],
            ago(m.ts, now),
            clean(m.reason or ", ".join(m.files), 60),
        ]
        for m in [*queue, *recent_done]
    ]
    if rows:
        lines += table(["STATUS", "LOOP", "TASK", "COMMIT", "AGE", "NOTE"], rows)

    if view.flaky:
        lines += ["", f"FLAKY CHECKS ({len(view.flaky)})"]
        rows = [
            [
                str(f.count),
                str(f.seen),
                "blocked" if f.blocked else "landed",
                f.escalation_id or "-",
                ago(f.ts, now),
                clean(f.command, 60),
            ]
            for f in sorted(view.flaky.values(), key=lambda f: -f.count)
        ]
        lines += table(["COUNT", "SEEN", "LAST", "ESCALATION", "AGE", "CHECK"], rows)

    if view.monitor_actions:
        lines += ["", "MONITOR (latest)"]
        rows = [
            [
                ago(a.ts, now),
                clean(a.loop or "-", 32),
                a.action.value,
                clean(a.rule, 24),
                clean(a.reason, 70),
            ]
            for a in view.monitor_actions[-5:]
        ]
        lines += table(["AGE", "LOOP", "ACTION", "RULE", "REASON"], rows)
    return "\n".join(lines)
