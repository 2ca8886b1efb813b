"""The placement loop: late binding in exact priority order, only onto free, accepting workers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from scheduler.core.model import TaskState, WorkerType
from scheduler.errors import StateUnavailable
from scheduler.settings import Settings
from scheduler.state.interface import HandOutRequest
from tests.support.fakes import make_engine
from tests.unit.engine.drive import (
    GPU,
    connect,
    place,
    restarted,
    run_to_success,
    start,
    state_of,
    submit,
    task,
    until,
)


async def test_a_submission_kicks_a_round_that_hands_it_to_a_free_worker() -> None:
    rig = make_engine()
    await connect(rig, "w1")
    loop = asyncio.create_task(rig.engine.placement.run())
    try:
        # A round in progress (its lock held) keeps it off the sync match: the pending index and
        # the next round place it.
        async with rig.engine.placement.lock:
            task_id = await submit(rig, "t.resize", args_json="[1, 2]", idempotency_key="resize-1")
            assert rig.state.tables.submits[-1].hand_outs == []
        await until(lambda: bool(rig.state.queued("w1")))
    finally:
        loop.cancel()
    (hand_out,) = rig.state.take("w1")
    assert (hand_out.task_id, hand_out.attempt, hand_out.task_name, hand_out.args) == (
        task_id, 1, "t.resize", [1, 2])
    assert hand_out.celery_id == f"{task_id}-1"
    stored = await task(rig, task_id)
    assert (stored.state, stored.worker_id, stored.attempt) == (TaskState.DISPATCHED, "w1", 1)
    assert rig.state.fence(task_id) == "1"


async def test_priority_order_is_exact_across_queues() -> None:
    rig = make_engine()
    await submit(rig, "cpu.default5", content_type="text")
    await submit(rig, "mixed.default6", content_type="youtube")
    await submit(rig, "gpu.default8", content_type="video")
    await submit(rig, "cpu.asked9", content_type="text", priority=9)
    await submit(rig, "cpu.asked8", content_type="text", priority=8)
    await connect(rig, "h1", worker_type=WorkerType.HYBRID, gpus=[GPU])
    order = []
    for _ in range(5):
        (hand_out,) = await place(rig, "h1")  # one slot: one task per round
        order.append(hand_out.task_name)
        await run_to_success(rig, hand_out)
    # Highest priority first whatever the queue; equal priority first come, first served.
    assert order == ["cpu.asked9", "gpu.default8", "cpu.asked8", "mixed.default6", "cpu.default5"]


async def test_a_worker_without_a_free_slot_gets_nothing() -> None:
    rig = make_engine()
    await connect(rig, "w1", slots=2)
    first, second, third = [await submit(rig) for _ in range(3)]
    assert [h.task_id for h in await place(rig, "w1")] == [first, second]
    assert await place(rig, "w1") == []
    assert await state_of(rig, third) is TaskState.PENDING
    view = await rig.engine.queries.get_task(third)
    assert "free slot" in view.record.reason
    await connect(rig, "w2")
    await rig.engine.placement.round()
    assert [h.task_id for h in rig.state.take("w2")] == [third]
    assert rig.state.take("w1") == []


async def test_pause_holds_a_queue_and_resume_releases_it() -> None:
    rig = make_engine()
    await connect(rig, "w1", slots=2)
    await rig.engine.controls.set_paused("cpu_standard", True)
    held = await submit(rig, content_type="text")
    assert await place(rig, "w1") == []
    assert await state_of(rig, held) is TaskState.PENDING
    assert (await rig.engine.queries.get_task(held)).record.reason == "queue cpu_standard is paused"
    assert await rig.state.controls.paused_queues() == {"cpu_standard"}
    # Other queues are not held back by it.
    other = await submit(rig, content_type="youtube")
    assert [h.task_id for h in await place(rig, "w1")] == [other]
    rig.engine.shared.kick.clear()
    view = await rig.engine.controls.set_paused("cpu_standard", False)
    assert not view.paused and rig.engine.shared.kick.is_set()
    assert [h.task_id for h in await place(rig, "w1")] == [held]


async def test_a_queue_paused_in_the_settings_stays_paused_after_a_restart_until_resumed() -> None:
    settings = Settings()
    rig = make_engine(settings)
    await rig.engine.controls.set_paused("gpu_fallback", True)
    again = await restarted(rig)
    assert "gpu_fallback" in again.engine.shared.paused
    await connect(again, "w1")
    held = await submit(again, content_type="youtube")
    assert await place(again, "w1") == []
    assert await state_of(again, held) is TaskState.PENDING


async def test_a_drained_worker_gets_nothing_new_and_keeps_what_it_runs() -> None:
    rig = make_engine()
    await connect(rig, "w1", slots=2)
    running = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    worker = await rig.engine.controls.drain("w1")
    assert worker.outbox.get_nowait() == ("drain", "drained by operator")
    waiting = await submit(rig)
    assert await place(rig, "w1") == []
    assert await state_of(rig, waiting) is TaskState.PENDING
    await run_to_success(rig, hand_out)
    assert await state_of(rig, running) is TaskState.SUCCEEDED
    await connect(rig, "w2")
    await rig.engine.placement.round()
    assert [h.task_id for h in rig.state.take("w2")] == [waiting]


async def test_a_large_payload_travels_by_reference() -> None:
    rig = make_engine(Settings(inline_payload_bytes=8))
    await connect(rig, "w1", slots=2)
    small = await submit(rig, args_json="[1]")
    large = await submit(rig, args_json="[" + "1, " * 20 + "1]")
    by_id = {h.task_id: h for h in await place(rig, "w1")}
    assert (by_id[small].by_reference, by_id[small].args, by_id[small].kwargs) == (False, [1], {})
    # The message carries no payload; the claim hands the stored one to the worker.
    assert (by_id[large].by_reference, by_id[large].args, by_id[large].kwargs) == (True, [], {})
    assert rig.state.claim_payload(large, 1, "w1", rig.clock()) == ("[" + "1, " * 20 + "1]", "{}")


async def test_the_gauges_show_depth_processing_and_free_slots() -> None:
    rig = make_engine()
    await connect(rig, "w1", slots=3)
    await connect(rig, "w2", slots=1)
    await rig.engine.controls.drain("w2")
    for _ in range(4):
        await submit(rig, content_type="text")
    await place(rig, "w1")
    rig.engine.gauges.refresh()
    sample = rig.engine.shared.metrics.registry.get_sample_value
    assert sample("switchyard_queue_depth", {"queue": "cpu_standard"}) == 1.0
    assert sample("switchyard_queue_processing", {"queue": "cpu_standard"}) == 3.0
    assert sample("switchyard_slots_free", {"type": "cpu"}) == 0.0  # w2 drains: not offered
    assert sample("switchyard_worker_slots_free", {"worker_id": "w2"}) == 1.0


async def test_a_task_is_still_placed_after_a_state_outage_during_a_round(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_engine()
    task_id = await submit(rig)
    await connect(rig, "w1")

    async def unreachable(*_args: object, **_kwargs: object) -> None:
        raise StateUnavailable("cannot reach the state store; the request can be retried")

    with monkeypatch.context() as outage:
        outage.setattr(rig.state.tasks, "dispatch", unreachable)
        with pytest.raises(StateUnavailable):
            await rig.engine.placement.round()
    assert len(rig.engine.shared.pending) == 1  # the round put it back
    assert [h.task_id for h in await place(rig, "w1")] == [task_id]


async def test_a_round_whose_reply_was_lost_is_healed_by_rereading_the_refused_hand_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = make_engine()
    task_id = await submit(rig)
    worker = await connect(rig, "w1")
    real_dispatch = rig.state.tasks.dispatch

    async def committed_but_reply_lost(requests: Sequence[HandOutRequest], now: float) -> list[bool]:
        await real_dispatch(requests, now)
        raise StateUnavailable("connection lost while reading the reply; the request can be retried")

    with monkeypatch.context() as outage:
        outage.setattr(rig.state.tasks, "dispatch", committed_but_reply_lost)
        with pytest.raises(StateUnavailable):
            await rig.engine.placement.round()
    assert worker.in_flight == {} and len(rig.engine.shared.pending) == 1
    # The next round asks for attempt 1 again; the store refuses (already dispatched) and the
    # engine believes Redis: the task is in flight on w1, and its one message is not doubled.
    assert await rig.engine.placement.round() == 0
    assert worker.in_flight.keys() == {task_id} and len(rig.engine.shared.pending) == 0
    (hand_out,) = rig.state.take("w1")
    assert (hand_out.task_id, hand_out.attempt) == (task_id, 1)
    assert await start(rig, hand_out)
