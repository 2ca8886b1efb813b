"""Streams that end leave nothing behind: an agent that reconnects, or a client that stops a
watch, makes the scheduler log no "Task was destroyed but it is pending!" and no error from
closing the watch (each used to leave a task pending on a queue that went away)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Iterator

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.inproc import InProcessScheduler, ProtocolWorker
from tests.support.redis_server import wait_until


class Collected(logging.Handler):
    """Every record of level WARNING and up, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def complaints(self) -> list[str]:
        """Records about leftover tasks or generators that could not be closed."""
        texts = [f"{record.name}: {record.getMessage()}" for record in self.records]
        return [text for text in texts if "destroyed but it is pending" in text or "already running" in text
                or "Unexpected [" in text]


@pytest.fixture()
def logged() -> Iterator[Collected]:
    handler = Collected()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def _collect_garbage() -> None:
    """Collect cycles on the scheduler's loop, then let it run what that scheduled."""
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_reconnecting_agent_and_a_stopped_watch_leave_no_pending_task(
    make_scheduler: Callable[..., InProcessScheduler],
    make_worker: Callable[..., ProtocolWorker],
    logged: Collected,
) -> None:
    scheduler = make_scheduler()
    stub = scheduler.stub
    first = make_worker(scheduler, "w1")

    def status() -> int:
        (worker,) = stub.ListWorkers(pb.ListWorkersRequest(), timeout=5).workers
        return worker.status

    # The stream drops (the scheduler's side ends while waiting on the worker's outbox) ...
    first.disconnect()
    wait_until(lambda: status() == pb.WORKER_STATUS_UNREACHABLE, timeout=10, message="w1's stream closed")
    # ... and the agent comes back: its worker gets a fresh outbox, the old one goes away.
    make_worker(scheduler, "w1")
    wait_until(lambda: status() == pb.WORKER_STATUS_CONNECTED, timeout=10, message="w1 back")

    # A client watches a task that waits (no GPU worker) and stops watching.
    task_id = stub.SubmitTask(pb.SubmitTaskRequest(task_name="t.gpu", gpu=pb.GPU_REQUIREMENT_REQUIRED),
                              timeout=5).task_id
    call = stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30)
    assert next(call).task.state == pb.TASK_STATE_PENDING
    call.cancel()
    engine = scheduler.running.engine if scheduler.running else None
    assert engine is not None
    wait_until(lambda: task_id not in engine.shared.watchers.by_task, timeout=10, message="the watch closed")

    scheduler.call(_collect_garbage())
    assert logged.complaints() == []
