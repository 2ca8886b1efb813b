"""Operator and client controls that change state: cancel a task, pause or resume a queue, drain
and undrain a worker, end a worker's quarantine.

Drain and quarantine are kept in the leader's memory, as the fleet is: a drain lasts until it is
undone, the worker is declared lost (it rejoins ready), or leadership moves (the new leader
learns the fleet afresh from the agents' hellos). Undrain and unquarantine are idempotent: on a
worker that is not drained (quarantined) they change nothing and say so (`WorkerChange.changed`),
so a retried call cannot fail for having worked the first time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from scheduler import crashpoints
from scheduler.core.model import IN_FLIGHT_STATES, TaskState
from scheduler.engine.queries import Queries
from scheduler.engine.shared import Shared
from scheduler.engine.views import QueueView
from scheduler.errors import FailedPrecondition, InvalidArgument, NotFound
from scheduler.fleet import OperatorStatus, Worker
from scheduler.state.interface import CancelStatus
from scheduler.state.records import TaskRecord

log = logging.getLogger("switchyard.scheduler.engine.controls")


@dataclass(frozen=True)
class WorkerChange:
    """What undrain or unquarantine did to a worker."""

    worker: Worker
    previous: OperatorStatus
    """The worker's operator state before the call."""
    changed: bool
    """False when there was nothing to undo."""


class Controls:
    """Cancel, pause/resume, drain/undrain, unquarantine."""

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
        shared.stats.cancelled(outcome.task.queue)
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
        """No new work for the worker; what it runs finishes. Draining it again changes nothing."""
        worker = self.queries.worker(worker_id)
        if worker.lost:
            raise FailedPrecondition(f"worker {worker_id} is lost; there is nothing to drain")
        if worker.draining:
            return worker
        now = self.shared.clock()
        worker.draining = True
        worker.drained_at = now
        worker.note_state("draining" if worker.in_flight else "drained", now)
        worker.outbox.put_nowait(("drain", "drained by operator"))
        log.info("worker %s draining with %d task(s) in flight", worker_id, len(worker.in_flight))
        return worker

    async def undrain(self, worker_id: str) -> WorkerChange:
        """Give a drained (or draining) worker new work again; a placement round follows at once."""
        worker = self.queries.worker(worker_id)
        shared = self.shared
        now = shared.clock()
        previous = worker.operator_status(now)
        if not worker.draining:
            return WorkerChange(worker, previous, changed=False)
        worker.draining = False
        worker.drained_at = 0.0
        worker.note_state(worker.operator_status(now).state, now)
        shared.kick.set()
        log.info("worker %s undrained by operator (it was %s)", worker_id, previous.state)
        return WorkerChange(worker, previous, changed=True)

    async def unquarantine(self, worker_id: str) -> WorkerChange:
        """End the worker's quarantine now and forget its recent failures; placement follows."""
        worker = self.queries.worker(worker_id)
        shared = self.shared
        now = shared.clock()
        previous = worker.operator_status(now)
        changed = worker.end_quarantine(now)
        if changed:
            worker.note_state(worker.operator_status(now).state, now)
            shared.kick.set()
            log.info("worker %s quarantine ended by operator", worker_id)
        return WorkerChange(worker, previous, changed)
