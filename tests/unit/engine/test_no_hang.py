"""No task hangs: a task goes only to workers whose Celery app registers its name, one that a
worker still turns away as unregistered fails at once whatever its retry policy, and a hand-out
that does not start within the start deadline goes back to pending (and, after a few returns,
fails with a reason). Starts and returns are read from the durable state, so a restart keeps them."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from scheduler.core.model import Submission, TaskState
from scheduler.core.retry import NOT_REGISTERED, NOT_STARTED, RetryPolicy
from scheduler.core.validate import TaskInput
from scheduler.settings import Settings
from scheduler.state.records import TaskRecord
from tests.support.fakes import EngineRig, make_engine
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
    task,
)

RETRYING = RetryPolicy("flaky", max_retries=5, base_delay_seconds=1.0)
DEADLINE = 60.0
SETTINGS = Settings(
    retry_policies={"flaky": RETRYING}, default_retry_policy="flaky",
    start_deadline_seconds=DEADLINE, start_deadline_returns=1,
    # Agents heartbeat in real life; here nothing does, and no worker is to be lost for it.
    heartbeat_timeout_seconds=1e9,
)


async def look(rig: EngineRig, seconds: float) -> None:
    """Let `seconds` pass, then one liveness pass (as its periodic tick runs it)."""
    rig.clock.advance(seconds)
    await rig.engine.liveness.check()


async def test_a_task_goes_only_to_a_worker_that_registers_its_name() -> None:
    rig = make_engine(SETTINGS)
    await connect(rig, "w1", slots=4, registered_tasks=["docs.parse"])
    await connect(rig, "w2", slots=1, registered_tasks=["docs.parse", "media.transcode"])
    dry_run = TaskInput(Submission("media.transcode"), "[]", "{}")
    explained = await rig.engine.queries.explain(dry_run, "")
    verdicts = {v.worker_id: v for v in explained.verdicts}
    assert (verdicts["w1"].rejected_by, verdicts["w1"].reason) == (
        "registered", "task 'media.transcode' is not registered on this worker")
    assert explained.chosen is not None and explained.chosen.worker_id == "w2"
    task_id = await submit(rig, "media.transcode")
    assert [h.task_id for h in await place(rig, "w2")] == [task_id]
    # w2 is full now: the next one waits rather than go to w1, and says why.
    waiting_id = await submit(rig, "media.transcode")
    assert await place(rig, "w1") == []
    assert await state_of(rig, waiting_id) is TaskState.PENDING
    explained = await rig.engine.queries.explain(None, waiting_id)
    assert explained.chosen is None
    assert explained.summary == "waiting for a free slot on 1 capable worker(s)"
    # Other names still go to w1.
    other_id = await submit(rig, "docs.parse")
    assert [h.task_id for h in await place(rig, "w1")] == [other_id]


async def test_a_worker_whose_agent_reports_no_names_may_be_sent_any() -> None:
    rig = make_engine(SETTINGS)
    await connect(rig, "w1")
    task_id = await submit(rig, "anything.at.all")
    assert [h.task_id for h in await place(rig, "w1")] == [task_id]


async def test_a_hello_replaces_what_the_worker_registers() -> None:
    rig = make_engine(SETTINGS)
    one = await connect(rig, "w1", registered_tasks=["docs.parse", "media.transcode"])
    two = await connect(rig, "w2", registered_tasks=["media.transcode", "docs.parse"])
    # One set for one Celery app: placement groups such workers by identity, not by comparing names.
    assert one.registered_tasks is two.registered_tasks == {"docs.parse", "media.transcode"}
    again = await connect(rig, "w1", registered_tasks=["docs.parse"])
    assert again is one and one.registered_tasks == {"docs.parse"}
    await connect(rig, "w1")  # an agent that no longer says: any name may go there again
    assert one.registered_tasks == frozenset()


async def test_not_registered_fails_at_once_whatever_the_policy_and_frees_the_slot() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id, next_id = await submit(rig, "media.transcode"), await submit(rig, "docs.parse")
    (hand_out,) = await place(rig, "w1")
    # Celery's task_unknown fires before anything runs: no claim, only the failed report.
    await report(rig, "failed", hand_out, error="NotRegistered: media.transcode", error_type=NOT_REGISTERED)
    failed = await task(rig, task_id)
    assert (failed.state, failed.failures) == (TaskState.FAILED, 1)
    assert failed.reason.startswith("task 'media.transcode' is not registered on worker w1")
    assert rig.engine.shared.retrying == {}
    # The freed slot went to the next task in the same round trip that applied the report.
    assert list(worker.in_flight) == [next_id]
    assert await state_of(rig, next_id) is TaskState.DISPATCHED


async def test_another_failure_still_follows_the_retry_policy() -> None:
    rig = make_engine(SETTINGS)
    await connect(rig, "w1")
    task_id = await submit(rig, "media.transcode")
    (hand_out,) = await place(rig, "w1")
    assert await start(rig, hand_out)
    await report(rig, "failed", hand_out, error="ValueError: x", error_type="ValueError")
    assert await state_of(rig, task_id) is TaskState.RETRYING


async def test_a_hand_out_not_started_in_time_goes_back_and_then_fails(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "switchyard.scheduler.engine.liveness")
    rig = make_engine(SETTINGS)
    stuck = await connect(rig, "w1")
    task_id = await submit(rig, "media.transcode")
    (first,) = await place(rig, "w1")
    await look(rig, 0)  # the deadline starts counting when liveness first sees the hand-out
    await look(rig, DEADLINE - 1)
    assert await state_of(rig, task_id) is TaskState.DISPATCHED
    await look(rig, 2)
    back = await task(rig, task_id)
    assert (back.state, back.worker_id, back.attempt, back.start_returns) == (TaskState.PENDING, "", 1, 1)
    assert back.reason == "re-queued: not started within 60s on worker w1 (return 1 of 1)"
    assert rig.state.fence(task_id) == "requeued"
    assert stuck.in_flight == {} and len(stuck.failures) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"task {task_id} (media.transcode) not started within 60s on worker w1: back to pending, return 1 of 1"]
    # The stuck worker consumes its old message at last: the fenced claim refuses it.
    assert not await start(rig, first)
    # Only w1 is there, so it gets the task again, and misses again: the returns are used up.
    (second,) = await place(rig, "w1")
    assert second.attempt == 2
    await look(rig, 1)
    await look(rig, DEADLINE)
    failed = await task(rig, task_id)
    assert (failed.state, failed.error_type, failed.worker_id, failed.attempt) == (
        TaskState.FAILED, NOT_STARTED, "w1", 2)
    assert failed.reason == failed.error == "not started within 60s in 2 hand-out(s), the last on worker w1"
    assert not await start(rig, second)
    assert stuck.in_flight == {}
    assert rig.state.tables.inflight["w1"] == set()
    assert len(caplog.records) == 2 and "failed after 2 hand-out(s)" in caplog.records[1].getMessage()
    await rig.engine.shared.stats.flush()
    assert rig.state.tables.stats["cpu_standard"]["failed"] == 1


async def test_a_returned_task_goes_to_another_worker_and_runs_there() -> None:
    rig = make_engine(SETTINGS)
    await connect(rig, "a-stuck")
    await connect(rig, "b-fine")
    task_id = await submit(rig, "media.transcode")
    (stuck,) = await place(rig, "a-stuck")  # equal scores: the smaller id
    await look(rig, 0)
    await look(rig, DEADLINE + 1)
    assert await state_of(rig, task_id) is TaskState.PENDING
    # The miss counts against a-stuck: the next hand-out goes to b-fine.
    assert await place(rig, "a-stuck") == []
    (fine,) = rig.state.take("b-fine")
    await run_to_success(rig, fine)
    assert await state_of(rig, task_id) is TaskState.SUCCEEDED
    assert not await start(rig, stuck)


async def test_a_started_hand_out_is_never_taken_back() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    await look(rig, 0)
    assert await start(rig, hand_out)
    await look(rig, DEADLINE * 3)
    assert await state_of(rig, task_id) is TaskState.RUNNING
    assert worker.in_flight[task_id].started


async def test_a_claim_that_wins_the_race_keeps_its_attempt() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    await look(rig, 0)
    tasks = rig.state.tasks
    load = tasks.load

    async def load_then_claim(task_ids: object) -> list[TaskRecord]:
        records = await load(task_ids)
        assert await start(rig, hand_out)  # the worker starts it just after liveness read it
        return records

    tasks.load = load_then_claim
    await look(rig, DEADLINE + 1)
    tasks.load = load
    running = await task(rig, task_id)
    assert (running.state, running.attempt, running.start_returns) == (TaskState.RUNNING, 1, 0)
    assert task_id in worker.in_flight and worker.failures == []
    await look(rig, DEADLINE)  # a deadline later it is looked at again, and found running
    assert worker.in_flight[task_id].started


async def test_a_hand_out_waiting_behind_running_work_is_not_late() -> None:
    rig = make_engine(replace(SETTINGS, dispatch_prefetch=1))
    worker = await connect(rig, "w1", slots=1)
    first_id, queued_id = await submit(rig), await submit(rig)
    first, _queued = await place(rig, "w1")  # the second is handed out ahead of a free slot
    assert await start(rig, first)
    await look(rig, 0)
    await look(rig, DEADLINE * 2)  # the first runs all along: the second's turn has not come
    assert await state_of(rig, queued_id) is TaskState.DISPATCHED
    rig.state.report("succeeded", first.task_id, first.attempt, "w1", rig.clock(), result_json="1")
    await deliver(rig)
    assert await state_of(rig, first_id) is TaskState.SUCCEEDED
    # From the slot coming free, the deadline counts as for any hand-out.
    await look(rig, DEADLINE - 1)
    assert await state_of(rig, queued_id) is TaskState.DISPATCHED
    await look(rig, 2)
    assert await state_of(rig, queued_id) is TaskState.PENDING
    assert worker.in_flight == {}


async def test_returns_are_counted_durably_across_a_restart() -> None:
    rig = make_engine(SETTINGS)
    await connect(rig, "w1")
    task_id = await submit(rig)
    await place(rig, "w1")
    await look(rig, 0)
    await look(rig, DEADLINE + 1)
    assert (await task(rig, task_id)).start_returns == 1
    fresh = await restarted(rig)
    await connect(fresh, "w1")
    await place(fresh, "w1")
    await look(fresh, 1)
    await look(fresh, DEADLINE + 1)
    failed = await task(fresh, task_id)
    assert (failed.state, failed.start_returns) == (TaskState.FAILED, 1)


async def test_a_worker_that_reports_its_task_names_still_counts_as_serving_its_queues() -> None:
    # A queue has no one task name: ListQueues' worker count and its "no worker" alert must not
    # read a registered list as "serves nothing".
    rig = make_engine()
    await connect(rig, "w1", registered_tasks=["media.transcode"])
    (queue,) = [q for q in await rig.engine.queries.list_queues() if q.spec.name == "cpu_standard"]
    assert queue.workers == 1
