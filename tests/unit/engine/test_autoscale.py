"""Pool demand over the engine (engine/autoscale.py): pending and running work as the pools see
it, and the activity stream that follows the engine's changes."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.core.demand import Demand, Pool
from scheduler.core.model import WorkerType
from scheduler.errors import InvalidArgument
from tests.support.fakes import make_engine
from tests.unit.engine.drive import GPU, connect, place, start, submit

GPU_POOL = Pool(WorkerType.GPU, slots_per_replica=2, gpu_memory_mb_per_replica=16_000)


async def test_demand_counts_pending_work_and_work_running_on_the_pools_workers() -> None:
    rig = make_engine()
    autoscale = rig.engine.autoscale
    assert await autoscale.demand(GPU_POOL) == Demand()
    for _ in range(3):
        await submit(rig, "media.transcode", content_type="video", gpu_memory_mb=6_000)
    await submit(rig, "text.summarize", content_type="text")
    assert await autoscale.demand(GPU_POOL) == Demand(pending=3, gpu_memory_mb=18_000)
    assert await autoscale.demand(Pool(WorkerType.CPU)) == Demand(pending=1)
    await connect(rig, "g1", worker_type=WorkerType.GPU, gpus=[GPU])
    (hand_out,) = await place(rig, "g1")
    assert await start(rig, hand_out)
    assert await autoscale.demand(GPU_POOL) == Demand(pending=2, running=1, gpu_memory_mb=18_000)
    # A paused queue's tasks wait for an operator, not for a replica.
    await rig.engine.controls.set_paused("gpu_priority", True)
    assert await autoscale.demand(GPU_POOL) == Demand(running=1, gpu_memory_mb=6_000)


async def test_a_pool_naming_an_unknown_queue_is_refused() -> None:
    rig = make_engine()
    with pytest.raises(InvalidArgument, match="queue 'nope', which is not configured; known queues: gpu_priority"):
        await rig.engine.autoscale.demand(Pool(WorkerType.GPU, queue="nope"))


async def test_activity_is_sent_at_once_and_again_when_it_flips() -> None:
    rig = make_engine()
    activity = rig.engine.autoscale.activity(GPU_POOL)
    try:
        assert await asyncio.wait_for(anext(activity), 1) is False
        waiting = asyncio.ensure_future(anext(activity))
        # A change that is not this pool's work sends nothing (the next message is the flip).
        await submit(rig, "text.summarize", content_type="text")
        await asyncio.sleep(0)
        task_id = await submit(rig, "media.transcode", content_type="video")
        # Well within RECHECK_SECONDS: the submission itself wakes the stream.
        assert await asyncio.wait_for(waiting, 2) is True
        await rig.engine.controls.cancel(task_id)
        assert await asyncio.wait_for(anext(activity), 2) is False
    finally:
        await activity.aclose()
