"""A running attempt whose outcome never arrives (its report lost in a Redis failover) is taken
back once its agent, heartbeating all along, stops listing it; attempts the agent lists, hand-outs
still waiting their turn and agents that do not list attempts are left alone."""

from __future__ import annotations

from scheduler.core.model import TaskState
from scheduler.fleet import Worker
from scheduler.settings import Settings
from tests.support.celery_queue import QueuedMessage
from tests.support.fakes import EngineRig, make_engine
from tests.unit.engine.drive import connect, place, report, start, submit, task

GRACE = 10.0
SETTINGS = Settings(heartbeat_timeout_seconds=1_000.0, start_deadline_seconds=1_000.0,
                    unreported_running_seconds=GRACE)
REQUEUED = "switchyard_tasks_requeued_total"


def beat(rig: EngineRig, worker: Worker, running: tuple[QueuedMessage, ...], listed: bool) -> None:
    """One heartbeat from the worker's agent listing `running` (listed=False: an older agent that
    lists nothing)."""
    attempts = {(m.task_id, m.attempt) for m in running} if listed else None
    rig.engine.agents.heartbeat(worker.worker_id, worker.session, None, [], {}, False, attempts)


async def tick(rig: EngineRig, worker: Worker, seconds: float, *running: QueuedMessage, listed: bool = True) -> None:
    """`seconds` pass with a heartbeat every second, liveness looking after each."""
    for _ in range(int(seconds)):
        rig.clock.advance(1.0)
        beat(rig, worker, running, listed)
        await rig.engine.liveness.check()


async def running_task(rig: EngineRig) -> tuple[Worker, str, QueuedMessage]:
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    assert await start(rig, hand_out)
    return worker, task_id, hand_out


async def test_a_running_attempt_the_agent_stops_listing_runs_again_and_its_late_outcome_is_stale() -> None:
    rig = make_engine(SETTINGS)
    worker, task_id, hand_out = await running_task(rig)
    await tick(rig, worker, 3, hand_out)
    # Its outcome report is lost: the agent no longer lists it, and nothing arrives. The first
    # grace finds it running (not yet known to); the second takes it back.
    await tick(rig, worker, 2 * (GRACE + 1))
    back = await task(rig, task_id)
    assert (back.state, back.worker_id, back.attempt) == (TaskState.PENDING, "", 1)
    assert "outcome never arrived" in back.reason and "w1" in back.reason
    assert rig.state.fence(task_id) == "requeued"
    assert worker.in_flight == {}
    assert rig.engine.shared.metrics.registry.get_sample_value(REQUEUED) == 1.0
    (again,) = await place(rig, "w1")
    assert (again.task_id, again.attempt) == (task_id, 2)
    # The lost outcome turns up after all: stale, it changes nothing.
    await report(rig, "succeeded", hand_out, result_json='"late"')
    late = await task(rig, task_id)
    assert (late.state, late.attempt, late.result_json) == (TaskState.DISPATCHED, 2, "")
    assert await start(rig, again)
    await report(rig, "succeeded", again, result_json='"current"')
    assert (await task(rig, task_id)).result_json == '"current"'


async def test_it_is_taken_back_only_after_the_grace_once_known_to_run() -> None:
    rig = make_engine(SETTINGS)
    worker, task_id, _hand_out = await running_task(rig)
    # Left out from the first heartbeat on; a grace later it is looked up and found running.
    await tick(rig, worker, GRACE + 1)
    assert worker.in_flight[task_id].started and worker.in_flight[task_id].unreported_since is None
    # From the next heartbeat, left out for a whole grace again: then taken back, not before.
    await tick(rig, worker, GRACE)
    assert (await task(rig, task_id)).state is TaskState.RUNNING
    await tick(rig, worker, 1)
    assert (await task(rig, task_id)).state is TaskState.PENDING


async def test_a_listed_attempt_is_never_taken_back() -> None:
    rig = make_engine(SETTINGS)
    worker, task_id, hand_out = await running_task(rig)
    await tick(rig, worker, 5 * GRACE, hand_out)
    assert (await task(rig, task_id)).state is TaskState.RUNNING
    assert rig.engine.shared.metrics.registry.get_sample_value(REQUEUED) == 0.0


async def test_one_listed_again_starts_counting_from_scratch() -> None:
    rig = make_engine(SETTINGS)
    worker, task_id, hand_out = await running_task(rig)
    await tick(rig, worker, GRACE + 1)  # known to run now
    await tick(rig, worker, GRACE - 2)
    await tick(rig, worker, 1, hand_out)  # listed once more (a heartbeat raced its start)
    await tick(rig, worker, GRACE - 2)
    assert (await task(rig, task_id)).state is TaskState.RUNNING


async def test_a_hand_out_waiting_its_turn_is_left_to_the_start_deadline() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    await tick(rig, worker, 5 * GRACE)  # not claimed, so not listed: dispatched all along
    assert (await task(rig, task_id)).state is TaskState.DISPATCHED
    # It starts at last and is listed from then on: still not taken back.
    assert await start(rig, hand_out)
    await tick(rig, worker, 5 * GRACE, hand_out)
    assert (await task(rig, task_id)).state is TaskState.RUNNING


async def test_an_agent_that_lists_nothing_keeps_its_running_attempts() -> None:
    rig = make_engine(SETTINGS)
    worker, task_id, _hand_out = await running_task(rig)
    await tick(rig, worker, 5 * GRACE, listed=False)
    assert (await task(rig, task_id)).state is TaskState.RUNNING
