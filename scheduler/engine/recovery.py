"""Recovery: rebuild the engine's memory from Redis after a (re)start.

Nothing needs re-publishing: a hand-out's commit and its Celery message are one atomic script."""

from __future__ import annotations

import logging

from scheduler import crashpoints
from scheduler.core.model import IN_FLIGHT_STATES, TaskState, WorkerType
from scheduler.engine.shared import Shared, in_flight_of
from scheduler.fleet import Worker
from scheduler.state.records import WorkerRecord

log = logging.getLogger("switchyard.scheduler.engine.recovery")


async def recover(shared: Shared) -> None:
    """Pending tasks, paused queues, retry and dead-letter indexes, in-flight ledgers."""
    state = shared.state
    crashpoints.reached("recover:start")
    configured = {q.name for q in shared.settings.queues if q.paused}
    stored = await state.controls.paused_queues()
    shared.paused = stored | configured
    for queue in configured - stored:
        await state.controls.set_paused(queue, True)
    for record in await state.tasks.load(await state.indexes.pending_ids()):
        if record.state is TaskState.PENDING:
            shared.pending.add(shared.pending_task(record))
    crashpoints.reached("recover:pending")
    for record in await state.tasks.load(await state.indexes.due_retries(float("inf"), limit=1_000_000)):
        if record.state is TaskState.RETRYING:
            shared.retrying[record.task_id] = record.queue
    for record in await state.tasks.load([task_id for task_id, _at in await state.indexes.dead_letters()]):
        shared.dead[record.task_id] = record.queue
    known = await state.controls.known_workers()
    for worker_id, task_ids in (await state.indexes.in_flight_ledgers()).items():
        registration = known.get(worker_id) or WorkerRecord(worker_id, WorkerType.CPU, 1)
        worker = Worker(
            worker_id=worker_id,
            worker_type=registration.worker_type,
            slots=registration.slots,
            labels=dict(registration.labels),
            agent_instance=registration.agent_instance,
            disconnected_at=shared.monotonic(),
        )
        for record in await state.tasks.load(task_ids):
            if record.state in IN_FLIGHT_STATES and record.worker_id == worker_id:
                worker.in_flight[record.task_id] = in_flight_of(record)
        shared.fleet.add(worker)
    crashpoints.reached("recover:ledgers")
    log.info("recovered %d pending task(s), %d worker ledger(s)", len(shared.pending), len(shared.fleet))
