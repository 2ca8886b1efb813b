"""Scoring: how well an eligible worker suits a task, term by term, and which GPU it would use.

Every term is a value in 0-1 times its configured weight (`ScoringWeights`); the highest total
wins. `PENALTIES` are subtracted instead of added. The breakdown is kept, so ExplainPlacement
shows exactly what decided.
"""

from __future__ import annotations

from scheduler.core.model import GpuView, PendingTask, TaskClass, WorkerType, WorkerView
from scheduler.core.placement.policy import PlacementPolicy, Strategy

CLASS_FIT: dict[TaskClass, dict[WorkerType, float]] = {
    TaskClass.GPU_INTENSIVE: {WorkerType.GPU: 1.0, WorkerType.HYBRID: 0.8},
    TaskClass.MIXED: {WorkerType.GPU: 1.0, WorkerType.HYBRID: 0.9, WorkerType.CPU: 0.3},
    TaskClass.CPU: {WorkerType.CPU: 1.0, WorkerType.HYBRID: 0.5},
    TaskClass.IO: {WorkerType.CPU: 1.0, WorkerType.HYBRID: 0.5},
}
"""How well a worker type fits a class of work; a type missing for a class cannot run it.
Keeps GPU workers for GPU work and hybrid workers as the second choice for everything."""

MIXED_ON_CPU = 0.3
"""Fit of GPU-preferred work on a worker without a usable GPU, whatever its type."""

PENALTIES = frozenset({"failures"})
"""Terms that count against the score."""

Term = tuple[str, float, float]
"""(criterion, value 0-1, weight)."""


def pick_gpu(memory_mb: int, worker: WorkerView, strategy: Strategy) -> GpuView | None:
    """Device for the task's GPU memory: best fit (binpack) or most room (spread); None when none fits."""
    fitting = [g for g in worker.gpus if g.available_mb >= memory_mb]
    if not fitting:
        return None
    if strategy is Strategy.BINPACK:
        return min(fitting, key=lambda g: (g.available_mb, g.index))
    return max(fitting, key=lambda g: (g.available_mb, -g.index))


def score_terms(task: PendingTask, task_class: TaskClass, worker: WorkerView, gpu: GpuView | None,
                policy: PlacementPolicy) -> tuple[Term, ...]:
    """The score breakdown of an eligible worker for a task served as `task_class` on device `gpu`."""
    weights = policy.weights
    binpack = policy.strategy is Strategy.BINPACK
    share_free = worker.free_slots() / max(1, worker.slots)
    load = 1.0 - share_free if binpack else share_free
    uses_gpu = worker.has_gpu and task_class in (TaskClass.GPU_INTENSIVE, TaskClass.MIXED)
    gpu_idle = 0.0
    if uses_gpu and worker.gpus:
        gpu_idle = 1.0 - sum(g.utilization_percent for g in worker.gpus) / (100.0 * len(worker.gpus))
    headroom = 0.0
    if gpu is not None and gpu.memory_total_mb:
        left = (gpu.available_mb - task.gpu_memory_mb) / gpu.memory_total_mb
        headroom = 1.0 - left if binpack else left
    match = CLASS_FIT[task_class].get(worker.worker_type, 0.0)
    if task_class is TaskClass.MIXED and not worker.has_gpu:
        match = MIXED_ON_CPU
    affinity = 0.0
    if task.preferred_labels:
        hits = sum(worker.labels.get(k) == v for k, v in task.preferred_labels)
        affinity = hits / len(task.preferred_labels)
    failures = min(1.0, worker.recent_failures / max(1, policy.quarantine_failures or 5))
    return (
        ("load", round(load, 4), weights.load),
        ("gpu_utilization", round(max(0.0, gpu_idle), 4), weights.gpu_utilization),
        ("memory_headroom", round(max(0.0, headroom), 4), weights.memory_headroom),
        ("capability", match, weights.capability),
        ("affinity", round(affinity, 4), weights.affinity),
        ("failures", round(failures, 4), weights.failures),
    )


def total_score(terms: tuple[Term, ...]) -> float:
    """Sum of value x weight over the terms, penalties subtracted."""
    return sum(-value * weight if name in PENALTIES else value * weight for name, value, weight in terms)
