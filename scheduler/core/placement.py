"""Placement: which pending task goes to which worker, filter-then-score.

`plan` walks pending tasks in priority order (highest first, then first-in first-out) and
gives each the best eligible worker with a free slot, so a higher priority is never passed
over for a worker that could take it. Slots and per-device GPU memory are booked as the
round goes, so one round never overcommits a worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from scheduler.core.model import (
    Assignment,
    GpuNeed,
    GpuView,
    PendingTask,
    Plan,
    TaskClass,
    WorkerType,
    WorkerView,
)
from scheduler.core.policy import ScoringWeights

# How well a worker type fits a class of work (capability match). Keeps GPU workers for GPU
# work and hybrid workers as the second choice for everything.
_MATCH: dict[TaskClass, dict[WorkerType, float]] = {
    TaskClass.GPU_INTENSIVE: {WorkerType.GPU: 1.0, WorkerType.HYBRID: 0.8},
    TaskClass.MIXED: {WorkerType.GPU: 1.0, WorkerType.HYBRID: 0.9, WorkerType.CPU: 0.3},
    TaskClass.CPU: {WorkerType.CPU: 1.0, WorkerType.HYBRID: 0.5},
    TaskClass.IO: {WorkerType.CPU: 1.0, WorkerType.HYBRID: 0.5},
}


def free_slots(worker: WorkerView, prefetch: int = 0) -> int:
    """Slots a worker can still be handed work for (prefetch lets a queue run slightly ahead)."""
    return max(0, worker.slots + prefetch - worker.in_flight)


def rejection(task: PendingTask, worker: WorkerView, prefetch: int = 0) -> str | None:
    """Why `worker` cannot take `task` now, or None when it can."""
    if not worker.accepting:
        return "not accepting work (draining, unreachable or lost)"
    if worker.worker_type not in _MATCH[task.task_class]:
        return f"a {worker.worker_type.value} worker does not run {task.task_class.value} work"
    if task.gpu is GpuNeed.REQUIRED and not worker.has_gpu:
        return "task requires a GPU and the worker has none"
    for key, value in task.labels:
        if worker.labels.get(key) != value:
            return f"missing label {key}={value}"
    if task.gpu_memory_mb and worker.has_gpu and _pick_gpu(task, worker) is None:
        best = max((g.available_mb for g in worker.gpus), default=0)
        return f"needs {task.gpu_memory_mb} MiB GPU memory on one device, most free is {best} MiB"
    if free_slots(worker, prefetch) <= 0:
        return "no free slot"
    return None


def _pick_gpu(task: PendingTask, worker: WorkerView) -> GpuView | None:
    """Best-fit device for the task's GPU memory: the smallest one that still covers it."""
    fitting = [g for g in worker.gpus if g.available_mb >= task.gpu_memory_mb]
    if not fitting:
        return None
    return min(fitting, key=lambda g: (g.available_mb, g.index))


def score(task: PendingTask, worker: WorkerView, weights: ScoringWeights, prefetch: int = 0) -> float:
    """Score of an eligible worker for a task; higher is better."""
    match = _MATCH[task.task_class].get(worker.worker_type, 0.0)
    if task.task_class is TaskClass.MIXED and not worker.has_gpu:
        match = _MATCH[TaskClass.MIXED][WorkerType.CPU]
    load_share = free_slots(worker, prefetch) / max(1, worker.slots)
    return weights.capability * match + weights.load * load_share


def _signature(task: PendingTask) -> tuple[object, ...]:
    return (task.task_class, task.gpu, task.gpu_memory_mb, task.labels)


def _book(worker: WorkerView, gpu: GpuView | None, memory_mb: int) -> WorkerView:
    """The worker after one more task (and its GPU memory) is booked on it."""
    gpus = worker.gpus
    if gpu is not None and memory_mb:
        gpus = tuple(
            replace(g, reserved_mb=g.reserved_mb + memory_mb) if g.index == gpu.index else g
            for g in worker.gpus
        )
    return replace(worker, in_flight=worker.in_flight + 1, gpus=gpus)


def plan(
    pending_in_order: Iterable[PendingTask],
    workers: Sequence[WorkerView],
    *,
    weights: ScoringWeights | None = None,
    prefetch: int = 0,
    max_examined: int = 10_000,
) -> Plan:
    """Assign pending tasks (given highest priority first) to workers with free slots.

    Stops as soon as no worker has a free slot, so the cost of a round is bounded by the
    free slots and by `max_examined`, not by the length of the backlog.
    """
    weights = weights or ScoringWeights()
    fleet = {w.worker_id: w for w in workers}
    assignments: list[Assignment] = []
    waiting: dict[str, str] = {}
    unplaceable: dict[tuple[object, ...], str] = {}
    examined = 0
    for task in pending_in_order:
        if not any(w.accepting and free_slots(w, prefetch) > 0 for w in fleet.values()):
            break
        examined += 1
        if examined > max_examined:
            break
        sig = _signature(task)
        if sig in unplaceable:
            waiting[task.task_id] = unplaceable[sig]
            continue
        best: WorkerView | None = None
        best_score = float("-inf")
        for worker in fleet.values():
            if rejection(task, worker, prefetch) is not None:
                continue
            value = score(task, worker, weights, prefetch)
            if value > best_score or (value == best_score and best is not None and worker.worker_id < best.worker_id):
                best, best_score = worker, value
        if best is None:
            reason = wait_reason(task, list(fleet.values()), prefetch)
            unplaceable[sig] = reason
            waiting[task.task_id] = reason
            continue
        gpu = _pick_gpu(task, best) if task.gpu_memory_mb and best.has_gpu else None
        fleet[best.worker_id] = _book(best, gpu, task.gpu_memory_mb if gpu else 0)
        assignments.append(
            Assignment(
                task_id=task.task_id,
                worker_id=best.worker_id,
                gpu_index=gpu.index if gpu else None,
                gpu_memory_mb=task.gpu_memory_mb if gpu else 0,
                reason=f"{best.worker_id} ({best.worker_type.value}) scored {best_score:.2f}"
                + (f", GPU {gpu.index} reserved {task.gpu_memory_mb} MiB" if gpu else ""),
            )
        )
    return Plan(assignments=tuple(assignments), waiting=waiting)


def wait_reason(task: PendingTask, workers: Sequence[WorkerView], prefetch: int = 0) -> str:
    """A sentence saying why no worker takes `task` right now."""
    capable = [w for w in workers if w.worker_type in _MATCH[task.task_class]]
    if task.gpu is GpuNeed.REQUIRED:
        capable = [w for w in capable if w.has_gpu]
        if not capable:
            return "waiting for a GPU worker: none is connected"
    if not capable:
        return f"waiting for a worker that runs {task.task_class.value} work: none is connected"
    accepting = [w for w in capable if w.accepting]
    if not accepting:
        return "every capable worker is draining or unreachable"
    for key, value in task.labels:
        accepting = [w for w in accepting if w.labels.get(key) == value]
        if not accepting:
            return f"no capable worker has label {key}={value}"
    if task.gpu_memory_mb:
        roomy = [w for w in accepting if not w.has_gpu or _pick_gpu(task, w) is not None]
        if not roomy:
            return f"waiting for {task.gpu_memory_mb} MiB of free GPU memory on one device"
        accepting = roomy
    if all(free_slots(w, prefetch) <= 0 for w in accepting):
        return f"waiting for a free slot on {len(accepting)} capable worker(s)"
    return "waiting for its turn: higher-priority or older tasks are placed first"
