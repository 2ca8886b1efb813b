"""Gauges: refresh the Prometheus gauges from the engine's memory and the store, once a second."""

from __future__ import annotations

import asyncio

from scheduler.engine.queries import Queries
from scheduler.engine.shared import Shared

REFRESH_SECONDS = 1.0


class Gauges:
    """Keeps the scheduler's gauges current."""

    def __init__(self, shared: Shared, queries: Queries) -> None:
        self.shared = shared
        self.queries = queries

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_SECONDS)

    async def refresh(self) -> None:
        """Set every gauge from memory (no state-store round trip)."""
        shared = self.shared
        m = shared.metrics
        processing = self.queries.processing_by_queue()
        for spec in shared.settings.queues:
            m.queue_depth.labels(spec.name).set(shared.pending.depth(spec.name))
            m.queue_processing.labels(spec.name).set(processing[spec.name])
            m.queue_paused.labels(spec.name).set(1 if spec.name in shared.paused else 0)
        for worker_type, workers in shared.fleet.by_type().items():
            live = [w for w in workers if w.connected and not w.lost]
            m.workers_connected.labels(worker_type.value).set(len(live))
            m.free_slots.labels(worker_type.value).set(sum(w.free_slots for w in live if w.accepting))
        m.worker_free_slots.clear()
        m.gpu_memory_free.clear()
        m.gpu_utilization.clear()
        for worker in shared.fleet:
            if worker.lost:
                continue
            m.worker_free_slots.labels(worker.worker_id).set(worker.free_slots)
            for gpu in worker.gpus:
                m.gpu_memory_free.labels(worker.worker_id, str(gpu.index)).set(gpu.memory_free_mb)
                m.gpu_utilization.labels(worker.worker_id, str(gpu.index)).set(gpu.utilization_percent)
