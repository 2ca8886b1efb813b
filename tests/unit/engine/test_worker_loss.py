"""Worker loss: a worker whose heartbeats stop, whose stream stays down past the grace period or
whose Celery worker exits is lost; its attempts go back to pending under a new attempt and the
old attempt is fenced off for good."""

from __future__ import annotations

from scheduler.core.model import TaskState
from scheduler.fleet import Liveness
from scheduler.settings import Settings
from tests.support.fakes import make_engine
from tests.unit.engine.drive import connect, place, report, start, state_of, submit, task

SETTINGS = Settings(heartbeat_timeout_seconds=10.0, lost_grace_seconds=15.0)


async def test_a_silent_worker_s_tasks_move_to_another_worker_under_a_new_attempt() -> None:
    rig = make_engine(SETTINGS)
    silent = await connect(rig, "w1", slots=2)
    running_id, dispatched_id = await submit(rig), await submit(rig)
    running, dispatched = await place(rig, "w1")
    assert await start(rig, running)
    healthy = await connect(rig, "w2", slots=2)
    rig.clock.advance(SETTINGS.heartbeat_timeout_seconds + 1)
    rig.engine.agents.heartbeat("w2", healthy.session, None, [], {}, False)
    await rig.engine.liveness.check()
    assert silent.liveness is Liveness.LOST and healthy.liveness is Liveness.CONNECTED
    for task_id in (running_id, dispatched_id):
        moved = await task(rig, task_id)
        assert (moved.state, moved.worker_id, moved.attempt) == (TaskState.PENDING, "", 1)
        assert rig.state.fence(task_id) == "requeued"
    assert rig.state.tables.purged == ["w1"]
    metrics = rig.engine.shared.metrics.registry
    assert metrics.get_sample_value("switchyard_workers_lost_total") == 1.0
    assert metrics.get_sample_value("switchyard_tasks_requeued_total") == 2.0
    again = {h.task_id: h for h in await place(rig, "w2")}
    assert again.keys() == {running_id, dispatched_id}
    for task_id in (running_id, dispatched_id):
        assert again[task_id].attempt == 2 and rig.state.fence(task_id) == "2"
    # The lost worker surfaces late: its attempt may not start, and its result is not taken.
    assert not await start(rig, dispatched)
    await report(rig, "succeeded", running, result_json='"late"')
    late = await task(rig, running_id)
    assert (late.state, late.worker_id, late.attempt, late.result_json) == (TaskState.DISPATCHED, "w2", 2, "")
    assert await start(rig, again[running_id])
    await report(rig, "succeeded", again[running_id], result_json='"current"')
    assert (await task(rig, running_id)).result_json == '"current"'


async def test_a_dropped_stream_is_lost_only_after_the_grace_period() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    await place(rig, "w1")
    rig.engine.agents.stream_closed("w1", worker.session)
    assert worker.liveness is Liveness.UNREACHABLE
    rig.clock.advance(SETTINGS.lost_grace_seconds - 1)
    await rig.engine.liveness.check()
    assert await state_of(rig, task_id) is TaskState.DISPATCHED
    rig.clock.advance(2)
    await rig.engine.liveness.check()
    assert worker.liveness is Liveness.LOST
    assert await state_of(rig, task_id) is TaskState.PENDING


async def test_a_worker_that_reconnects_within_the_grace_period_keeps_its_tasks() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    rig.engine.agents.stream_closed("w1", worker.session)
    rig.clock.advance(SETTINGS.lost_grace_seconds - 1)
    await connect(rig, "w1")
    rig.clock.advance(SETTINGS.lost_grace_seconds)
    rig.engine.agents.heartbeat("w1", worker.session, None, [], {}, False)
    await rig.engine.liveness.check()
    assert worker.liveness is Liveness.CONNECTED
    assert await start(rig, hand_out)
    assert await state_of(rig, task_id) is TaskState.RUNNING


async def test_a_worker_whose_celery_worker_exits_is_lost_at_once() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    await rig.engine.agents.worker_exited("w1", worker.session, 137, "killed")
    assert worker.liveness is Liveness.LOST
    assert await state_of(rig, task_id) is TaskState.PENDING
    assert not await start(rig, hand_out)


async def test_a_lost_worker_that_heartbeats_again_rejoins_empty_handed() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    (old,) = await place(rig, "w1")
    rig.clock.advance(SETTINGS.heartbeat_timeout_seconds + 1)
    await rig.engine.liveness.check()
    assert worker.liveness is Liveness.LOST
    rig.engine.agents.heartbeat("w1", worker.session, None, [], {}, False)
    assert worker.liveness is Liveness.CONNECTED and worker.in_flight == {}
    (fresh,) = await place(rig, "w1")
    assert (fresh.task_id, fresh.attempt) == (task_id, 2)
    assert not await start(rig, old)
    assert await start(rig, fresh)


async def test_what_a_lost_worker_never_fetched_is_purged_from_its_queue() -> None:
    rig = make_engine(SETTINGS)
    worker = await connect(rig, "w1")
    task_id = await submit(rig)
    (waiting,) = rig.state.queued("w1")  # handed out, not yet fetched by its consumer
    await rig.engine.agents.worker_exited("w1", worker.session, 137, "killed")
    assert rig.state.tables.purged == ["w1"] and rig.state.queued("w1") == []
    assert await state_of(rig, task_id) is TaskState.PENDING
    await connect(rig, "w2")
    (again,) = await place(rig, "w2")
    assert (again.task_id, again.attempt) == (task_id, 2)
    assert not await start(rig, waiting)
