"""Liveness: declare a worker lost when its heartbeats stop or its stream stays down past the
grace period, and move its dispatched and running work back to pending under a new attempt."""

from __future__ import annotations

import asyncio
import logging

from scheduler.engine.shared import Shared
from scheduler.fleet import Worker

log = logging.getLogger("switchyard.scheduler.engine.liveness")

LOST_WORKER_RETENTION_SECONDS = 600.0
"""A lost worker stays listed (as lost) this long, then is forgotten."""


class Liveness:
    """Watches heartbeats and reconnection grace; owns declaring a worker lost."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def run(self) -> None:
        settings = self.shared.settings
        tick = min(0.25, settings.heartbeat_interval_seconds / 2)
        while True:
            await asyncio.sleep(tick)
            await self.check()

    async def check(self) -> None:
        """One pass over the fleet."""
        shared = self.shared
        settings = shared.settings
        now = shared.monotonic()
        for worker in shared.fleet:
            if worker.lost:
                if now - (worker.lost_at or now) > LOST_WORKER_RETENTION_SECONDS:
                    shared.fleet.remove(worker.worker_id)
                continue
            if worker.connected and now - worker.last_heartbeat > settings.heartbeat_timeout_seconds:
                await self.declare_lost(worker, f"no heartbeat for {settings.heartbeat_timeout_seconds:g}s")
            elif (
                not worker.connected
                and worker.disconnected_at is not None
                and now - worker.disconnected_at > settings.lost_grace_seconds
            ):
                await self.declare_lost(worker, f"not reconnected within {settings.lost_grace_seconds:g}s")

    async def declare_lost(self, worker: Worker, reason: str) -> None:
        """Mark the worker lost, re-queue its attempts (fenced) and purge its Celery queue."""
        shared = self.shared
        worker.lost = True
        worker.connected = False
        moved = list(worker.in_flight.values())
        worker.in_flight.clear()
        worker.outbox.put_nowait(None)  # ends the stream writer, if any
        shared.metrics.workers_lost.inc()
        log.warning("worker %s lost: %s; moving %d task(s)", worker.worker_id, reason, len(moved))
        for item in moved:
            record = await shared.state.tasks.requeue(
                item.task_id, worker.worker_id, f"re-queued: worker {worker.worker_id} was lost ({reason})"
            )
            if record is not None:
                shared.metrics.requeued.inc()
                shared.back_to_pending(record)
        await shared.state.controls.purge_worker_queue(worker.worker_id)
        worker.lost_at = shared.monotonic()
        shared.kick.set()
