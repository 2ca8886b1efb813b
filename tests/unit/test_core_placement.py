"""Placement decisions of the pure core, including property tests over random fleets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.model import GpuNeed, GpuView, PendingTask, TaskClass, WorkerType, WorkerView
from scheduler.core.placement import plan, rejection, wait_reason

_NEED = {TaskClass.GPU_INTENSIVE: GpuNeed.REQUIRED, TaskClass.MIXED: GpuNeed.PREFERRED,
         TaskClass.CPU: GpuNeed.NONE, TaskClass.IO: GpuNeed.NONE}


def task(task_id: str, cls: TaskClass = TaskClass.CPU, priority: int = 5, seq: int = 0, **kw) -> PendingTask:
    return PendingTask(task_id, "q", priority, seq, cls, kw.pop("gpu", _NEED[cls]), **kw)


def worker(worker_id: str, kind: WorkerType, slots: int = 1, in_flight: int = 0, gpus: int | list[GpuView] = 0, **kw) -> WorkerView:
    if isinstance(gpus, int):
        gpus = [GpuView(i, 40960, 40960) for i in range(gpus)]
    return WorkerView(worker_id, kind, slots, in_flight, gpus=tuple(gpus), **kw)


def test_gpu_work_only_on_gpu_capable_workers():
    cpu, gpu, hybrid = worker("c", WorkerType.CPU), worker("g", WorkerType.GPU, gpus=1), worker("h", WorkerType.HYBRID, gpus=1)
    t = task("t", TaskClass.GPU_INTENSIVE)
    assert rejection(t, cpu) is not None
    assert rejection(t, gpu) is None
    assert rejection(t, hybrid) is None
    # a "gpu" worker that has no GPU cannot take required-GPU work
    assert rejection(t, worker("g0", WorkerType.GPU)) is not None


def test_cpu_work_only_on_cpu_or_hybrid_workers():
    t = task("t", TaskClass.CPU)
    assert rejection(t, worker("g", WorkerType.GPU, gpus=1)) is not None
    assert rejection(t, worker("c", WorkerType.CPU)) is None
    assert rejection(t, worker("h", WorkerType.HYBRID, gpus=1)) is None


def test_mixed_work_prefers_a_free_gpu_worker_and_falls_back_to_cpu():
    t = task("t", TaskClass.MIXED)
    fleet = [worker("c", WorkerType.CPU), worker("g", WorkerType.GPU, gpus=1)]
    assert plan([t], fleet).assignments[0].worker_id == "g"
    busy_gpu = [worker("c", WorkerType.CPU), worker("g", WorkerType.GPU, gpus=1, in_flight=1)]
    assert plan([t], busy_gpu).assignments[0].worker_id == "c"


def test_cpu_work_prefers_cpu_worker_over_hybrid():
    fleet = [worker("h", WorkerType.HYBRID, gpus=1), worker("c", WorkerType.CPU)]
    assert plan([task("t", TaskClass.CPU)], fleet).assignments[0].worker_id == "c"


def test_priority_order_is_kept_and_slots_are_not_overcommitted():
    fleet = [worker("c", WorkerType.CPU, slots=2)]
    pending = [task("urgent", priority=10, seq=101)] + [task(f"t{i}", priority=5, seq=i) for i in range(100)]
    pending.sort(key=lambda t: t.order_key)
    result = plan(pending, fleet)
    assert [a.task_id for a in result.assignments] == ["urgent", "t0"]


def test_labels_are_required_exactly():
    t = task("t", labels=(("zone", "eu"),))
    assert rejection(t, worker("c", WorkerType.CPU, labels={"zone": "us"})) == "missing label zone=eu"
    assert rejection(t, worker("c", WorkerType.CPU, labels={"zone": "eu"})) is None


def test_gpu_memory_is_booked_per_device_within_a_round():
    g = worker("g", WorkerType.GPU, slots=4, gpus=[GpuView(0, 16384, 10000), GpuView(1, 16384, 6000)])
    pending = [task(f"t{i}", TaskClass.GPU_INTENSIVE, seq=i, gpu_memory_mb=5000) for i in range(4)]
    result = plan(pending, [g])
    devices = [a.gpu_index for a in result.assignments]
    # 10000 MiB fits two 5000 MiB tasks, 6000 fits one: the fourth task must wait.
    assert sorted(devices) == [0, 0, 1]
    assert "GPU memory" in result.waiting["t3"]


def test_draining_worker_gets_nothing_and_reason_explains_waiting():
    t = task("t", TaskClass.GPU_INTENSIVE)
    assert plan([t], [worker("g", WorkerType.GPU, gpus=1, accepting=False)]).assignments == ()
    assert "GPU" in wait_reason(t, [])
    assert "GPU" in wait_reason(t, [worker("c", WorkerType.CPU)])
    assert "free slot" in wait_reason(task("c"), [worker("c", WorkerType.CPU, in_flight=1)])


# --- properties over random fleets and workloads -----------------------------------------

workers_st = st.lists(
    st.builds(
        lambda i, kind, slots, busy, mems, zone: worker(
            f"w{i}", kind, slots=slots, in_flight=min(busy, slots),
            gpus=[GpuView(j, 40960, m) for j, m in enumerate(mems)] if kind is not WorkerType.CPU else [],
            labels={"zone": zone},
        ),
        st.integers(0, 10_000), st.sampled_from(list(WorkerType)), st.integers(1, 4), st.integers(0, 4),
        st.lists(st.integers(0, 40960), max_size=3), st.sampled_from(["eu", "us"]),
    ),
    max_size=8, unique_by=lambda w: w.worker_id,
)
tasks_st = st.lists(
    st.builds(
        lambda i, cls, prio, mem, zone: task(
            f"t{i}", cls, priority=prio, seq=i,
            gpu_memory_mb=mem if cls is TaskClass.GPU_INTENSIVE else 0,
            labels=(("zone", zone),) if zone else (),
        ),
        st.integers(0, 10_000), st.sampled_from(list(TaskClass)), st.integers(1, 10),
        st.sampled_from([0, 0, 4096, 20000]), st.sampled_from(["", "", "eu"]),
    ),
    max_size=40, unique_by=lambda t: t.task_id,
)


@settings(max_examples=300, deadline=None)
@given(workers_st, tasks_st)
def test_plan_never_breaks_capability_slots_or_gpu_memory(workers, tasks):
    pending = sorted(tasks, key=lambda t: t.order_key)
    result = plan(pending, workers)
    by_id = {w.worker_id: w for w in workers}
    by_task = {t.task_id: t for t in tasks}
    booked: dict[str, int] = {}
    gpu_booked: dict[tuple[str, int], int] = {}
    for a in result.assignments:
        w, t = by_id[a.worker_id], by_task[a.task_id]
        assert w.accepting
        if t.gpu is GpuNeed.REQUIRED:
            assert w.has_gpu, "gpu-required task placed on a worker without GPU"
        if t.task_class in (TaskClass.CPU, TaskClass.IO):
            assert w.worker_type is not WorkerType.GPU
        for key, value in t.labels:
            assert w.labels.get(key) == value
        booked[w.worker_id] = booked.get(w.worker_id, 0) + 1
        if a.gpu_index is not None:
            k = (w.worker_id, a.gpu_index)
            gpu_booked[k] = gpu_booked.get(k, 0) + t.gpu_memory_mb
    for wid, n in booked.items():
        assert by_id[wid].in_flight + n <= by_id[wid].slots, "slots overcommitted"
    for (wid, index), mb in gpu_booked.items():
        device = next(g for g in by_id[wid].gpus if g.index == index)
        assert mb <= device.available_mb, "GPU memory overcommitted"


@settings(max_examples=300, deadline=None)
@given(workers_st, tasks_st)
def test_higher_priority_is_never_passed_over_for_an_eligible_worker(workers, tasks):
    pending = sorted(tasks, key=lambda t: t.order_key)
    result = plan(pending, workers)
    placed = {a.task_id for a in result.assignments}
    position = {t.task_id: i for i, t in enumerate(pending)}
    for a in result.assignments:
        chosen = next(w for w in workers if w.worker_id == a.worker_id)
        for skipped in pending[: position[a.task_id]]:
            if skipped.task_id in placed or skipped.gpu_memory_mb:
                # GPU memory booked earlier in the round is not in the initial view; slots are.
                continue
            # A skipped, more urgent task must not have fitted the worker that was free for the later one.
            assert rejection(skipped, chosen) is not None


@settings(max_examples=200, deadline=None)
@given(workers_st, tasks_st)
def test_something_is_placed_whenever_some_task_fits_some_worker(workers, tasks):
    pending = sorted(tasks, key=lambda t: t.order_key)
    result = plan(pending, workers)
    fits = any(rejection(t, w) is None for t in pending for w in workers)
    assert bool(result.assignments) == fits


def test_a_long_blocked_head_does_not_stall_placeable_work_behind_it():
    blocked = [task(f"g{i}", TaskClass.GPU_INTENSIVE, priority=9, seq=i) for i in range(20_000)]
    cpu_work = [task(f"c{i}", TaskClass.CPU, priority=5, seq=20_000 + i) for i in range(10)]
    result = plan(blocked + cpu_work, [worker("c", WorkerType.CPU, slots=4)], max_examined=100)
    assert [a.task_id for a in result.assignments] == ["c0", "c1", "c2", "c3"]
    assert "GPU" in result.waiting["g19999"]


def test_assignment_budget_ends_the_round_and_says_more_is_left():
    pending = [task(f"t{i}", seq=i) for i in range(50)]
    result = plan(pending, [worker("c", WorkerType.CPU, slots=100)], max_assignments=20)
    assert len(result.assignments) == 20 and result.more
