"""Operator and client controls that change state: cancel a task, pause or resume a queue, drain
a worker."""

from __future__ import annotations

import logging

from scheduler import crashpoints
from scheduler.core.model import IN_FLIGHT_STATES, TaskState
from scheduler.engine.queries import Queries
from scheduler.engine.shared import Shared
from scheduler.engine.views import QueueView
from scheduler.errors import FailedPrecondition, InvalidArgument, NotFound
from scheduler.fleet import Worker
from scheduler.state.interface import CancelStatus
from scheduler.state.records import TaskRecord

log = logging.getLogger("switchyard.scheduler.engine.controls")


class Controls:
    """Cancel, pause/resume, drain."""

    def __init__(self, shared: Shared, queries: Queries) -> None:
        self.shared = shared
        self.queries = queries

    async def cancel(self, task_id: str) -> tuple[TaskRecord, TaskState]:
        """Cancel a task; returns it and the state it was in."""
        if not task_id:
            raise InvalidArgument("task_id is empty")
        shared = self.shared
        crashpoints.reached("cancel:before")
        outcome = await shared.state.tasks.cancel(task_id, shared.clock(), "cancelled by client",
                                                  shared.settings.result_ttl_seconds)
        crashpoints.reached("cancel:after")
        if outcome.status is CancelStatus.MISSING or outcome.task is None or outcome.previous_state is None:
            raise NotFound(f"task {task_id!r} does not exist (or its result expired)")
        previous = outcome.previous_state
        if outcome.status is CancelStatus.TERMINAL:
            raise FailedPrecondition(f"task {task_id} already ended as {previous}; there is nothing to cancel")
        shared.pending.remove(task_id)
        shared.retrying.pop(task_id, None)
        shared.metrics.finished.labels(outcome.task.queue, TaskState.CANCELLED.value).inc()
        if previous in IN_FLIGHT_STATES:
            owner = shared.fleet.get(outcome.task.worker_id)
            item = owner.in_flight.pop(task_id, None) if owner else None
            if owner is not None and item is not None:
                owner.outbox.put_nowait(("cancel", task_id, item.attempt))
            shared.kick.set()
        shared.watchers.notify(outcome.task)
        return outcome.task, previous

    async def set_paused(self, name: str, paused: bool) -> QueueView:
        """Pause or resume a logical queue (durably); pending work waits, nothing is lost."""
        await self.queries.queue_view(name)
        shared = self.shared
        await shared.state.controls.set_paused(name, paused)
        if paused:
            shared.paused.add(name)
        else:
            shared.paused.discard(name)
            shared.kick.set()
        log.info("queue %s %s", name, "paused" if paused else "resumed")
        return await self.queries.queue_view(name)

    async def drain(self, worker_id: str) -> Worker:
        """No new work for the worker; what it runs finishes."""
        worker = self.queries.worker(worker_id)
        if worker.lost:
            raise FailedPrecondition(f"worker {worker_id} is lost; there is nothing to drain")
        worker.draining = True
        worker.outbox.put_nowait(("drain", "drained by operator"))
        log.info("worker %s draining with %d task(s) in flight", worker_id, len(worker.in_flight))
        return worker
