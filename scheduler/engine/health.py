"""The health summary behind GET /api/v1/health: one answer to "is the scheduler doing its job",
for scripts and pipelines that poll it.

Overall status: `ok` with no warning, `degraded` with any (the HTTP layer answers `down` when
this scheduler cannot serve at all: a standby, or its state store unreachable). Warnings, in
words a person can act on:

* `no worker can serve <queue>`: the queue has pending tasks and no connected worker can run its
  work (with KEDA scaling a pool from zero this holds until the first replica connects);
* `dead letters growing`: a task was dead-lettered within the last `DEAD_LETTER_WINDOW_SECONDS`;
* `worker <id> is quarantined` / `worker <id> is lost`;
* `<queue>: <alert>`: the queue's own thresholds (depth, error rate) crossed, as `ListQueues`
  reports them.

A queue's status is `paused`, else `no_workers` (pending tasks and no worker can serve it),
else `ok`.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.engine.queries import NO_WORKER_WARNING, Queries
from scheduler.engine.shared import Shared

DEAD_LETTER_WINDOW_SECONDS = 900.0
"""A dead letter this recent makes `dead letters growing` a warning."""


@dataclass(frozen=True)
class QueueHealth:
    """One queue in the health summary."""

    pending: int
    status: str
    """`ok`, `paused` or `no_workers`."""


@dataclass(frozen=True)
class HealthReport:
    """The health summary of a leading scheduler."""

    status: str
    """`ok` or `degraded`."""
    workers_connected: int
    queued: int
    """Tasks pending, every queue."""
    active: int
    """Tasks dispatched or running, every queue."""
    queues: dict[str, QueueHealth]
    warnings: tuple[str, ...]


class Health:
    """Builds the health summary from the engine's queries."""

    def __init__(self, shared: Shared, queries: Queries) -> None:
        self.shared = shared
        self.queries = queries

    async def report(self) -> HealthReport:
        """The summary now (see the module docstring)."""
        shared = self.shared
        now = shared.clock()
        warnings: list[str] = []
        queues: dict[str, QueueHealth] = {}
        views = await self.queries.list_queues()
        for view in views:
            name = view.spec.name
            starved = view.pending > 0 and view.workers == 0
            if view.paused:
                status = "paused"
            elif starved:
                status = "no_workers"
            else:
                status = "ok"
            queues[name] = QueueHealth(view.pending, status)
            if starved and not view.paused:
                warnings.append(f"no worker can serve {name}")
            warnings += [f"{name}: {alert}" for alert in view.warnings if alert != NO_WORKER_WARNING]
        letters = await shared.state.indexes.dead_letters()
        if letters and letters[0][1] >= now - DEAD_LETTER_WINDOW_SECONDS:
            warnings.append("dead letters growing")
        connected = 0
        for worker in self.queries.workers():
            state = worker.operator_state(now)
            connected += state != "lost"
            if state in ("quarantined", "lost"):
                warnings.append(f"worker {worker.worker_id} is {state}")
        return HealthReport(
            status="degraded" if warnings else "ok",
            workers_connected=connected,
            queued=sum(view.pending for view in views),
            active=sum(view.processing for view in views),
            queues=queues,
            warnings=tuple(warnings),
        )
