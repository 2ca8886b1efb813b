"""Admission: a batch is accepted whole or not at all, and an idempotency key names one task."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.core.model import Submission, TaskState
from scheduler.core.validate import TaskInput
from scheduler.errors import AlreadyExists, InvalidArgument
from tests.support.fakes import make_engine
from tests.unit.engine.drive import connect, place, run_to_success, submit


def item(args_json: str = "[1]", key: str = "", name: str = "t.job") -> TaskInput:
    return TaskInput(Submission(name), args_json, "{}", key)


async def test_the_same_key_and_payload_return_the_first_task() -> None:
    rig = make_engine()
    first = await submit(rig, idempotency_key="order-7")
    (again,) = await rig.engine.admission.submit([item(key="order-7")])
    assert (again.task_id, again.deduplicated) == (first, True)
    assert await rig.state.indexes.pending_ids() == [first]
    await connect(rig, "w1", slots=2)
    assert [h.task_id for h in await place(rig, "w1")] == [first]


async def test_a_key_reused_for_another_payload_is_refused_with_nothing_accepted() -> None:
    rig = make_engine()
    first = await submit(rig, idempotency_key="order-7")
    with pytest.raises(AlreadyExists, match=rf"tasks\[1\]: idempotency_key is already used \(task {first}\)"):
        await rig.engine.admission.submit([item(), item(args_json="[2]", key="order-7")])
    with pytest.raises(InvalidArgument, match=r"tasks\[1\]"):
        await rig.engine.admission.submit([item(), item(args_json="not json")])
    assert await rig.state.indexes.pending_ids() == [first]
    assert len(rig.engine.shared.pending) == 1


async def test_a_batch_is_accepted_whole_and_placed_in_submission_order() -> None:
    rig = make_engine()
    accepted = await rig.engine.admission.submit([item(args_json=f"[{n}]") for n in range(3)])
    assert [a.deduplicated for a in accepted] == [False, False, False]
    await connect(rig, "w1", slots=3)
    hand_outs = await place(rig, "w1")
    assert [h.task_id for h in hand_outs] == [a.task_id for a in accepted]
    assert [h.args_json for h in hand_outs] == ["[0]", "[1]", "[2]"]


async def test_a_watcher_sees_every_state_until_the_end() -> None:
    rig = make_engine()
    task_id = await submit(rig)
    seen: list[TaskState] = []

    async def watch() -> None:
        async for view in rig.engine.queries.watch(task_id):
            seen.append(view.record.state)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)  # let it subscribe
    await connect(rig, "w1")
    (hand_out,) = await place(rig, "w1")
    await run_to_success(rig, hand_out)
    await asyncio.wait_for(watcher, timeout=5)
    assert seen == [TaskState.PENDING, TaskState.DISPATCHED, TaskState.RUNNING, TaskState.SUCCEEDED]
