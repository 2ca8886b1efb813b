"""Out of the box (Settings() with no config): an always-failing task is retried with growing,
jittered delays and then dead-lettered, and a lost worker's attempt goes back to pending without
using up any of the task's own retries."""

from __future__ import annotations

import random

import pytest

from scheduler.core.model import TaskState
from scheduler.core.retry import DEFAULT_RETRY
from scheduler.fleet import Liveness
from scheduler.settings import Settings
from tests.support.fakes import EngineRig, make_engine
from tests.unit.engine.drive import connect, place, report, start, submit, task

DEFAULTS = Settings()
ATTEMPTS = DEFAULT_RETRY.max_retries + 1
"""Attempts an always-failing task gets under the default policy (the first and its retries)."""


class FixedDraw(random.Random):
    """A jitter source that always draws the same number, so each delay is known exactly."""

    def __init__(self, unit: float) -> None:
        super().__init__()
        self.unit = unit

    def random(self) -> float:
        return self.unit


async def fail_once(rig: EngineRig, worker_id: str, task_id: str, expected_attempt: int) -> float:
    """The worker gets the task, starts it and reports a failure; returns when it failed."""
    (hand_out,) = await place(rig, worker_id)
    assert (hand_out.task_id, hand_out.attempt) == (task_id, expected_attempt)
    assert await start(rig, hand_out)
    failed_at = rig.clock()
    await report(rig, "failed", hand_out, error="RuntimeError: always", error_type="RuntimeError")
    return failed_at


async def wait_out_the_backoff(rig: EngineRig, task_id: str) -> None:
    """Not a moment early: the retry comes back only once its time is due."""
    due = (await task(rig, task_id)).next_attempt_at
    rig.clock.now = due - 0.001
    assert await rig.engine.lifecycle.promote_due_retries() == 0
    rig.clock.now = due
    assert await rig.engine.lifecycle.promote_due_retries() == 1


def test_the_defaults_name_a_retrying_dead_lettering_policy() -> None:
    assert DEFAULTS.retry_policies[DEFAULTS.default_retry_policy] is DEFAULT_RETRY
    assert ATTEMPTS >= 3 and DEFAULT_RETRY.dead_letter


@pytest.mark.parametrize("unit", [0.0, 0.5, 0.999999])
async def test_an_always_failing_task_is_retried_with_growing_delays_then_dead_lettered(unit: float) -> None:
    rig = make_engine(DEFAULTS)
    rig.engine.lifecycle.random = FixedDraw(unit)
    await connect(rig, "w1")
    task_id = await submit(rig)
    delays = []
    for attempt in range(1, ATTEMPTS + 1):
        failed_at = await fail_once(rig, "w1", task_id, attempt)
        record = await task(rig, task_id)
        if attempt == ATTEMPTS:
            break
        assert (record.state, record.failures, record.retry_policy) == (TaskState.RETRYING, attempt, "default")
        delay = record.next_attempt_at - failed_at
        low, high = DEFAULT_RETRY.delay_bounds(attempt)
        assert low <= delay <= high <= DEFAULT_RETRY.max_delay_seconds
        delays.append(delay)
        await wait_out_the_backoff(rig, task_id)
    assert len(delays) == DEFAULT_RETRY.max_retries and delays == sorted(set(delays))  # strictly growing
    dead = await task(rig, task_id)
    assert (dead.state, dead.failures, dead.attempt) == (TaskState.DEAD_LETTERED, ATTEMPTS, ATTEMPTS)
    assert dead.error == "RuntimeError: always" and f"allows {DEFAULT_RETRY.max_retries} retr" in dead.reason
    letters, total = await rig.engine.dead_letters.list("", 0)
    assert [record.task_id for record, _at in letters] == [task_id] and total == 1
    assert await place(rig, "w1") == []  # dead letters are not handed out again


async def test_a_worker_loss_re_dispatches_without_using_up_the_task_s_retries() -> None:
    rig = make_engine(DEFAULTS)
    await connect(rig, "w1")
    task_id = await submit(rig)
    # One real failure first, so the loss happens with part of the budget already spent.
    await fail_once(rig, "w1", task_id, expected_attempt=1)
    await wait_out_the_backoff(rig, task_id)
    (hand_out,) = await place(rig, "w1")
    assert hand_out.attempt == 2 and await start(rig, hand_out)
    # The worker goes silent while it runs attempt 2 and is declared lost.
    survivor = await connect(rig, "w2")
    rig.clock.advance(DEFAULTS.heartbeat_timeout_seconds + 1)
    rig.engine.agents.heartbeat("w2", survivor.session, None, [], {}, False)
    await rig.engine.liveness.check()
    assert rig.engine.shared.fleet.get("w1").liveness is Liveness.LOST  # type: ignore[union-attr]
    requeued = await task(rig, task_id)
    assert (requeued.state, requeued.attempt, requeued.failures) == (TaskState.PENDING, 2, 1)
    assert "lost" in requeued.reason
    # Re-dispatched at once (no backoff: the task did nothing wrong) as a new attempt, and with
    # its budget untouched: it still gets every remaining retry, so it is dead-lettered one
    # attempt later than it would have been without the loss.
    for failures in range(2, ATTEMPTS):
        await fail_once(rig, "w2", task_id, expected_attempt=failures + 1)
        retrying = await task(rig, task_id)
        assert (retrying.state, retrying.failures) == (TaskState.RETRYING, failures)
        await wait_out_the_backoff(rig, task_id)
    await fail_once(rig, "w2", task_id, expected_attempt=ATTEMPTS + 1)
    dead = await task(rig, task_id)
    assert (dead.state, dead.failures, dead.attempt) == (TaskState.DEAD_LETTERED, ATTEMPTS, ATTEMPTS + 1)


async def test_a_worker_whose_celery_worker_exits_does_not_cost_a_retry_either() -> None:
    rig = make_engine(DEFAULTS)
    lost = await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    assert await start(rig, hand_out)
    await rig.engine.agents.worker_exited("w1", lost.session, 137, "killed")
    requeued = await task(rig, task_id)
    assert (requeued.state, requeued.attempt, requeued.failures) == (TaskState.PENDING, 1, 0)
    await connect(rig, "w2")
    (again,) = await place(rig, "w2")
    assert again.attempt == 2 and await start(rig, again)
    await report(rig, "failed", again, error="RuntimeError: once", error_type="RuntimeError")
    retried = await task(rig, task_id)
    # The first real failure is retry 1 of the full budget, not the last one.
    assert (retried.state, retried.failures) == (TaskState.RETRYING, 1)
    assert f"retry 1 of {DEFAULT_RETRY.max_retries}" in retried.reason
