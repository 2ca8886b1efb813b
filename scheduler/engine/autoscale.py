"""Autoscaling demand: what a pool of identical workers is asked to serve now (the pure rules
are in scheduler/core/demand.py), and waiting for the next change that may move it. The KEDA
external scaler (scheduler/api/keda.py) answers from here.

The demand is computed afresh on every call: one pass over the pending tasks in memory (a lookup
per task: placement's filters run once per group of alike tasks) and over the in-flight ledgers.
A large backlog is judged in chunks, handing the event loop back between them, so that a million
pending tasks delay nothing else.

`next_change` is event-driven: it returns when the engine reports a task change (any hand-out,
report, requeue or cancel) or kicks placement (a submission, a freed slot, a worker joining or
leaving): both bump `Watchers.changes`. It also returns after `RECHECK_SECONDS` without either,
because two inputs of the demand move with time alone: how long a GPU-preferred task has waited
(after which CPU workers may take it) and how far a fallback chain has reached. Under a stream of
changes it returns at most every `MIN_RECOMPUTE_SECONDS`, which bounds what a busy scheduler
spends recomputing demand for each open StreamIsActive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from scheduler.core.demand import Demand, PendingJudge, Pool, RunningWork, running_demand
from scheduler.engine.shared import Shared
from scheduler.errors import InvalidArgument

JUDGE_CHUNK = 20_000
"""Pending tasks judged between two yields to the event loop."""
RECHECK_SECONDS = 5.0
"""Longest wait of `next_change` (the time-driven inputs; see the module docstring)."""
MIN_RECOMPUTE_SECONDS = 0.5
"""Shortest time between two returns of `next_change` for one caller (a burst of changes settles
into one recompute)."""


class Autoscale:
    """Demand of worker pools, for the KEDA scaler."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def check(self, pool: Pool) -> None:
        """Raise InvalidArgument when the pool names a queue the configuration does not have."""
        if pool.queue and self.shared.settings.queue(pool.queue) is None:
            known = ", ".join(q.name for q in self.shared.settings.queues)
            raise InvalidArgument(f"scaler metadata names queue {pool.queue!r}, which is not configured; "
                                  f"known queues: {known}")

    async def demand(self, pool: Pool) -> Demand:
        """What the pool could serve now: pending tasks a replica could run, tasks in flight on
        its workers (scheduler/core/demand.py)."""
        self.check(pool)
        shared = self.shared
        judge = PendingJudge(pool, shared.placement_context(shared.clock()), shared.paused)
        # Judge a snapshot: the index changes while the loop runs between chunks.
        pending = list(shared.pending)
        total = Demand()
        for start in range(0, len(pending), JUDGE_CHUNK):
            if start:
                await asyncio.sleep(0)
            total += judge.demand(pending[start : start + JUDGE_CHUNK])
        running = (
            RunningWork(item.queue, item.gpu_memory_mb, worker.worker_type, worker.labels)
            for worker in shared.fleet if not worker.lost
            for item in worker.in_flight.values()
        )
        return total + running_demand(pool, running)

    async def activity(self, pool: Pool) -> AsyncIterator[bool]:
        """Whether the pool has demand: now, then each time that flips (StreamIsActive)."""
        self.check(pool)
        mark, last = self.shared.watchers.changes.count, None
        while True:
            computed_at = self.shared.monotonic()
            active = (await self.demand(pool)).tasks > 0
            if active != last:
                last = active
                yield active
            mark = await self.next_change(mark, computed_at)

    async def next_change(self, seen: int, last_return: float) -> int:
        """Wait for a change after mark `seen` that may move any pool's demand (at most
        `RECHECK_SECONDS`), and until `MIN_RECOMPUTE_SECONDS` after monotonic time `last_return`;
        the new mark."""
        changes = self.shared.watchers.changes
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changes.after(seen), RECHECK_SECONDS)
        await asyncio.sleep(max(0.0, last_return + MIN_RECOMPUTE_SECONDS - self.shared.monotonic()))
        return changes.count
