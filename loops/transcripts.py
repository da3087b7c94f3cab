"""Files seed users look at: one transcript per iteration, `global-transcript.log`,
and `health.json` (the seed's fields and statuses)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from events import LoopStatus
from events.secrets import redact
from loops.harness import Health, Progress, write_health
from loops.runners import AgentResult

# health.json keeps the seed's four statuses; richer ones map onto them.
_SEED_STATUS = {
    LoopStatus.STARTING: LoopStatus.STARTING,
    LoopStatus.RUNNING: LoopStatus.RUNNING,
    LoopStatus.WAITING: LoopStatus.RUNNING,
    LoopStatus.PAUSED: LoopStatus.RUNNING,
    LoopStatus.IDLE: LoopStatus.RUNNING,
    LoopStatus.STOPPED: LoopStatus.STOPPED,
    LoopStatus.ERROR: LoopStatus.ERROR,
}


class Transcripts:
    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, loop: str, task_id: str, n: int, prompt: str, result: AgentResult) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.root / f"{stamp}-iter{n:04d}-{_safe(task_id)}.log"
        failure = result.failure.value if result.failure else "none"
        body = (
            f"# loop {loop} · task {task_id} · iteration {n}\n"
            f"# exit={result.exit_code} duration={result.duration_s:.1f}s failure={failure}"
            f" session={result.session_id}\n\n## prompt\n{redact(prompt)}\n\n"
            f"## reply\n{result.reply}\n"
        )
        if result.transcript:
            body += f"\n## transcript\n{result.transcript}\n"
        path.write_text(body)
        with (self.root / "global-transcript.log").open("a") as fh:
            fh.write(
                f"[{stamp}] {loop} {task_id} iteration {n}: failure={failure} "
                f"reply={' '.join(result.reply.split())[:300]!r}\n"
            )
        return path

    def write_health(
        self, path: Path, name: str, status: LoopStatus, task: str | None, passed: int, total: int
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        health = Health(
            loop_name=name,
            status=_SEED_STATUS[status],
            current_test=task,
            progress=Progress(passed=passed, total=total),
            last_heartbeat=datetime.now(UTC),
            pid=os.getpid(),
        )
        if status is LoopStatus.PAUSED:  # additive: the seed's status stays "running"
            health = Health.model_validate({**health.model_dump(), "paused": True})
        write_health(path, health)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]
