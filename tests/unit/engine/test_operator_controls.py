"""Operator controls and what operators see: drain and undrain, ending a quarantine, submissions
no known worker could run, and the queue figures `switchyard top` and `queues` show."""

from __future__ import annotations

import pytest

from scheduler.core.model import GpuNeed, Submission, TaskState, WorkerType
from scheduler.core.validate import TaskInput
from scheduler.engine.admission import REGISTRATIONS_REFRESH_SECONDS
from scheduler.errors import FailedPrecondition, NotFound
from scheduler.state.records import WorkerRecord
from tests.support.fakes import make_engine
from tests.unit.engine.drive import (
    GPU,
    connect,
    place,
    report,
    run_to_success,
    start,
    state_of,
    submit,
)
from tests.unit.engine.test_dead_letters import DEAD_LETTERING, dead_lettered


async def test_a_drained_worker_gets_nothing_until_undrained_and_then_at_once() -> None:
    rig = make_engine()
    worker = await connect(rig, "w1")
    drained = await rig.engine.controls.drain("w1")
    assert rig.engine.queries.operator_status(drained) == ("drained", "drained by operator; idle", rig.clock())
    task_id = await submit(rig, content_type="text")
    assert await place(rig, "w1") == [] and await state_of(rig, task_id) is TaskState.PENDING

    rig.clock.advance(5)
    rig.engine.shared.kick.clear()
    change = await rig.engine.controls.undrain("w1")
    assert (change.previous.state, change.changed) == ("drained", True)
    assert rig.engine.queries.operator_status(worker) == ("ready", "", rig.clock())
    assert rig.engine.shared.kick.is_set(), "undrain wakes placement"
    (hand_out,) = await place(rig, "w1")
    assert hand_out.task_id == task_id


async def test_undrain_and_unquarantine_are_idempotent_and_name_unknown_workers() -> None:
    rig = make_engine()
    await connect(rig, "w1")
    again = await rig.engine.controls.undrain("w1")
    assert (again.previous.state, again.changed) == ("ready", False)
    assert not (await rig.engine.controls.unquarantine("w1")).changed
    with pytest.raises(NotFound, match="worker 'ghost' is not known"):
        await rig.engine.controls.undrain("ghost")
    with pytest.raises(NotFound, match="worker 'ghost' is not known"):
        await rig.engine.controls.unquarantine("ghost")


async def test_draining_a_busy_worker_shows_draining_then_drained_once_idle() -> None:
    rig = make_engine()
    worker = await connect(rig, "w1")
    await submit(rig, content_type="text")
    (hand_out,) = await place(rig, "w1")
    await start(rig, hand_out)
    drained_at = rig.clock()
    await rig.engine.controls.drain("w1")
    status = rig.engine.queries.operator_status(worker)
    assert (status.state, status.since) == ("draining", drained_at)
    assert "1 task(s) still running" in status.reason
    rig.clock.advance(3)
    await report(rig, "succeeded", hand_out, result_json='"done"')
    assert rig.engine.queries.operator_status(worker) == ("drained", "drained by operator; idle", rig.clock())


async def test_unquarantine_puts_a_quarantined_worker_back_to_work() -> None:
    rig = make_engine()
    worker = await connect(rig, "w1")
    policy = rig.engine.shared.settings.placement
    for index in range(policy.quarantine_failures):
        worker.record_failure(rig.clock(), policy.failure_window_seconds, policy.quarantine_failures,
                              policy.quarantine_seconds, f"t{index}")
    status = rig.engine.queries.operator_status(worker)
    assert status.state == "quarantined"
    assert status.reason == f"{policy.quarantine_failures} distinct tasks failed on it within {policy.failure_window_seconds:g} s"
    task_id = await submit(rig, content_type="text")
    assert await place(rig, "w1") == []

    change = await rig.engine.controls.unquarantine("w1")
    assert (change.previous.state, change.changed) == ("quarantined", True)
    (hand_out,) = await place(rig, "w1")
    assert hand_out.task_id == task_id
    assert worker.view(rig.clock()).recent_failures == 0, "its failures are forgotten"


def item(content_type: str = "text", *, allow: bool = False, **fields: object) -> TaskInput:
    return TaskInput(Submission("t.job", content_type=content_type, **fields), "[]", "{}",  # type: ignore[arg-type]
                     allow_unschedulable=allow)


async def test_submissions_no_known_worker_could_run_are_refused_unless_allowed() -> None:
    rig = make_engine()
    await connect(rig, "gpu-1", worker_type=WorkerType.GPU, gpus=[GPU], labels={"zone": "eu"})
    admission = rig.engine.admission
    with pytest.raises(FailedPrecondition, match="no worker could ever run this task: asks for 80000 MiB"):
        await admission.submit([item("video", gpu_memory_mb=80_000)])
    with pytest.raises(FailedPrecondition, match=r"requires label zone=us.*known values of 'zone': eu"):
        await admission.submit([item(labels={"zone": "us"})])
    with pytest.raises(FailedPrecondition, match="did you mean 'video'"):
        await admission.submit([item("vidoe")])
    # A batch names each refused item; nothing of it is accepted.
    with pytest.raises(FailedPrecondition, match=r"2 invalid item\(s\), nothing accepted: tasks\[1\]: .*tasks\[2\]: "):
        await admission.submit([item(), item("vidoe"), item(labels={"zone": "us"})])
    assert len(rig.engine.shared.pending) == 0

    accepted = await admission.submit([item("video", allow=True, gpu_memory_mb=80_000),
                                       item(allow=True, labels={"zone": "us"}), item("vidoe", allow=True)])
    assert [a.queue for a in accepted] == ["gpu_priority", "cpu_standard", "cpu_standard"]
    # Merely waiting is accepted as always: the only GPU worker is drained.
    await rig.engine.controls.drain("gpu-1")
    (fits,) = await admission.submit([item("video", gpu_memory_mb=30_000)])
    assert await state_of(rig, fits.task_id) is TaskState.PENDING


async def test_explain_says_when_submit_would_refuse_the_task() -> None:
    rig = make_engine()
    await connect(rig, "gpu-1", worker_type=WorkerType.GPU, gpus=[GPU], labels={"zone": "eu"})
    queries = rig.engine.queries
    refused = await queries.explain(item("video", gpu_memory_mb=80_000), "")
    assert refused.chosen is None
    assert refused.summary.startswith("SubmitTask would refuse it: no worker could ever run this task: asks for 80000 MiB")
    assert "allow_unschedulable" in refused.summary
    by_label = await queries.explain(item(labels={"zone": "us"}), "")
    assert "requires label zone=us" in by_label.summary
    # Allowed, the same task is explained as a waiting one; a task the fleet fits, as placed.
    allowed = await queries.explain(item("video", allow=True, gpu_memory_mb=80_000), "")
    assert not allowed.summary.startswith("SubmitTask would refuse it")
    fits = await queries.explain(item("video"), "")
    assert fits.chosen is not None and fits.chosen.worker_id == "gpu-1"
    assert len(rig.engine.shared.pending) == 0, "a dry run accepts nothing"


async def test_stored_registrations_count_as_known_workers_and_are_reread_now_and_then() -> None:
    rig = make_engine()
    await connect(rig, "gpu-1", worker_type=WorkerType.GPU, gpus=[GPU])
    admission = rig.engine.admission
    with pytest.raises(FailedPrecondition, match="asks for 80000 MiB"):
        await admission.submit([item("video", gpu_memory_mb=80_000)])
    # A bigger GPU worker registered (by another scheduler, or before a restart) and is not
    # connected now: it is known once the registrations are read again.
    rig.state.tables.workers["big-1"] = WorkerRecord("big-1", WorkerType.GPU, 1, {}, (81_920,))
    with pytest.raises(FailedPrecondition):
        await admission.submit([item("video", gpu_memory_mb=80_000)])
    rig.clock.advance(REGISTRATIONS_REFRESH_SECONDS)
    (accepted,) = await admission.submit([item("video", gpu_memory_mb=80_000)])
    assert await state_of(rig, accepted.task_id) is TaskState.PENDING
    # The connected worker's own hello stored its GPU sizes.
    assert rig.state.tables.workers["gpu-1"].gpu_memory_mb == (GPU.memory_total_mb,)


async def test_no_gpu_worker_known_means_waiting_not_refused() -> None:
    rig = make_engine()
    await connect(rig, "cpu-1", labels={"zone": "eu"})
    (accepted,) = await rig.engine.admission.submit([item("video", gpu_memory_mb=500_000)])
    assert await state_of(rig, accepted.task_id) is TaskState.PENDING
    (required,) = await rig.engine.admission.submit([item("", gpu=GpuNeed.REQUIRED)])
    assert await state_of(rig, required.task_id) is TaskState.PENDING


async def test_queue_figures_count_each_outcome_once_and_show_recent_waits_and_rates() -> None:
    rig = make_engine(DEAD_LETTERING)
    await dead_lettered(rig)  # on w1, which is free again afterwards
    task_id = await submit(rig, content_type="text")
    rig.clock.advance(2)  # it starts 2 s after its submission
    (hand_out,) = await place(rig, "w1")
    assert hand_out.task_id == task_id
    await run_to_success(rig, hand_out)
    cancelled = await submit(rig, content_type="text")
    await rig.engine.controls.cancel(cancelled)

    view = await rig.engine.queries.queue_view("cpu_standard")
    # The failed-then-dead-lettered task is dead, not failed too; cancelled is counted.
    assert (view.completed, view.failed, view.dead_lettered, view.cancelled) == (1, 0, 1, 1)
    assert view.submitted_per_second == pytest.approx(3 / 60)
    assert view.finished_per_second == pytest.approx(3 / 60)
    assert (view.wait_p50_seconds, view.wait_p95_seconds) == (0.0, pytest.approx(2.0))
    rig.clock.advance(600)
    later = await rig.engine.queries.queue_view("cpu_standard")
    assert (later.submitted_per_second, later.finished_per_second, later.wait_p95_seconds) == (0, 0, 0)
    assert (later.completed, later.dead_lettered, later.cancelled) == (1, 1, 1), "the counts stay"
