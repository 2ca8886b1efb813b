"""Queue statistics: counters kept in memory as work finishes and added to Redis about once a
second, so the hot path writes none of them.

Reads (ListQueues) add what is not yet written, so they are exact at once. A scheduler that
crashes loses at most the last second of these counters (never a task or its state); a clean
stop writes them out. Fields: completed, failed, dead_lettered, retried (counts; each task that
ended counts under one outcome only: one that failed and was dead-lettered is dead_lettered, not
failed), wait_sum/wait_count (submitted -> started) and run_sum/run_count (started -> ended) per
attempt that ended; `cancelled` is counted by the cancel script itself.

Beside the counters, `RecentActivity` keeps what `switchyard top` shows and nothing stores: the
waits of recently ended attempts (for percentiles) and submissions and finishes per second. It
lives in the leader's memory only, so a new leader starts it afresh.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable

from scheduler.core.model import TaskState
from scheduler.state.interface import Applied, IndexStore

FLUSH_SECONDS = 1.0

WAIT_WINDOW_SECONDS = 300.0
"""Wait percentiles cover the attempts that ended within this many seconds..."""
WAIT_SAMPLES_KEPT = 2048
"""...at most this many of the latest per queue (bounded memory under any load)."""
RATE_WINDOW_SECONDS = 60
"""Submission and finish rates are averaged over this many seconds."""

_OUTCOME_FIELD = {
    TaskState.SUCCEEDED: "completed",
    TaskState.FAILED: "failed",
    TaskState.DEAD_LETTERED: "dead_lettered",
    TaskState.RETRYING: "retried",
}
_FINISHED = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD_LETTERED})

Deltas = dict[str, dict[str, float]]


def _empty() -> Deltas:
    return defaultdict(lambda: defaultdict(float))


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile `share` (0-1) of `ordered` (sorted ascending; 0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


class RateWindow:
    """Events per second over the last RATE_WINDOW_SECONDS, counted in one-second buckets."""

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()
        """[second, count] pairs, oldest first; none older than the window."""

    def add(self, now: float, count: int = 1) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
        self._trim(second)

    def per_second(self, now: float) -> float:
        self._trim(int(now))
        return sum(count for _second, count in self._buckets) / RATE_WINDOW_SECONDS

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - RATE_WINDOW_SECONDS:
            self._buckets.popleft()


class RecentActivity:
    """Per queue, in memory: waits of recently ended attempts and submission and finish rates.

    Times are the engine's monotonic seconds."""

    def __init__(self) -> None:
        self._waits: dict[str, deque[tuple[float, float]]] = defaultdict(
            lambda: deque(maxlen=WAIT_SAMPLES_KEPT))
        self._submitted: dict[str, RateWindow] = defaultdict(RateWindow)
        self._finished: dict[str, RateWindow] = defaultdict(RateWindow)

    def waited(self, queue: str, now: float, seconds: float) -> None:
        """An attempt of `queue` that waited `seconds` (submitted -> started) ended at `now`."""
        self._waits[queue].append((now, seconds))

    def submitted(self, queue: str, now: float, count: int = 1) -> None:
        self._submitted[queue].add(now, count)

    def finished(self, queue: str, now: float, count: int = 1) -> None:
        self._finished[queue].add(now, count)

    def wait_percentiles(self, queue: str, now: float) -> tuple[float, float]:
        """(p50, p95) of the waits that ended within WAIT_WINDOW_SECONDS; (0, 0) when none did."""
        recent = sorted(wait for at, wait in self._waits.get(queue, ()) if now - at <= WAIT_WINDOW_SECONDS)
        return percentile(recent, 0.50), percentile(recent, 0.95)

    def rates(self, queue: str, now: float) -> tuple[float, float]:
        """(submitted, finished) per second over the last RATE_WINDOW_SECONDS."""
        submitted, finished = self._submitted.get(queue), self._finished.get(queue)
        return (submitted.per_second(now) if submitted else 0.0,
                finished.per_second(now) if finished else 0.0)


class QueueStats:
    """Per-queue counters not yet written to Redis, and the recent activity kept in memory."""

    def __init__(self, indexes: IndexStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.indexes = indexes
        self.clock = clock
        """Monotonic seconds, for the recent activity."""
        self.recent = RecentActivity()
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
        now = self.clock()
        self.recent.waited(applied.queue, now, applied.waited_seconds)
        if applied.state in _FINISHED:
            self.recent.finished(applied.queue, now)

    def failed_unstarted(self, queue: str) -> None:
        """Count a task that ended failed without ever starting (it has no wait or run time)."""
        self._unwritten[queue]["failed"] += 1
        self.recent.finished(queue, self.clock())

    def submitted(self, queue: str, count: int = 1) -> None:
        """Count accepted submissions (recent activity only: the metrics count them for good)."""
        self.recent.submitted(queue, self.clock(), count)

    def cancelled(self, queue: str) -> None:
        """Count a cancelled task (recent activity only: the cancel script counts it in Redis)."""
        self.recent.finished(queue, self.clock())

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
