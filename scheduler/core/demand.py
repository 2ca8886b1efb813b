"""Demand of a worker pool, for autoscaling: how many replicas of one kind of worker the work
that is waiting or running calls for (KEDA's external scaler, scheduler/api/keda.py, reports it).

A pool is a set of identical workers (a Kubernetes Deployment, say): one worker type, the same
labels, `slots_per_replica` task slots and `gpu_memory_mb_per_replica` MiB of GPU memory each.
Its demand counts

* every pending task that a replica of the pool could run: placement's own filters
  (filters.py) judge the task against a synthetic, idle replica — so type, GPU need, required
  labels, the preferred-GPU wait and a GPU memory request larger than a replica has all count
  exactly as placement counts them — except tasks of a paused queue, which nothing runs;
* every task dispatched to or running on a worker that belongs to the pool (its type, and at
  least the pool's labels), which keeps busy replicas from being scaled away;

restricted to one queue when the pool names one. Each task weighs one slot and, on a pool with
GPUs, the GPU memory it asked for (reserved memory, for a running one). Then

    replicas = max(slots / slots_per_replica, gpu_memory_mb / gpu_memory_mb_per_replica)

(the memory term only when gpu_memory_mb_per_replica > 0). A task that more than one pool could
serve counts for each of them: pools are scaled independently.

Pure: plain data in, plain data out; the engine supplies the tasks and the time (in the
placement context).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.core.model import GpuView, PendingTask, WorkerType, WorkerView
from scheduler.core.placement.filters import Trial, judge, memo_key
from scheduler.core.placement.policy import PlacementContext

UNBOUNDED_GPU_MEMORY_MB = 1 << 40
"""GPU memory of a synthetic replica whose pool does not say how much it has: never the limit."""


@dataclass(frozen=True)
class Pool:
    """Identical workers scaled together."""

    worker_type: WorkerType
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels every worker of the pool has (tasks requiring other labels are not its work)."""
    queue: str = ""
    """Only this logical queue's tasks count ("" = every queue)."""
    slots_per_replica: int = 1
    """Task slots one replica runs (>= 1)."""
    gpu_memory_mb_per_replica: int = 0
    """GPU memory one replica offers, MiB (0 = not weighed; a replica's GPU is then never too small)."""

    @property
    def has_gpu(self) -> bool:
        """Whether its replicas run GPU work (a GPU or hybrid worker type)."""
        return self.worker_type in (WorkerType.GPU, WorkerType.HYBRID)

    def replica(self) -> WorkerView:
        """An idle replica as placement sees a worker: what the pool's filters are judged on."""
        memory = self.gpu_memory_mb_per_replica or UNBOUNDED_GPU_MEMORY_MB
        return WorkerView(
            worker_id="(replica)",
            worker_type=self.worker_type,
            slots=self.slots_per_replica,
            in_flight=0,
            gpus=(GpuView(index=0, memory_total_mb=memory, memory_free_mb=memory),) if self.has_gpu else (),
            labels=dict(self.labels),
        )

    def has_member(self, worker_type: WorkerType, labels: Mapping[str, str]) -> bool:
        """Whether a worker of this type and these labels belongs to the pool."""
        return worker_type is self.worker_type and all(labels.get(k) == v for k, v in self.labels.items())


@dataclass(frozen=True)
class RunningWork:
    """One task dispatched to or running on a worker, and that worker's kind."""

    queue: str
    gpu_memory_mb: int
    """GPU memory reserved for it (0 when none)."""
    worker_type: WorkerType
    worker_labels: Mapping[str, str]


@dataclass(frozen=True)
class Demand:
    """The work a pool could serve now."""

    pending: int = 0
    """Pending tasks a replica could run."""
    running: int = 0
    """Tasks dispatched to or running on the pool's workers."""
    gpu_memory_mb: int = 0
    """GPU memory those tasks asked for (pending) or hold (running), MiB."""

    @property
    def tasks(self) -> int:
        """Slots the work needs: one per task."""
        return self.pending + self.running

    def replicas(self, pool: Pool) -> float:
        """Replicas needed: the larger of the slot and the GPU memory need (see the module docstring)."""
        by_slots = self.tasks / max(1, pool.slots_per_replica)
        by_memory = self.gpu_memory_mb / pool.gpu_memory_mb_per_replica if pool.gpu_memory_mb_per_replica > 0 else 0.0
        return max(by_slots, by_memory)

    def slot_equivalents(self, pool: Pool) -> float:
        """`replicas` in slots (replicas x slots_per_replica): the metric KEDA gets, with the
        pool's slots per replica as its target, so that value / target = replicas. Computed
        without dividing the slot count, so a whole number of slots stays exactly whole."""
        if pool.gpu_memory_mb_per_replica <= 0:
            return float(self.tasks)
        by_memory = self.gpu_memory_mb * max(1, pool.slots_per_replica) / pool.gpu_memory_mb_per_replica
        return max(float(self.tasks), by_memory)

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.pending + other.pending, self.running + other.running,
                      self.gpu_memory_mb + other.gpu_memory_mb)


class PendingJudge:
    """Which pending tasks a pool's replica could run, remembered per group of tasks that every
    filter judges alike (`memo_key`), so a large backlog costs a lookup per task."""

    def __init__(self, pool: Pool, ctx: PlacementContext, paused: Iterable[str] = ()) -> None:
        self.pool = pool
        self.ctx = ctx
        self.paused = frozenset(paused)
        self._replica = pool.replica()
        self._verdicts: dict[tuple[Hashable, ...], bool] = {}

    def serves(self, task: PendingTask) -> bool:
        """Whether a replica of the pool could run `task` (its queue not paused)."""
        if task.queue in self.paused or (self.pool.queue and task.queue != self.pool.queue):
            return False
        key = memo_key(task, self.ctx)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = judge(Trial(task, self._replica, self.ctx)) is None
        return verdict

    def demand(self, tasks: Iterable[PendingTask]) -> Demand:
        """The demand of these pending tasks (the pool's share of them)."""
        count = memory = 0
        weigh_memory = self.pool.has_gpu
        for task in tasks:
            if self.serves(task):
                count += 1
                if weigh_memory:
                    memory += task.gpu_memory_mb
        return Demand(pending=count, gpu_memory_mb=memory)


def running_demand(pool: Pool, work: Iterable[RunningWork]) -> Demand:
    """The demand of the tasks in flight on the pool's workers."""
    count = memory = 0
    for item in work:
        if (not pool.queue or item.queue == pool.queue) and pool.has_member(item.worker_type, item.worker_labels):
            count += 1
            memory += item.gpu_memory_mb
    return Demand(running=count, gpu_memory_mb=memory)


def pool_demand(pool: Pool, pending: Iterable[PendingTask], running: Iterable[RunningWork],
                ctx: PlacementContext, paused: Iterable[str] = ()) -> Demand:
    """The pool's whole demand at once (see the module docstring)."""
    return PendingJudge(pool, ctx, paused).demand(pending) + running_demand(pool, running)
