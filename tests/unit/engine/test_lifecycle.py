"""Lifecycle: worker reports move tasks on, retries wait out their backoff in the scheduler, and a
stale attempt's report changes nothing."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.core.model import TaskState
from scheduler.core.retry import NO_RETRY, RetryPolicy
from scheduler.settings import Settings
from tests.support.fakes import make_engine
from tests.unit.engine.drive import connect, place, report, start, state_of, submit, task, until

FLAKY = RetryPolicy("flaky", max_retries=2, base_delay_seconds=10.0, multiplier=3.0, jitter=0.2,
                    non_retryable=frozenset({"PermissionError"}))
RETRYING = Settings(retry_policies={"none": NO_RETRY, "flaky": FLAKY}, default_retry_policy="flaky")


async def test_a_task_runs_and_its_success_frees_the_slot_for_the_next_one() -> None:
    rig = make_engine()
    worker = await connect(rig, "w1")
    first, second = await submit(rig), await submit(rig)
    (hand_out,) = await place(rig, "w1")
    assert hand_out.task_id == first and await place(rig, "w1") == []
    rig.clock.advance(2)
    assert await start(rig, hand_out)
    running = await task(rig, first)
    assert (running.state, running.started_at) == (TaskState.RUNNING, rig.clock())
    await report(rig, "progress", hand_out, progress="0.25", message="a quarter")
    assert (await rig.engine.queries.get_task(first)).record.progress_message == "a quarter"
    rig.clock.advance(3)
    rig.engine.shared.kick.clear()
    await report(rig, "succeeded", hand_out, result_json='{"pages": 3}')
    done = await task(rig, first)
    assert (done.state, done.result_json, done.finished_at) == (TaskState.SUCCEEDED, '{"pages": 3}', rig.clock())
    # Completion match: the slot the success freed went to the next task in the same round trip
    # that applied the report, without a placement round.
    assert worker.in_flight.keys() == {second}
    assert rig.state.tables.completions == [[second]]
    (next_hand_out,) = rig.state.take("w1")
    assert (next_hand_out.task_id, next_hand_out.worker_id, next_hand_out.attempt) == (second, "w1", 1)
    (queue,) = [q for q in await rig.engine.queries.list_queues() if q.spec.name == "cpu_standard"]
    assert (queue.completed, queue.processing, queue.mean_wait_seconds, queue.mean_run_seconds) == (1, 1, 2.0, 3.0)


async def test_failures_retry_within_the_backoff_bounds_then_dead_letter() -> None:
    rig = make_engine(RETRYING)
    await connect(rig, "w1")
    task_id = await submit(rig)
    for attempt in (1, 2, 3):
        (hand_out,) = await place(rig, "w1")
        assert (hand_out.task_id, hand_out.attempt) == (task_id, attempt)
        assert await start(rig, hand_out)
        failed_at = rig.clock()
        await report(rig, "failed", hand_out, error="ValueError: broken", error_type="ValueError", traceback="tb")
        if attempt == 3:
            break
        retrying = await task(rig, task_id)
        assert (retrying.state, retrying.failures, retrying.worker_id) == (TaskState.RETRYING, attempt, "")
        low, high = FLAKY.delay_bounds(attempt)
        assert low <= retrying.next_attempt_at - failed_at <= high
        # Not before its time: the backoff is held by the scheduler, not by Celery.
        rig.clock.advance(low * 0.99)
        assert await rig.engine.lifecycle.promote_due_retries() == 0
        assert await place(rig, "w1") == []
        rig.clock.now = retrying.next_attempt_at
        assert await rig.engine.lifecycle.promote_due_retries() == 1
        assert await state_of(rig, task_id) is TaskState.PENDING
    dead = await task(rig, task_id)
    assert (dead.state, dead.failures, dead.error) == (TaskState.DEAD_LETTERED, 3, "ValueError: broken")
    assert "allows 2 retr" in dead.reason
    letters, total = await rig.engine.dead_letters.list("", 0)
    assert [record.task_id for record, _at in letters] == [task_id] and total == 1
    assert await place(rig, "w1") == []


async def test_a_non_retryable_error_skips_the_retries() -> None:
    rig = make_engine(RETRYING)
    await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    await report(rig, "failed", hand_out, error="PermissionError: no", error_type="PermissionError")
    dead = await task(rig, task_id)
    assert (dead.state, dead.failures) == (TaskState.DEAD_LETTERED, 1)
    assert "not retryable" in dead.reason


async def test_with_retries_opted_out_a_failure_is_final() -> None:
    rig = make_engine(Settings(default_retry_policy=NO_RETRY.name))
    await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    assert await start(rig, hand_out)
    await report(rig, "failed", hand_out, error="RuntimeError: x", error_type="RuntimeError")
    assert await state_of(rig, task_id) is TaskState.FAILED
    assert await rig.state.indexes.due_retries(float("inf")) == []
    (queue,) = [q for q in await rig.engine.queries.list_queues() if q.spec.name == "cpu_standard"]
    assert (queue.failed, queue.error_rate) == (1, 1.0)


async def test_a_stale_attempt_s_report_is_dropped_and_counted() -> None:
    rig = make_engine()
    lost = await connect(rig, "w1")
    task_id = await submit(rig)
    (old,) = await place(rig, "w1")
    await connect(rig, "w2")
    await rig.engine.agents.worker_exited("w1", lost.session, 1, "killed")
    (current,) = await place(rig, "w2")
    assert (current.task_id, current.attempt) == (task_id, 2)
    before = await task(rig, task_id)
    assert not await start(rig, old)  # the fence refuses the old attempt
    rig.state.report("started", task_id, 1, "w1", rig.clock())
    await report(rig, "succeeded", old, result_json='"stale"')
    await report(rig, "failed", old, error="stale")
    assert await task(rig, task_id) == before
    stale = rig.engine.shared.metrics.registry.get_sample_value("switchyard_stale_reports_total")
    assert stale == 3.0
    assert rig.engine.shared.fleet.get("w2").in_flight.keys() == {task_id}  # type: ignore[union-attr]


async def test_a_report_read_twice_is_applied_once() -> None:
    rig = make_engine()
    await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    # The agent retried its report (its first XADD's reply was lost): the stream holds it twice.
    for _ in range(2):
        rig.state.report("succeeded", task_id, hand_out.attempt, "w1", rig.clock(), result_json="1")
    events = await rig.state.events.read(backlog=False, block_ms=0)
    assert len(events) == 2
    await rig.engine.lifecycle.apply(events)
    # Applying acknowledged both: a restarted scheduler finds no backlog to re-read.
    assert await rig.state.events.read(backlog=True) == []
    # A batch applied again (as a reader that re-read it would) changes nothing either.
    await rig.engine.lifecycle.apply(events)
    assert await state_of(rig, task_id) is TaskState.SUCCEEDED
    (queue,) = [q for q in await rig.engine.queries.list_queues() if q.spec.name == "cpu_standard"]
    assert queue.completed == 1
    await rig.engine.shared.stats.flush()
    stored = (await rig.state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]
    assert (stored["completed"], stored["run_count"], stored["wait_count"]) == (1.0, 1.0, 1.0)
    stale = rig.engine.shared.metrics.registry.get_sample_value("switchyard_stale_reports_total")
    assert stale == 3.0


async def test_the_loop_sends_each_round_s_next_read_with_it_and_drops_it_when_the_round_fails() -> None:
    rig = make_engine()
    await connect(rig, "w1")
    first, second = await submit(rig), await submit(rig)
    (hand_out,) = await place(rig, "w1")
    loop = asyncio.create_task(rig.engine.lifecycle.run())
    try:
        assert await start(rig, hand_out)
        rig.state.report("succeeded", hand_out.task_id, 1, "w1", rig.clock(), result_json="1")
        await until(lambda: rig.state.tables.reads_sent == 1)  # the round read on, in its round trip
        assert await state_of(rig, first) is TaskState.SUCCEEDED
        assert rig.state.tables.completions == [[second]]

        # A round that fails after its script (here: telling watchers) leaves no read behind.
        async def broken(_task_ids: object) -> None:
            raise RuntimeError("watchers unreachable")
        rig.engine.shared.notify_watchers = broken  # type: ignore[method-assign]
        (next_hand_out,) = rig.state.take("w1")
        assert await start(rig, next_hand_out)
        rig.state.report("succeeded", second, 1, "w1", rig.clock(), result_json="2")
        with pytest.raises(RuntimeError, match="watchers unreachable"):
            await asyncio.wait_for(loop, timeout=5)
        assert (rig.state.tables.reads_sent, rig.state.tables.reads_dropped) == (2, 1)
    finally:
        loop.cancel()
