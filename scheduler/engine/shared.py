"""What the engine's parts share: their dependencies and the in-memory view that follows Redis.

Redis is the truth. Every part changes state through the store's atomic transitions first and
then brings this memory (pending index, fleet ledgers, retry and dead-letter indexes) in line,
so a restart can always rebuild it (engine/recovery.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.core.model import PendingTask, QueueSpec, WorkerView
from scheduler.core.placement import PlacementContext
from scheduler.dispatch import CeleryMessages
from scheduler.engine.pending import PendingIndex
from scheduler.engine.stats import QueueStats
from scheduler.fleet import Fleet, InFlight
from scheduler.metrics import Metrics
from scheduler.settings import Settings
from scheduler.state.interface import State
from scheduler.state.records import TaskRecord

ERROR_RATE_WINDOW = 100
"""Finished tasks per queue over which the error rate is computed."""


class Changes:
    """A count of the task changes the engine reported, and a way to wait for the next one:
    for readers that follow the whole task population rather than one task (the KEDA scaler's
    StreamIsActive). Bumped wherever watchers are told of a change, watched or not, and at every
    kick of placement (`Kick`)."""

    def __init__(self) -> None:
        self.count = 0
        self._next = asyncio.Event()
        self._waiting = 0

    def bump(self) -> None:
        """One more change: wake everyone waiting (on the hot path: costs nothing more when
        nobody waits)."""
        self.count += 1
        if self._waiting:
            self._next.set()
            self._next = asyncio.Event()

    async def after(self, seen: int) -> int:
        """Wait until the count differs from `seen` (at once if it already does); the new count."""
        self._waiting += 1
        try:
            while self.count == seen:
                await self._next.wait()
        finally:
            self._waiting -= 1
        return self.count


class Kick(asyncio.Event):
    """The placement loop's wake-up (`Shared.kick`): an event whose every `set` also counts as
    a change (`Changes`), so readers of the whole task population also hear of submissions,
    freed slots and workers joining, which set it without a task change to report."""

    def __init__(self, changes: Changes) -> None:
        super().__init__()
        self._changes = changes

    def set(self) -> None:
        self._changes.bump()
        super().set()


@dataclass
class Watchers:
    """WatchTask subscribers by task id; each gets every new version of its task."""

    by_task: dict[str, set[asyncio.Queue[TaskRecord]]] = field(default_factory=lambda: defaultdict(set))
    changes: Changes = field(default_factory=Changes)
    """Bumped at every change reported here, watched or not."""

    def notify(self, task: TaskRecord) -> None:
        self.changes.bump()
        for queue in self.by_task.get(task.task_id, ()):
            queue.put_nowait(task)


@dataclass
class Shared:
    """Dependencies and in-memory state of one engine; built once by `Engine`."""

    settings: Settings
    state: State
    messages: CeleryMessages
    """Builds the Celery message of each hand-out (the hand-out script queues it)."""
    metrics: Metrics
    clock: Callable[[], float]
    """Wall-clock seconds (stored times, retry schedules)."""
    monotonic: Callable[[], float]
    """Monotonic seconds (heartbeat and grace timers)."""
    fleet: Fleet = field(default_factory=Fleet)
    pending: PendingIndex = field(default_factory=PendingIndex)
    paused: set[str] = field(default_factory=set)
    watchers: Watchers = field(default_factory=Watchers)
    retrying: dict[str, str] = field(default_factory=dict)
    """Retrying task id -> queue."""
    dead: dict[str, str] = field(default_factory=dict)
    """Dead-lettered task id -> queue."""
    outcomes: dict[str, deque[bool]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=ERROR_RATE_WINDOW))
    )
    """Per queue: recent finished tasks, True for a failure (error rate)."""
    rate_limited: dict[str, str] = field(default_factory=dict)
    """Task id -> reason, for tasks the last placement round held back for a rate limit."""
    kick: asyncio.Event = field(init=False)
    """Set whenever placement may find new work to hand out (a `Kick`: each set is also a change)."""
    stats: QueueStats = field(init=False)
    """Queue counters not yet written to Redis."""
    _queue_specs: tuple[Settings | None, Mapping[str, QueueSpec]] = field(default=(None, {}), init=False, repr=False)
    """The settings' queues by name, made once (`placement_context`), with the settings they are of."""

    def __post_init__(self) -> None:
        self.kick = Kick(self.watchers.changes)
        self.stats = QueueStats(self.state.indexes, self.monotonic)

    def placement_context(self, now: float) -> PlacementContext:
        """The context of a placement decision at `now`. Its queue mapping is one object for as
        long as the settings are, which is how placement's kept verdicts know they still hold
        (`scheduler.core.placement.ShapeVerdicts`)."""
        settings = self.settings
        made_for, queues = self._queue_specs
        if made_for is not settings:
            queues = {q.name: q for q in settings.queues}
            self._queue_specs = (settings, queues)
        return PlacementContext(
            policy=settings.placement,
            prefetch=settings.dispatch_prefetch,
            now=now,
            queues=queues,
            chains=settings.fallback_chains,
            rate_limits=settings.rate_limits,
        )

    def worker_views(self, now: float) -> list[WorkerView]:
        return self.fleet.views(now, self.settings.placement.failure_window_seconds)

    def pending_task(self, record: TaskRecord, seq: int | None = None) -> PendingTask:
        """The record as the pending index holds it (at submission order `seq`, when given)."""
        return record.pending_task(self.settings.inline_payload_bytes, seq)

    def back_to_pending(self, record: TaskRecord) -> None:
        """Memory follows a task the store just moved back to pending."""
        self.pending.add(self.pending_task(record))
        self.watchers.notify(record)
        self.kick.set()

    async def notify_watchers(self, task_ids: Iterable[str]) -> None:
        """Tell WatchTask subscribers of these tasks their new state (one read, only if watched)."""
        self.watchers.changes.bump()
        watched = [task_id for task_id in task_ids if task_id in self.watchers.by_task]
        if watched:
            for record in await self.state.tasks.load(watched):
                self.watchers.notify(record)


def in_flight_of(record: TaskRecord) -> InFlight:
    """The fleet's ledger entry for a dispatched or running task."""
    return InFlight(
        task_id=record.task_id,
        attempt=record.attempt,
        queue=record.queue,
        gpu_index=record.gpu_index,
        gpu_memory_mb=record.gpu_memory_mb if record.gpu_index is not None else 0,
        served_queue=record.served_queue,
    )
