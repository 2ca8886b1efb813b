"""Recovery: a new engine over state an earlier one left behind carries on where it stopped."""

from __future__ import annotations

from scheduler.core.model import QueueSpec, TaskClass, TaskState, WorkerType
from scheduler.core.retry import NO_RETRY, RetryPolicy
from scheduler.settings import Settings
from scheduler.state.records import WorkerRecord
from tests.support.celery_queue import hand_out_request
from tests.support.fakes import make_engine
from tests.unit.engine.drive import (
    connect,
    deliver,
    place,
    report,
    restarted,
    run_to_success,
    start,
    state_of,
    submit,
)


async def test_pending_tasks_come_back_in_priority_order() -> None:
    before = make_engine()
    names = {}
    for name, priority in (("low", 2), ("high", 9), ("mid", 5), ("high.later", 9), ("mid.later", 5)):
        names[await submit(before, name, priority=priority)] = name
    after = await restarted(before)
    assert len(after.engine.shared.pending) == 5
    await connect(after, "w1")
    order = []
    for _ in range(5):
        (hand_out,) = await place(after, "w1")
        order.append(names[hand_out.task_id])
        await run_to_success(after, hand_out)
    assert order == ["high", "high.later", "mid", "mid.later", "low"]


async def test_in_flight_ledgers_come_back_with_their_served_queue() -> None:
    spill = QueueSpec("cpu_spill", TaskClass.CPU, default_priority=3, max_tasks_per_worker=1)
    settings = Settings(queues=(*Settings().queues, spill))
    before = make_engine(settings)
    # The earlier engine handed a cpu_standard task to w1 counted against cpu_spill's limit.
    await before.state.controls.remember_worker(WorkerRecord("w1", WorkerType.CPU, 4))
    spilled = await submit(before, content_type="text")
    assert await before.state.tasks.dispatch([hand_out_request(spilled, "w1", served_queue="cpu_spill")],
                                             before.clock()) == [True]
    after = await restarted(before)
    worker = after.engine.shared.fleet.get("w1")
    assert worker is not None and worker.slots == 4
    assert {t: (i.attempt, i.served_queue) for t, i in worker.in_flight.items()} == {spilled: (1, "cpu_spill")}
    await connect(after, "w1", slots=4)
    assert [h.task_id for h in after.state.take("w1")] == [spilled]  # queued before the restart
    waiting = await submit(after, queue="cpu_spill")
    assert await place(after, "w1") == []  # cpu_spill's one slot on w1 is still taken
    assert "per-worker limit" in (await after.engine.queries.get_task(waiting)).record.reason
    after.state.report("succeeded", spilled, 1, "w1", after.clock(), result_json="1")
    await deliver(after)
    assert [h.task_id for h in await place(after, "w1")] == [waiting]


async def test_a_worker_that_never_comes_back_after_a_restart_loses_its_tasks() -> None:
    before = make_engine(Settings(lost_grace_seconds=5.0))
    await connect(before, "w1")
    task_id = await submit(before)
    (hand_out,) = await place(before, "w1")
    assert await start(before, hand_out)
    after = await restarted(before)
    assert after.engine.shared.fleet.get("w1").in_flight.keys() == {task_id}  # type: ignore[union-attr]
    await after.engine.liveness.check()
    assert await state_of(after, task_id) is TaskState.RUNNING
    after.clock.advance(6)
    await after.engine.liveness.check()
    assert await state_of(after, task_id) is TaskState.PENDING
    await connect(after, "w2")
    (again,) = await place(after, "w2")
    assert (again.task_id, again.attempt) == (task_id, 2)


async def test_a_hand_out_made_before_a_restart_is_neither_lost_nor_handed_out_again() -> None:
    before = make_engine()
    task_id = await submit(before, args_json='["x"]')
    await connect(before, "w1")
    await before.engine.placement.round()  # committed and queued in one step; not fetched yet
    after = await restarted(before)
    assert len(after.engine.shared.pending) == 0
    assert after.engine.shared.fleet.get("w1").in_flight.keys() == {task_id}  # type: ignore[union-attr]
    await connect(after, "w1")
    (hand_out,) = await place(after, "w1")  # the one message from before the restart
    assert (hand_out.task_id, hand_out.attempt, hand_out.args) == (task_id, 1, ["x"])
    once_more = await restarted(after)
    await connect(once_more, "w1")
    assert await place(once_more, "w1") == []
    assert await start(once_more, hand_out)
    await report(once_more, "succeeded", hand_out, result_json="1")
    assert await state_of(once_more, task_id) is TaskState.SUCCEEDED


async def test_retries_and_dead_letters_are_known_after_a_restart() -> None:
    policy = RetryPolicy("once", max_retries=1, base_delay_seconds=30.0, jitter=0.0,
                         non_retryable=frozenset({"PermissionError"}))
    settings = Settings(retry_policies={"none": NO_RETRY, "once": policy}, default_retry_policy="once")
    before = make_engine(settings)
    await connect(before, "w1", slots=2)
    retried, dead = await submit(before, content_type="text"), await submit(before, content_type="text")
    first, second = await place(before, "w1")
    await report(before, "failed", first, error="ValueError: later", error_type="ValueError")
    await report(before, "failed", second, error="PermissionError: never", error_type="PermissionError")
    after = await restarted(before)
    (queue,) = [q for q in await after.engine.queries.list_queues() if q.spec.name == "cpu_standard"]
    assert (queue.retrying, queue.dead_lettered) == (1, 1)
    letters, total = await after.engine.dead_letters.list("cpu_standard", 0)
    assert [record.task_id for record, _at in letters] == [dead] and total == 1
    assert await after.engine.lifecycle.promote_due_retries() == 0
    after.clock.advance(30)
    assert await after.engine.lifecycle.promote_due_retries() == 1
    await connect(after, "w1")
    (hand_out,) = await place(after, "w1")
    assert (hand_out.task_id, hand_out.attempt) == (retried, 2)
