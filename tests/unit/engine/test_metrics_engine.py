"""The engine feeds the Prometheus families the way docs/metrics.md says: every task that ends is
counted once under its outcome, ended attempts are timed, gauges show every worker state (0
included), per-worker series go with the worker, and a term that ends leaves no stale gauges."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from scheduler.core.model import TaskState, WorkerType
from scheduler.core.retry import NO_RETRY, RetryPolicy
from scheduler.fleet import OPERATOR_STATES, Gpu
from scheduler.metrics import OUTCOMES
from scheduler.settings import Settings
from tests.support.fakes import EngineRig, make_engine
from tests.unit.engine.drive import GPU, connect, deliver, place, report, start, state_of, submit

ONCE_THEN_DLQ = RetryPolicy("once", max_retries=1, base_delay_seconds=1.0, jitter=0.0, dead_letter=True)
SETTINGS = Settings(
    retry_policies={"none": NO_RETRY, "once": ONCE_THEN_DLQ}, default_retry_policy="none",
    heartbeat_timeout_seconds=1e9,
)


def sample(rig: EngineRig, name: str, **labels: str) -> float | None:
    return rig.engine.shared.metrics.registry.get_sample_value(name, labels)


def finished(rig: EngineRig, queue: str = "cpu_standard") -> dict[str, float | None]:
    return {outcome: sample(rig, "switchyard_tasks_finished_total", queue=queue, outcome=outcome)
            for outcome in OUTCOMES}


async def test_every_outcome_is_counted_once_and_every_series_starts_at_zero() -> None:
    rig = make_engine(SETTINGS)
    assert finished(rig) == dict.fromkeys(OUTCOMES, 0.0)  # declared before anything happened
    assert sample(rig, "switchyard_task_retries_total", queue="gpu_priority") == 0.0
    await connect(rig, "w1", slots=4)
    ok, bad, flaky, doomed = [await submit(rig) for _ in range(3)] + [await submit(rig, retry_policy="once")]
    hand_outs = {h.task_id: h for h in await place(rig, "w1")}
    rig.clock.advance(2)
    for hand_out in hand_outs.values():
        assert await start(rig, hand_out)
    rig.clock.advance(3)
    await report(rig, "succeeded", hand_outs[ok], result_json='"done"')
    await report(rig, "failed", hand_outs[bad], error="ValueError: bad")
    _cancelled, previous = await rig.engine.controls.cancel(flaky)
    assert previous is TaskState.RUNNING
    # A report of the cancelled attempt arrives late: the store drops it, nothing is counted again.
    await report(rig, "succeeded", hand_outs[flaky], result_json='"late"')
    await report(rig, "failed", hand_outs[doomed], error="RuntimeError: again")
    assert await state_of(rig, doomed) is TaskState.RETRYING
    assert sample(rig, "switchyard_task_retries_total", queue="cpu_standard") == 1.0
    rig.clock.advance(5)
    await rig.engine.lifecycle.promote_due_retries()
    (again,) = await place(rig, "w1")
    assert await start(rig, again)
    await report(rig, "failed", again, error="RuntimeError: again")
    assert await state_of(rig, doomed) is TaskState.DEAD_LETTERED
    assert finished(rig) == {"succeeded": 1.0, "failed": 1.0, "cancelled": 1.0, "dead_lettered": 1.0}
    # Purging a dead letter ends nothing: the task was counted when it was dead-lettered.
    assert await rig.engine.dead_letters.purge([doomed], "", False) == 1
    assert finished(rig)["dead_lettered"] == 1.0
    # Four ended attempts were timed (ok, bad, doomed twice); the cancelled one ended no report.
    assert sample(rig, "switchyard_task_queue_wait_seconds_count", queue="cpu_standard") == 4.0
    assert sample(rig, "switchyard_task_run_seconds_count", queue="cpu_standard") == 4.0
    # The first attempts waited 2 s (submitted -> started) and ran 3 s; the retry waited 10 s from
    # the task's submission and failed at once.
    wait_le = {le: sample(rig, "switchyard_task_queue_wait_seconds_bucket", queue="cpu_standard", le=le)
               for le in ("1.0", "2.5", "10.0")}
    assert wait_le == {"1.0": 0.0, "2.5": 3.0, "10.0": 4.0}
    run_le = {le: sample(rig, "switchyard_task_run_seconds_bucket", queue="cpu_standard", le=le)
              for le in ("0.01", "2.5", "5.0")}
    assert run_le == {"0.01": 1.0, "2.5": 1.0, "5.0": 4.0}


async def test_a_task_that_misses_its_start_deadline_for_good_is_counted_failed_once() -> None:
    rig = make_engine(replace(SETTINGS, start_deadline_seconds=10.0, start_deadline_returns=0))
    await connect(rig, "w1")
    task_id = await submit(rig)
    await place(rig, "w1")
    await rig.engine.liveness.check()
    rig.clock.advance(11)
    await rig.engine.liveness.check()
    assert await state_of(rig, task_id) is TaskState.FAILED
    await rig.engine.liveness.check()
    assert finished(rig)["failed"] == 1.0
    assert sample(rig, "switchyard_task_queue_wait_seconds_count", queue="cpu_standard") == 0.0  # never started


async def test_a_cancelled_pending_task_is_counted_and_a_second_cancel_is_not() -> None:
    rig = make_engine(SETTINGS)
    task_id = await submit(rig)
    assert sample(rig, "switchyard_tasks_submitted_total", queue="cpu_standard") == 1.0
    await rig.engine.controls.cancel(task_id)
    with contextlib.suppress(Exception):
        await rig.engine.controls.cancel(task_id)
    assert finished(rig)["cancelled"] == 1.0


async def test_workers_are_exported_by_type_and_operator_state_zero_included() -> None:
    rig = make_engine(replace(SETTINGS, placement=replace(SETTINGS.placement, quarantine_failures=1)))
    await connect(rig, "ready", slots=2)
    await connect(rig, "drained")
    await rig.engine.controls.drain("drained")
    busy = await connect(rig, "draining")
    await submit(rig)
    assert [h.task_id for h in await place(rig, "draining")]
    await rig.engine.controls.drain("draining")
    bad = await connect(rig, "quarantined")
    bad.record_failure(rig.clock(), 60, 1, 300, "t1")
    gone = await connect(rig, "lost", worker_type=WorkerType.GPU, gpus=[GPU])
    await rig.engine.liveness.declare_lost(gone, "test")
    rig.engine.gauges.refresh()
    counts = {(t.value, s): sample(rig, "switchyard_workers", type=t.value, state=s)
              for t in WorkerType for s in OPERATOR_STATES}
    assert {k: v for k, v in counts.items() if v} == {
        ("cpu", "ready"): 1.0, ("cpu", "drained"): 1.0, ("cpu", "draining"): 1.0,
        ("cpu", "quarantined"): 1.0, ("gpu", "lost"): 1.0}
    assert all(v == 0.0 for v in counts.values() if not v)  # every combination is there, 0 included
    assert sample(rig, "switchyard_slots_free", type="cpu") == 2.0  # only ready workers offer slots
    assert busy.in_flight and sample(rig, "switchyard_worker_slots_free", worker_id="draining") == 0.0
    assert sample(rig, "switchyard_worker_slots_free", worker_id="lost") is None


async def test_gpu_figures_are_bytes_and_ratios_and_go_with_the_worker() -> None:
    rig = make_engine(SETTINGS)
    gpu = Gpu(index=1, name="A100", uuid="GPU-1", memory_total_mb=40_960, memory_free_mb=10_240,
              utilization_percent=75)
    worker = await connect(rig, "g1", worker_type=WorkerType.GPU, gpus=[gpu])
    rig.engine.gauges.refresh()
    assert sample(rig, "switchyard_worker_gpu_memory_free_bytes", worker_id="g1", gpu="1") == 10_240 * 2**20
    assert sample(rig, "switchyard_worker_gpu_memory_total_bytes", worker_id="g1", gpu="1") == 40 * 2**30
    assert sample(rig, "switchyard_worker_gpu_utilization_ratio", worker_id="g1", gpu="1") == 0.75
    await rig.engine.liveness.declare_lost(worker, "test")
    rig.engine.gauges.refresh()
    assert sample(rig, "switchyard_worker_gpu_memory_free_bytes", worker_id="g1", gpu="1") is None
    assert sample(rig, "switchyard_worker_slots_free", worker_id="g1") is None
    assert sample(rig, "switchyard_workers", type="gpu", state="lost") == 1.0


async def test_servable_workers_follow_the_queue_level_filters() -> None:
    rig = make_engine(SETTINGS)
    rig.engine.gauges.refresh()
    servable = {q.name: sample(rig, "switchyard_queue_servable_workers", queue=q.name) for q in SETTINGS.queues}
    assert servable == {"gpu_priority": 0.0, "gpu_fallback": 0.0, "cpu_standard": 0.0}
    await connect(rig, "c1")
    await connect(rig, "c2")
    await rig.engine.controls.drain("c2")
    rig.engine.gauges.refresh()
    servable = {q.name: sample(rig, "switchyard_queue_servable_workers", queue=q.name) for q in SETTINGS.queues}
    # A CPU worker runs CPU work, and mixed work once its GPU-preference wait is over; never
    # GPU-intensive work. A draining worker serves nothing new.
    assert servable == {"gpu_priority": 0.0, "gpu_fallback": 1.0, "cpu_standard": 1.0}
    await connect(rig, "g1", worker_type=WorkerType.GPU, gpus=[GPU])
    rig.engine.gauges.refresh()
    assert sample(rig, "switchyard_queue_servable_workers", queue="gpu_priority") == 1.0


async def test_a_term_that_ends_leaves_no_queue_or_worker_gauges_behind() -> None:
    rig = make_engine(SETTINGS)
    await connect(rig, "w1")
    loop = asyncio.create_task(rig.engine.gauges.run())
    await asyncio.sleep(0)
    assert sample(rig, "switchyard_queue_depth", queue="cpu_standard") == 0.0
    assert sample(rig, "switchyard_workers", type="cpu", state="ready") == 1.0
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    for name, labels in (("switchyard_queue_depth", {"queue": "cpu_standard"}),
                         ("switchyard_workers", {"type": "cpu", "state": "ready"}),
                         ("switchyard_worker_slots_free", {"worker_id": "w1"})):
        assert sample(rig, name, **labels) is None, name
    # Counters stay: they count what this process did, leader or not.
    assert sample(rig, "switchyard_tasks_submitted_total", queue="cpu_standard") == 0.0


def test_the_outcome_label_takes_the_terminal_states() -> None:
    assert sorted(OUTCOMES) == ["cancelled", "dead_lettered", "failed", "succeeded"]


async def test_stale_reports_do_not_count_as_outcomes() -> None:
    rig = make_engine(SETTINGS)
    await connect(rig, "w1")
    task_id = await submit(rig)
    (hand_out,) = await place(rig, "w1")
    assert await start(rig, hand_out)
    await report(rig, "succeeded", hand_out, result_json='"done"')
    rig.state.report("succeeded", task_id, hand_out.attempt, "w1", rig.clock(), result_json='"again"')
    await deliver(rig)
    assert finished(rig)["succeeded"] == 1.0
    assert sample(rig, "switchyard_stale_reports_total") == 1.0
