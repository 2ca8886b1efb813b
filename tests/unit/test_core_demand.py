"""A worker pool's demand (scheduler/core/demand.py): which tasks count for a pool, what they
weigh, and that the metric KEDA gets divided by its target is the number of replicas needed."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from scheduler.core.demand import Demand, Pool, RunningWork, pool_demand
from scheduler.core.model import GpuNeed, PendingTask, TaskClass, WorkerType
from scheduler.core.placement.policy import PlacementContext, PlacementPolicy

CTX = PlacementContext(now=1_000.0)


def gpu_task(task_id: str, memory: int = 0, *, queue: str = "gpu_priority", labels: dict[str, str] | None = None,
             submitted_at: float = 1_000.0) -> PendingTask:
    return PendingTask(task_id, queue, 8, 1, TaskClass.GPU_INTENSIVE, GpuNeed.REQUIRED, memory,
                       tuple(sorted((labels or {}).items())), submitted_at, task_name="media.transcode")


def cpu_task(task_id: str, queue: str = "cpu_standard") -> PendingTask:
    return PendingTask(task_id, queue, 5, 2, TaskClass.CPU, GpuNeed.NONE, submitted_at=1_000.0, task_name="text.summarize")


def mixed_task(task_id: str, submitted_at: float) -> PendingTask:
    return PendingTask(task_id, "gpu_fallback", 6, 3, TaskClass.MIXED, GpuNeed.PREFERRED,
                       submitted_at=submitted_at, task_name="media.youtube")


def test_a_gpu_pool_counts_the_gpu_work_a_replica_could_run_weighted_by_slots_and_memory() -> None:
    pool = Pool(WorkerType.GPU, slots_per_replica=2, gpu_memory_mb_per_replica=8_000)
    pending = [gpu_task(f"g{i}", 6_000) for i in range(3)] + [cpu_task("c1")]
    demand = pool_demand(pool, pending, [], CTX)
    assert demand == Demand(pending=3, gpu_memory_mb=18_000)
    # by slots 3/2 = 1.5 replicas, by memory 18000/8000 = 2.25: memory decides.
    assert demand.replicas(pool) == 2.25
    assert demand.slot_equivalents(pool) == 4.5


def test_a_cpu_pool_counts_cpu_work_and_no_gpu_memory() -> None:
    pool = Pool(WorkerType.CPU, slots_per_replica=4)
    demand = pool_demand(pool, [gpu_task("g1", 6_000), cpu_task("c1"), cpu_task("c2")], [], CTX)
    assert demand == Demand(pending=2)
    assert demand.replicas(pool) == 0.5 and demand.slot_equivalents(pool) == 2.0


def test_required_labels_the_pool_lacks_and_requests_larger_than_a_replica_do_not_count() -> None:
    pool = Pool(WorkerType.GPU, labels={"zone": "eu"}, gpu_memory_mb_per_replica=16_000)
    pending = [
        gpu_task("eu", 1_000, labels={"zone": "eu"}),
        gpu_task("us", 1_000, labels={"zone": "us"}),
        gpu_task("any", 1_000),
        gpu_task("huge", 40_000),  # no replica of this pool could ever run it
    ]
    assert pool_demand(pool, pending, [], CTX) == Demand(pending=2, gpu_memory_mb=2_000)


def test_paused_queues_and_other_queues_do_not_count() -> None:
    pending = [gpu_task("a"), gpu_task("b", queue="gpu_bulk")]
    assert pool_demand(Pool(WorkerType.GPU), pending, [], CTX, paused={"gpu_bulk"}).pending == 1
    assert pool_demand(Pool(WorkerType.GPU, queue="gpu_bulk"), pending, [], CTX).pending == 1
    assert pool_demand(Pool(WorkerType.GPU, queue="gpu_bulk"), pending, [], CTX, paused={"gpu_bulk"}).pending == 0


def test_gpu_preferred_work_counts_for_a_cpu_pool_only_once_its_wait_is_over() -> None:
    ctx = PlacementContext(policy=PlacementPolicy(preferred_gpu_wait_seconds=30.0), now=1_000.0)
    pending = [mixed_task("fresh", submitted_at=990.0), mixed_task("waited", submitted_at=900.0)]
    assert pool_demand(Pool(WorkerType.CPU), pending, [], ctx).pending == 1
    assert pool_demand(Pool(WorkerType.GPU), pending, [], ctx).pending == 2


def test_running_work_counts_on_the_pools_own_workers_only() -> None:
    pool = Pool(WorkerType.GPU, labels={"zone": "eu"}, slots_per_replica=2)
    running = [
        RunningWork("gpu_priority", 4_000, WorkerType.GPU, {"zone": "eu", "rack": "1"}),
        RunningWork("gpu_priority", 4_000, WorkerType.GPU, {"zone": "us"}),
        RunningWork("gpu_priority", 0, WorkerType.HYBRID, {"zone": "eu"}),
    ]
    assert pool_demand(pool, [gpu_task("p", 2_000)], running, CTX) == Demand(
        pending=1, running=1, gpu_memory_mb=6_000)


def test_no_work_is_no_demand() -> None:
    pool = Pool(WorkerType.GPU, gpu_memory_mb_per_replica=8_000)
    demand = pool_demand(pool, [], [], CTX)
    assert demand.tasks == 0 and demand.replicas(pool) == 0 and demand.slot_equivalents(pool) == 0


@given(tasks=st.integers(0, 5_000), memory=st.integers(0, 10_000_000), slots=st.integers(1, 64),
       per_replica=st.integers(0, 200_000))
def test_value_over_target_is_the_replicas_needed(tasks: int, memory: int, slots: int, per_replica: int) -> None:
    pool = Pool(WorkerType.GPU, slots_per_replica=slots, gpu_memory_mb_per_replica=per_replica)
    demand = Demand(pending=tasks, gpu_memory_mb=memory)
    value, target = demand.slot_equivalents(pool), pool.slots_per_replica
    assert math.isclose(value / target, demand.replicas(pool), rel_tol=1e-12, abs_tol=1e-12)
    # The HPA (AverageValue) asks for ceil(value / target) replicas: enough slots for every
    # task, and enough GPU memory for every request.
    replicas = math.ceil(math.ceil(value) / target)
    assert replicas * slots >= tasks
    if per_replica:
        assert replicas * per_replica >= memory
