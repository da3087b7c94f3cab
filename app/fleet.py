"""Where a distributed loop's agent iterations run (`LOOPS_AGENT_QUEUE`).

Unset, a loop runs its agent in its own process, as always. Set (compose sets it to
`loops-agents`), each loop's coordinator (`loops worker`, `loops up`: both build their
loops' runners here, through `app.compose.Wiring.worker`) enqueues one iteration at a time on that rq
queue and any `rq worker -w cli.rqworker.SimpleWorker loops-agents` on any host runs
it (`loops.jobs`); `docker compose up --scale agents=N` adds capacity.
"""

from __future__ import annotations

from pathlib import Path

from bus import RedisBus, connect
from infra.settings import Settings
from loops.project import Loop
from loops.runners import AgentRunner, make_runner
from loops.runners.queued import AgentQueue, QueuedRunner

ENV_QUEUE = "LOOPS_AGENT_QUEUE"  # the `agent_queue` setting


def agent_runner(
    bus: RedisBus,
    loop: Loop,
    agent: str,
    repo: Path,
    main: str,
    remote: str | None,
    settings: Settings,
) -> AgentRunner:
    """The runner of `loop`'s agent: in this process, or on the rq queue `LOOPS_AGENT_QUEUE`."""
    runner = make_runner(agent, model=loop.config.model, base_dir=loop.dir, settings=settings)
    name = (settings.agent_queue or "").strip()
    if not name:
        return runner
    from rq import Queue

    kind, sep, arg = agent.partition(":")
    if kind.strip().lower() == "script" and sep and not Path(arg.strip()).is_absolute():
        # Agent hosts see the project at the same path (compose) or bring the file along.
        agent = f"script:{loop.dir / Path(arg.strip()).expanduser()}"
    # The bus's own credentials (a password in the URL or $LOOPS_REDIS_PASSWORD).
    queue = Queue(name, connection=connect(bus.settings))
    where = AgentQueue(queue=queue, prefix=bus.prefix, repo=repo, main=main, remote=remote)
    return QueuedRunner(runner, agent, where, model=loop.config.model, sandbox=loop.config.sandbox)
