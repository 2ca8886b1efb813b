"""Dead letters as operators use them: list newest first, replay with a fresh retry budget, purge,
and a queue kept within its length and age limits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core.model import TaskState
from scheduler.core.retry import NO_RETRY, RetryPolicy
from scheduler.errors import FailedPrecondition, InvalidArgument, NotFound
from scheduler.settings import Settings
from tests.support.fakes import EngineRig, make_engine
from tests.unit.engine.drive import connect, place, report, run_to_success, submit, task

STRAIGHT_TO_DLQ = RetryPolicy("dlq", max_retries=0, dead_letter=True)


DEAD_LETTERING = Settings(retry_policies={"none": NO_RETRY, "dlq": STRAIGHT_TO_DLQ}, default_retry_policy="dlq")


async def dead_lettered(rig: EngineRig, content_type: str = "text") -> str:
    """A task that failed once and was dead-lettered; the clock moves on a second."""
    # A fresh worker for each (failures quarantine a worker); the task goes to whichever worker
    # is free, in its submit round trip (sync match) or in the next round.
    await connect(rig, f"w{len(rig.engine.shared.fleet) + 1}")
    task_id = await submit(rig, content_type=content_type)
    await rig.engine.placement.round()
    (hand_out,) = [message for worker in rig.engine.shared.fleet for message in rig.state.take(worker.worker_id)]
    await report(rig, "failed", hand_out, error="ValueError: bad", error_type="ValueError")
    rig.clock.advance(1)
    return task_id


async def test_dead_letters_are_listed_newest_first_and_by_queue() -> None:
    rig = make_engine(DEAD_LETTERING)
    old_cpu = await dead_lettered(rig, content_type="text")
    mixed = await dead_lettered(rig, content_type="youtube")
    new_cpu = await dead_lettered(rig, content_type="text")
    letters, total = await rig.engine.dead_letters.list("", 0)
    assert [record.task_id for record, _at in letters] == [new_cpu, mixed, old_cpu] and total == 3
    assert letters[0][1] > letters[2][1]
    cpu, cpu_total = await rig.engine.dead_letters.list("cpu_standard", 1)
    assert [record.task_id for record, _at in cpu] == [new_cpu] and cpu_total == 2
    with pytest.raises(NotFound, match="queue 'nope' does not exist"):
        await rig.engine.dead_letters.list("nope", 0)


async def test_a_replayed_dead_letter_runs_again_with_a_fresh_retry_budget() -> None:
    rig = make_engine(DEAD_LETTERING)
    task_id = await dead_lettered(rig)
    replayed = await rig.engine.dead_letters.retry(task_id)
    assert (replayed.state, replayed.failures, replayed.error) == (TaskState.PENDING, 0, "")
    (hand_out,) = await place(rig, "w1")
    assert (hand_out.task_id, hand_out.attempt) == (task_id, 2)
    await run_to_success(rig, hand_out)
    assert (await task(rig, task_id)).state is TaskState.SUCCEEDED
    assert await rig.engine.dead_letters.list("", 0) == ([], 0)
    with pytest.raises(FailedPrecondition, match="not dead-lettered"):
        await rig.engine.dead_letters.retry(task_id)
    with pytest.raises(NotFound):
        await rig.engine.dead_letters.retry("no-such-task")


async def test_purge_by_id_by_queue_or_all() -> None:
    rig = make_engine(DEAD_LETTERING)
    first, second = await dead_lettered(rig, content_type="text"), await dead_lettered(rig, content_type="text")
    mixed = await dead_lettered(rig, content_type="youtube")
    third = await dead_lettered(rig, content_type="text")
    with pytest.raises(InvalidArgument, match="say what to purge"):
        await rig.engine.dead_letters.purge([], "", False)
    assert await rig.engine.dead_letters.purge([first], "", False) == 1
    assert await rig.state.tasks.get(first) is None
    assert await rig.engine.dead_letters.purge([], "gpu_fallback", False) == 1
    assert [r.task_id for r, _at in (await rig.engine.dead_letters.list("", 0))[0]] == [third, second]
    assert await rig.engine.dead_letters.purge([], "", True) == 2
    assert await rig.engine.dead_letters.list("", 0) == ([], 0)
    assert await rig.state.tasks.load([second, mixed, third]) == []


async def test_trim_keeps_the_newest_within_the_maximum_and_drops_expired_ones() -> None:
    rig = make_engine(replace(DEAD_LETTERING, dead_letter_max=2, dead_letter_ttl_seconds=100.0))
    oldest, middle, newest = [await dead_lettered(rig) for _ in range(3)]
    assert await rig.engine.dead_letters.trim() == 1
    assert [r.task_id for r, _at in (await rig.engine.dead_letters.list("", 0))[0]] == [newest, middle]
    assert await rig.state.tasks.get(oldest) is None
    rig.clock.advance(99)  # middle was dead-lettered 101 s ago, newest 100 s ago (kept)
    assert await rig.engine.dead_letters.trim() == 1
    assert [r.task_id for r, _at in (await rig.engine.dead_letters.list("", 0))[0]] == [newest]
    (queue,) = [q for q in await rig.engine.queries.list_queues() if q.spec.name == "cpu_standard"]
    assert queue.dead_lettered == 1
