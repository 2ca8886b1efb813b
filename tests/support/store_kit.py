"""What the Redis store's integration tests share: the key layout they use, tasks, reports and
hand-outs as the engine builds them, and the steps that bring a task to a given state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from switchyard.wire import Keys

from scheduler.core.model import TaskState
from scheduler.state.interface import (
    HandOutRequest,
    IdempotencyConflict,
    LifecycleEvent,
    NewTask,
    Retention,
    SubmitOutcome,
)
from scheduler.state.records import TaskRecord
from scheduler.state.store import RedisState
from tests.support.celery_queue import hand_out_request

PREFIX = "t"
KEYS = Keys(PREFIX)
SUBMITTED_AT = 1000.0
RETENTION = Retention(result_ttl_seconds=3600, dead_letter_ttl_seconds=7200)

Scenario = Callable[[RedisState], Awaitable[Any]]


def run_scenario(redis_url: str, scenario: Scenario) -> Any:
    """Run an async scenario against a RedisState on `redis_url`, on a fresh event loop."""

    async def main() -> Any:
        state = RedisState(redis_url, PREFIX)
        try:
            return await scenario(state)
        finally:
            await state.close()

    return asyncio.run(main())


def new_task(task_id: str, *, queue: str = "cpu_standard", idem: str = "", digest: str = "d1",
             payload_bytes: int = 12, args_json: str = "[1, 2]", kwargs_json: str = '{"x": 1}') -> NewTask:
    record = TaskRecord(task_id=task_id, name="demo.add", queue=queue, priority=5,
                        submitted_at=SUBMITTED_AT, payload_bytes=payload_bytes,
                        payload_digest=digest, idempotency_key=idem, reason="classified")
    return NewTask(record, args_json=args_json, kwargs_json=kwargs_json)


def report(kind: str, task_id: str, attempt: int, ts: float, **fields: str) -> LifecycleEvent:
    return LifecycleEvent(stream_id="0-1", kind=kind, task_id=task_id, attempt=attempt, worker_id="w1",
                          ts=ts, fields=fields)


def hand_out(task_id: str, worker_id: str = "w1", served_queue: str = "", gpu_index: int | None = None,
             attempt: int = 1, by_reference: bool = False) -> HandOutRequest:
    return hand_out_request(task_id, worker_id, attempt, by_reference=by_reference, gpu_index=gpu_index,
                            served_queue=served_queue, task_name="demo.add")


async def submitted(state: RedisState, *tasks: NewTask) -> list[SubmitOutcome]:
    (outcomes,), handed = await state.tasks.submit([list(tasks)], 60)
    assert handed == [] and not isinstance(outcomes, IdempotencyConflict)
    return outcomes


async def submitted_and_dispatched(state: RedisState, task_id: str, worker_id: str = "w1",
                                   served_queue: str = "") -> TaskRecord:
    await submitted(state, new_task(task_id))
    assert await state.tasks.dispatch([hand_out(task_id, worker_id, served_queue)], 1002.0) == [True]
    record = await state.tasks.get(task_id)
    assert record is not None
    return record


async def running(state: RedisState, task_id: str, served_queue: str = "") -> TaskRecord:
    await submitted_and_dispatched(state, task_id, served_queue=served_queue)
    [applied] = await state.tasks.apply([report("started", task_id, 1, 1005.0)], [None], RETENTION)
    assert applied is not None and applied.state is TaskState.RUNNING
    record = await state.tasks.get(task_id)
    assert record is not None
    return record
