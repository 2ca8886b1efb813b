"""Scoring: how well an eligible worker suits a task, term by term, and which GPU it would use.

Every term is a value in 0-1 times its configured weight (`ScoringWeights`); the highest total
wins. `PENALTIES` are subtracted instead of added. The breakdown is kept, so ExplainPlacement
shows exactly what decided.

Each weighted term is counted in fixed-point units of `1 / SCORE_SCALE` (`term_units`), and the
total is their integer sum. Integers add exactly in any order, so placement's shape index
(shapes.py) can add a task's part of the score (capability, affinity) to a worker's part (load,
GPU idle, memory headroom, failures) and get the very total `evaluate` reports, and compare it
without rounding surprises. The value helpers below are the only place each term is computed;
`score_terms` and the shape index both call them.
"""

from __future__ import annotations

from collections.abc import Mapping

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

SCORE_SCALE = 1_000_000_000
"""Fixed-point units per score point: weighted terms are summed as integers of 1e-9."""

GPU_CLASSES = frozenset({TaskClass.GPU_INTENSIVE, TaskClass.MIXED})
"""Classes of work whose score counts the worker's idle GPU share."""

Term = tuple[str, float, float]

_BINPACK = Strategy.BINPACK  # looked up once: an enum member read through its class is slow
"""(criterion, value 0-1, weight)."""


def pick_gpu(memory_mb: int, worker: WorkerView, strategy: Strategy) -> GpuView | None:
    """Device for the task's GPU memory: best fit (binpack) or most room (spread); None when none fits."""
    return pick_device(memory_mb, worker.gpus, strategy)


def pick_device(memory_mb: int, gpus: tuple[GpuView, ...], strategy: Strategy) -> GpuView | None:
    """`pick_gpu` over the given devices."""
    fitting = [g for g in gpus if g.available_mb >= memory_mb]
    if not fitting:
        return None
    if strategy is _BINPACK:
        return min(fitting, key=lambda g: (g.available_mb, g.index))
    return max(fitting, key=lambda g: (g.available_mb, -g.index))


def load_value(slots: int, in_flight: int, binpack: bool) -> float:
    """Free-slot share (spread) or used-slot share (binpack), ignoring prefetch."""
    share_free = max(0, slots - in_flight) / max(1, slots)
    return round(1.0 - share_free if binpack else share_free, 4)


def gpu_idle_value(worker: WorkerView) -> float:
    """Idle share of the worker's GPUs (0 without any); counts only for GPU_CLASSES work."""
    if not worker.gpus:
        return 0.0
    idle = 1.0 - sum(g.utilization_percent for g in worker.gpus) / (100.0 * len(worker.gpus))
    return round(max(0.0, idle), 4)


def headroom_value(gpu: GpuView | None, memory_mb: int, binpack: bool) -> float:
    """Memory left on the chosen device after the task (spread), or used (binpack); 0 without a device."""
    if gpu is None:
        return 0.0
    return headroom_share(gpu.available_mb, gpu.memory_total_mb, memory_mb, binpack)


def headroom_share(available_mb: int, total_mb: int, memory_mb: int, binpack: bool) -> float:
    """`headroom_value` of a device with this much memory available and in all."""
    if not total_mb:
        return 0.0
    left = (available_mb - memory_mb) / total_mb
    return round(max(0.0, 1.0 - left if binpack else left), 4)


def fit_value(task_class: TaskClass, worker_type: WorkerType, has_gpu: bool) -> float:
    """How well the worker's type suits the class of work (`CLASS_FIT`, `MIXED_ON_CPU`)."""
    if task_class is TaskClass.MIXED and not has_gpu:
        return MIXED_ON_CPU
    return CLASS_FIT[task_class].get(worker_type, 0.0)


def affinity_value(preferred: tuple[tuple[str, str], ...], labels: Mapping[str, str]) -> float:
    """Share of the preferred labels the worker has (0 when none are preferred)."""
    if not preferred:
        return 0.0
    return round(sum(labels.get(k) == v for k, v in preferred) / len(preferred), 4)


def failures_value(recent_failures: int, policy: PlacementPolicy) -> float:
    """Recent failures as a share of the quarantine threshold (a penalty)."""
    return round(min(1.0, recent_failures / max(1, policy.quarantine_failures or 5)), 4)


def term_units(name: str, value: float, weight: float) -> int:
    """One weighted term in fixed-point units; negative for a penalty."""
    units = round(value * weight * SCORE_SCALE)
    return -units if name in PENALTIES else units


def score_terms(task: PendingTask, task_class: TaskClass, worker: WorkerView, gpu: GpuView | None,
                policy: PlacementPolicy) -> tuple[Term, ...]:
    """The score breakdown of an eligible worker for a task served as `task_class` on device `gpu`."""
    weights = policy.weights
    binpack = policy.strategy is Strategy.BINPACK
    has_gpu = worker.has_gpu
    return (
        ("load", load_value(worker.slots, worker.in_flight, binpack), weights.load),
        ("gpu_utilization", gpu_idle_value(worker) if has_gpu and task_class in GPU_CLASSES else 0.0,
         weights.gpu_utilization),
        ("memory_headroom", headroom_value(gpu, task.gpu_memory_mb, binpack), weights.memory_headroom),
        ("capability", fit_value(task_class, worker.worker_type, has_gpu), weights.capability),
        ("affinity", affinity_value(task.preferred_labels, worker.labels), weights.affinity),
        ("failures", failures_value(worker.recent_failures, policy), weights.failures),
    )


def total_units(terms: tuple[Term, ...]) -> int:
    """Sum of the weighted terms in fixed-point units, penalties subtracted."""
    return sum(term_units(name, value, weight) for name, value, weight in terms)


def total_score(terms: tuple[Term, ...]) -> float:
    """Sum of value x weight over the terms, penalties subtracted (to 1e-9)."""
    return total_units(terms) / SCORE_SCALE
