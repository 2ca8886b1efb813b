"""Driving an engine over fakes the way its callers do: agents connect, clients submit, workers
fetch their Celery messages, claim and report. Each helper runs one step to completion (no
background loop, no sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from scheduler.core.model import Submission, TaskState, WorkerType
from scheduler.core.validate import TaskInput
from scheduler.engine.recovery import recover
from scheduler.engine.views import WorkerRegistration
from scheduler.fleet import Gpu, Worker
from scheduler.settings import Settings
from scheduler.state.records import TaskRecord
from tests.support.celery_queue import QueuedMessage
from tests.support.fakes import EngineRig, make_engine

GPU = Gpu(index=0, name="Simulated A100", uuid="GPU-0", memory_total_mb=40_000, memory_free_mb=40_000)


async def connect(rig: EngineRig, worker_id: str, *, slots: int = 1, worker_type: WorkerType = WorkerType.CPU,
                  gpus: Sequence[Gpu] = (), labels: dict[str, str] | None = None,
                  registered_tasks: Sequence[str] = ()) -> Worker:
    """An agent says hello; the worker is connected and accepting. `registered_tasks` is what its
    Celery app registers (empty: the agent did not say)."""
    registration = WorkerRegistration(worker_id, worker_type, slots, labels or {}, list(gpus), False,
                                      registered_tasks=registered_tasks)
    worker, _welcome = await rig.engine.agents.hello(registration)
    return worker


async def submit(rig: EngineRig, name: str = "t.job", *, args_json: str = "[1]", idempotency_key: str = "",
                 **submission: object) -> str:
    """A client submits one task; returns its id."""
    item = TaskInput(Submission(name, **submission), args_json, "{}", idempotency_key)  # type: ignore[arg-type]
    (accepted,) = await rig.engine.admission.submit([item])
    return accepted.task_id


async def place(rig: EngineRig, worker_id: str) -> list[QueuedMessage]:
    """One placement round; then what waits on the worker's Celery queue (sync-matched hand-outs
    of earlier submissions included), fetched as its consumer would, in order."""
    await rig.engine.placement.round()
    return rig.state.take(worker_id)


async def deliver(rig: EngineRig) -> None:
    """The engine reads what workers reported since last time and applies it (which also
    acknowledges it), as its lifecycle loop does."""
    await rig.engine.lifecycle.apply(await rig.state.events.read(backlog=False, block_ms=0))


async def start(rig: EngineRig, hand_out: QueuedMessage) -> bool:
    """The worker claims the hand-out: fenced, and the claim itself records the start."""
    return rig.state.claim(hand_out.task_id, hand_out.attempt, hand_out.worker_id, rig.clock())


async def report(rig: EngineRig, kind: str, hand_out: QueuedMessage, **fields: str) -> None:
    """The worker reports on the hand-out's attempt and the engine applies it."""
    rig.state.report(kind, hand_out.task_id, hand_out.attempt, hand_out.worker_id, rig.clock(), **fields)
    await deliver(rig)


async def run_to_success(rig: EngineRig, hand_out: QueuedMessage) -> None:
    """The worker runs the hand-out's attempt to success."""
    assert await start(rig, hand_out)
    await report(rig, "succeeded", hand_out, result_json='"done"')


async def task(rig: EngineRig, task_id: str) -> TaskRecord:
    """The task as stored now."""
    record = await rig.state.tasks.get(task_id)
    assert record is not None, f"task {task_id} is gone"
    return record


async def state_of(rig: EngineRig, task_id: str) -> TaskState:
    """The task's state as stored now."""
    return (await task(rig, task_id)).state


async def restarted(rig: EngineRig, settings: Settings | None = None) -> EngineRig:
    """A new engine over the same durable state (and clock), recovered as `Engine.start` does."""
    fresh = make_engine(settings or rig.engine.shared.settings, state=rig.state, clock=rig.clock)
    await fresh.state.events.ensure_group()
    await recover(fresh.engine.shared)
    return fresh


async def until(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Let other coroutines run until `condition` holds (fails if it never does)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the awaited condition never came true")

