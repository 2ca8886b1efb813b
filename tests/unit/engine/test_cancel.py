"""Cancel in each state: a task that has not finished stops for good; a finished one is left as is."""

from __future__ import annotations

import pytest

from scheduler.core.model import TaskState
from scheduler.core.retry import NO_RETRY, RetryPolicy
from scheduler.errors import FailedPrecondition, InvalidArgument, NotFound
from scheduler.settings import Settings
from tests.support.fakes import make_engine
from tests.unit.engine.drive import connect, place, report, start, state_of, submit, task


async def test_cancelling_a_pending_task_keeps_it_from_ever_being_handed_out() -> None:
    rig = make_engine()
    task_id = await submit(rig)
    cancelled, previous = await rig.engine.controls.cancel(task_id)
    assert (cancelled.state, previous) == (TaskState.CANCELLED, TaskState.PENDING)
    await connect(rig, "w1")
    assert await place(rig, "w1") == []
    assert await state_of(rig, task_id) is TaskState.CANCELLED


@pytest.mark.parametrize("started", [False, True], ids=["dispatched", "running"])
async def test_cancelling_an_attempt_in_flight_stops_it_and_frees_its_slot(started: bool) -> None:
    rig = make_engine()
    worker = await connect(rig, "w1")
    task_id, next_id = await submit(rig), await submit(rig)
    (hand_out,) = await place(rig, "w1")
    if started:
        assert await start(rig, hand_out)
    cancelled, previous = await rig.engine.controls.cancel(task_id)
    assert previous is (TaskState.RUNNING if started else TaskState.DISPATCHED)
    assert cancelled.state is TaskState.CANCELLED
    assert worker.outbox.get_nowait() == ("cancel", task_id, 1)  # the agent stops the attempt
    assert not await start(rig, hand_out)
    await report(rig, "succeeded", hand_out, result_json='"too late"')
    assert await state_of(rig, task_id) is TaskState.CANCELLED
    assert [h.task_id for h in await place(rig, "w1")] == [next_id]


async def test_cancelling_a_retrying_task_keeps_it_from_coming_back() -> None:
    policy = RetryPolicy("again", max_retries=3, base_delay_seconds=5.0, jitter=0.0)
    rig = make_engine(Settings(retry_policies={"none": NO_RETRY, "again": policy}, default_retry_policy="again"))
    await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    await report(rig, "failed", hand_out, error="E")
    _cancelled, previous = await rig.engine.controls.cancel(task_id)
    assert previous is TaskState.RETRYING
    rig.clock.advance(60)
    assert await rig.engine.lifecycle.promote_due_retries() == 0
    assert await place(rig, "w1") == []
    assert await state_of(rig, task_id) is TaskState.CANCELLED
    (queue,) = [q for q in await rig.engine.queries.list_queues() if q.spec.name == "cpu_standard"]
    assert (queue.retrying, queue.cancelled) == (0, 1)


async def test_a_finished_task_cannot_be_cancelled() -> None:
    rig = make_engine()
    await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    await report(rig, "succeeded", hand_out, result_json="1")
    with pytest.raises(FailedPrecondition, match="already ended as succeeded"):
        await rig.engine.controls.cancel(task_id)
    finished = await task(rig, task_id)
    assert (finished.state, finished.result_json) == (TaskState.SUCCEEDED, "1")


async def test_cancelling_an_unknown_task_says_so() -> None:
    rig = make_engine()
    with pytest.raises(NotFound, match="does not exist"):
        await rig.engine.controls.cancel("no-such-task")
    with pytest.raises(InvalidArgument):
        await rig.engine.controls.cancel("")
