"""Queue statistics: counters kept in memory as work finishes and added to Redis about once a
second, so the hot path writes none of them.

Reads (ListQueues) add what is not yet written, so they are exact at once. A scheduler that
crashes loses at most the last second of these counters (never a task or its state); a clean
stop writes them out. Fields: completed, failed, retried (counts), wait_sum/wait_count (submitted
-> started) and run_sum/run_count (started -> ended) per attempt that ended; `cancelled` is
counted by the cancel script itself.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from scheduler.core.model import TaskState
from scheduler.state.interface import Applied, IndexStore

FLUSH_SECONDS = 1.0

_OUTCOME_FIELD = {
    TaskState.SUCCEEDED: "completed",
    TaskState.FAILED: "failed",
    TaskState.DEAD_LETTERED: "failed",
    TaskState.RETRYING: "retried",
}

Deltas = dict[str, dict[str, float]]


def _empty() -> Deltas:
    return defaultdict(lambda: defaultdict(float))


class QueueStats:
    """Per-queue counters not yet written to Redis."""

    def __init__(self, indexes: IndexStore) -> None:
        self.indexes = indexes
        self._unwritten: Deltas = _empty()
        self._writing: Deltas = _empty()

    def ended(self, applied: Applied) -> None:
        """Count an attempt that ended (a report the store applied)."""
        field = _OUTCOME_FIELD.get(applied.state)
        if field is None:
            return
        row = self._unwritten[applied.queue]
        row[field] += 1
        row["wait_sum"] += applied.waited_seconds
        row["wait_count"] += 1
        row["run_sum"] += applied.ran_seconds
        row["run_count"] += 1

    def failed_unstarted(self, queue: str) -> None:
        """Count a task that ended failed without ever starting (it has no wait or run time)."""
        self._unwritten[queue]["failed"] += 1

    def add_unwritten(self, stored: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """`stored` (from Redis) plus everything counted since."""
        merged = {queue: dict(row) for queue, row in stored.items()}
        for deltas in (self._writing, self._unwritten):
            for queue, row in deltas.items():
                target = merged.setdefault(queue, {})
                for name, amount in row.items():
                    target[name] = target.get(name, 0.0) + amount
        return merged

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> None:
        """Write what was counted; on failure keep it for the next try."""
        if not self._unwritten:
            return
        self._writing, self._unwritten = self._unwritten, _empty()
        try:
            await self.indexes.add_stats(self._writing)
        except BaseException:
            for queue, row in self._writing.items():
                for name, amount in row.items():
                    self._unwritten[queue][name] += amount
            raise
        finally:
            self._writing = _empty()
