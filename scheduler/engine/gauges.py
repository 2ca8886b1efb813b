"""Gauges: refresh the Prometheus gauges from the engine's memory, once a second.

Only a leading scheduler's engine runs this loop. When its term ends the gauges it set are
cleared, so a standby exports no queue or worker figures (they would be stale, and summing over
schedulers would count every queue twice).

Per-worker series exist while the worker is connected: a worker that is lost, or disconnected
and not back yet, has no current slots or GPU figures, and its series are removed (it is still
counted in `switchyard_workers{state="lost"}` until it is forgotten).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from prometheus_client import Gauge

# The GPU need classification gives each class of work: one rule, kept in classify.py.
from scheduler.core.classify import _CLASS_GPU_NEED
from scheduler.core.model import PendingTask, WorkerType, WorkerView
from scheduler.core.placement import filters
from scheduler.core.placement.policy import PlacementContext
from scheduler.engine.queries import Queries
from scheduler.engine.shared import Shared
from scheduler.fleet import OPERATOR_STATES
from scheduler.metrics import MIB

REFRESH_SECONDS = 1.0

QUEUE_LEVEL_FILTERS = ("draining", "quarantine", "capability", "fallback_wait")
"""The placement filters that judge a worker against a queue's class of work rather than against
one task: `switchyard_queue_servable_workers` counts the workers that pass these. The others read
a task's own needs (labels, GPU memory, its registered name) or the worker's momentary capacity
(free slots, a queue's per-worker limit), which says nothing about whether the queue can be
served at all."""

_QUEUE_STAGES: filters.Stages = tuple(
    (f.per_queue, (f,)) for f in filters.FILTERS if f.name in QUEUE_LEVEL_FILTERS
)

_LONG_AGO = 1e9
"""Seconds a representative task is taken to have waited: its whole fallback chain is open to it."""


def servable_workers(views: Iterable[WorkerView], ctx: PlacementContext) -> dict[str, int]:
    """Per queue: how many of these workers pass the queue-level placement filters for a task of
    the queue's class of work (with the GPU need classification gives that class) that waited
    long enough to spill down its whole fallback chain."""
    workers = list(views)
    counts: dict[str, int] = {}
    for spec in ctx.queues.values():
        task = PendingTask(
            task_id="", queue=spec.name, priority=spec.default_priority, seq=0,
            task_class=spec.task_class, gpu=_CLASS_GPU_NEED[spec.task_class], submitted_at=ctx.now - _LONG_AGO,
        )
        counts[spec.name] = sum(
            1 for view in workers if filters.judge(filters.Trial(task, view, ctx), _QUEUE_STAGES) is None
        )
    return counts


class Gauges:
    """Keeps the scheduler's gauges current while this engine runs."""

    def __init__(self, shared: Shared, queries: Queries) -> None:
        self.shared = shared
        self.queries = queries
        self._worker_series: dict[Gauge, set[tuple[str, ...]]] = {}
        shared.metrics.declare_queues(spec.name for spec in shared.settings.queues)

    async def run(self) -> None:
        try:
            while True:
                self.refresh()
                await asyncio.sleep(REFRESH_SECONDS)
        finally:
            self.clear()

    def refresh(self) -> None:
        """Set every gauge from memory (no state-store round trip)."""
        shared = self.shared
        m = shared.metrics
        now = shared.clock()
        processing = self.queries.processing_by_queue()
        servable = servable_workers(shared.worker_views(now), shared.placement_context(now))
        for spec in shared.settings.queues:
            m.queue_depth.labels(spec.name).set(shared.pending.depth(spec.name))
            m.queue_processing.labels(spec.name).set(processing[spec.name])
            m.queue_paused.labels(spec.name).set(1 if spec.name in shared.paused else 0)
            m.queue_servable_workers.labels(spec.name).set(servable[spec.name])
        states: Counter[tuple[str, str]] = Counter()
        free_by_type: Counter[str] = Counter()
        series: dict[Gauge, dict[tuple[str, ...], float]] = {
            m.worker_slots_free: {}, m.gpu_memory_free: {}, m.gpu_memory_total: {}, m.gpu_utilization: {},
        }
        for worker in shared.fleet:
            state = worker.operator_state(now)
            states[(worker.worker_type.value, state)] += 1
            if state == "ready":
                free_by_type[worker.worker_type.value] += worker.free_slots
            if state == "lost":
                continue
            series[m.worker_slots_free][(worker.worker_id,)] = worker.free_slots
            for gpu in worker.gpus:
                at = (worker.worker_id, str(gpu.index))
                series[m.gpu_memory_free][at] = gpu.memory_free_mb * MIB
                series[m.gpu_memory_total][at] = gpu.memory_total_mb * MIB
                series[m.gpu_utilization][at] = gpu.utilization_percent / 100
        for worker_type in WorkerType:
            m.slots_free.labels(worker_type.value).set(free_by_type[worker_type.value])
            for state in OPERATOR_STATES:
                m.workers.labels(worker_type.value, state).set(states[(worker_type.value, state)])
        for gauge, values in series.items():
            self._set_exactly(gauge, values)

    def _set_exactly(self, gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
        """Set these series and remove the ones set before that are gone (a scrape never sees
        the family emptied half-way, as it would with clear-then-set)."""
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        for labels in self._worker_series.get(gauge, set()) - values.keys():
            gauge.remove(*labels)
        self._worker_series[gauge] = set(values)

    def clear(self) -> None:
        """Drop every series this loop sets (the term ended: this scheduler no longer knows)."""
        m = self.shared.metrics
        for gauge in (m.queue_depth, m.queue_processing, m.queue_paused, m.queue_servable_workers,
                      m.workers, m.slots_free, m.worker_slots_free, m.gpu_memory_free, m.gpu_memory_total,
                      m.gpu_utilization):
            gauge.clear()
        self._worker_series.clear()
