"""Verdicts: one task judged against one worker, and what that says about the whole fleet.

`evaluate` judges one task against one worker: the first filter that rejects it (filters.py), or
its score broken down by criterion (scoring.py). `explain` is `evaluate` over the whole fleet,
for the ExplainPlacement RPC; `wait_reason` says in one sentence why no worker takes a task now.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import overload

from scheduler.core.model import GpuNeed, GpuView, PendingTask, WorkerView
from scheduler.core.placement.filters import FILTERS, Trial, judge
from scheduler.core.placement.policy import PlacementContext
from scheduler.core.placement.scoring import Term, pick_gpu, score_terms, total_score


@dataclass(frozen=True)
class Verdict:
    """One worker judged for one task."""

    worker_id: str
    rejected_by: str
    """First filter that rejected the worker; "" when eligible."""
    reason: str
    score: float = 0.0
    terms: tuple[Term, ...] = ()
    """(criterion, value 0-1, weight); penalties count against the score."""
    served_queue: str = ""
    """Queue the task would be served under (its own, or one reached by fallback)."""
    gpu: GpuView | None = None
    """Device its GPU memory would be reserved on."""

    @property
    def eligible(self) -> bool:
        """Whether the worker passed every filter."""
        return not self.rejected_by


def evaluate(task: PendingTask, worker: WorkerView, ctx: PlacementContext) -> Verdict:
    """Filters in order, then the score breakdown."""
    trial = Trial(task, worker, ctx)
    rejected = judge(trial)
    if rejected is not None:
        return Verdict(worker.worker_id, rejected[0], rejected[1])
    return eligible(trial, *score_of(trial))


def score_of(trial: Trial) -> tuple[float, tuple[Term, ...], GpuView | None]:
    """Score and breakdown of a worker that passed every filter, and the device it would use."""
    task, worker, ctx = trial.task, trial.worker, trial.ctx
    gpu = pick_gpu(task.gpu_memory_mb, worker, ctx.policy.strategy) if task.gpu_memory_mb and worker.has_gpu else None
    terms = score_terms(task, ctx.class_in(trial.queues[0], task), worker, gpu, ctx.policy)
    return total_score(terms), terms, gpu


def eligible(trial: Trial, score: float, terms: tuple[Term, ...], gpu: GpuView | None) -> Verdict:
    """The verdict of a worker that passed every filter, with its score breakdown."""
    return Verdict(trial.worker.worker_id, "", "eligible", score, terms, trial.queues[0], gpu)


def rejection(task: PendingTask, worker: WorkerView, prefetch: int = 0,
              ctx: PlacementContext | None = None) -> str | None:
    """Why `worker` cannot take `task` now, or None when it can."""
    ctx = ctx or PlacementContext(prefetch=prefetch, now=task.submitted_at)
    verdict = evaluate(task, worker, ctx)
    return None if verdict.eligible else verdict.reason


def explain(task: PendingTask, workers: Sequence[WorkerView], ctx: PlacementContext) -> tuple[list[Verdict], Verdict | None]:
    """Every worker's verdict for the task, and the one placement would choose now."""
    verdicts = sorted((evaluate(task, w, ctx) for w in workers), key=lambda v: (not v.eligible, -v.score, v.worker_id))
    chosen = verdicts[0] if verdicts and verdicts[0].eligible else None
    return verdicts, chosen


def wait_reason(task: PendingTask, workers: Sequence[WorkerView], prefetch: int = 0,
                ctx: PlacementContext | None = None) -> str:
    """A sentence saying why no worker takes `task` right now."""
    ctx = ctx or PlacementContext(prefetch=prefetch, now=task.submitted_at)
    return wait_sentence(task, workers, ctx, lambda worker: evaluate(task, worker, ctx).rejected_by)


def wait_sentence(task: PendingTask, workers: Sequence[WorkerView], ctx: PlacementContext,
                  rejected_by: Callable[[WorkerView], str]) -> str:
    """`wait_reason`, given what `evaluate(task, worker, ctx).rejected_by` says for each worker."""
    if task.gpu is GpuNeed.REQUIRED and not any(w.has_gpu for w in workers):
        return "waiting for a GPU worker: none is connected"
    if not workers:
        return "waiting for a worker: none is connected"
    rejected: dict[str, list[WorkerView]] = {}
    for worker in workers:
        rejected.setdefault(rejected_by(worker), []).append(worker)
    if "" in rejected:
        return "waiting for its turn: higher-priority or older tasks are placed first"
    # The most hopeful rejection says best what the task waits for.
    nearest = min((f for f in FILTERS if f.name in rejected), key=lambda f: f.hope)
    return nearest.waiting(task, _Reasons(task, rejected[nearest.name], ctx))


def rejected_by_shape(task: PendingTask, ctx: PlacementContext) -> Callable[[WorkerView], str]:
    """`evaluate(task, worker, ctx).rejected_by`, worked out once per kind of worker.

    Which filter rejects a worker first depends only on what the filters read of it (filters.py):
    its shape, whether it may run the task's name, which per-queue limits it has reached, and
    whether it has a free slot and a device with room for the task's GPU memory; workers alike
    in all of these share the answer.
    """
    keys = tuple(k for k, _ in task.labels)
    limits = tuple((q, spec.max_tasks_per_worker) for q, spec in ctx.queues.items() if spec.max_tasks_per_worker)
    memory, prefetch, task_name = task.gpu_memory_mb, ctx.prefetch, task.task_name
    seen: dict[Hashable, str] = {}

    def rejected_by(worker: WorkerView) -> str:
        labels, counts, gpus = worker.labels, worker.in_flight_by_queue, worker.gpus
        key = (worker.accepting, worker.quarantined, worker.may_run(task_name), worker.worker_type, bool(gpus),
               tuple([labels.get(k) for k in keys]), tuple([counts.get(q, 0) >= n for q, n in limits]),
               worker.slots + prefetch - worker.in_flight > 0,
               not memory or max((g.available_mb for g in gpus), default=0) >= memory)
        name = seen.get(key)
        if name is None:
            name = seen[key] = evaluate(task, worker, ctx).rejected_by
        return name

    return rejected_by


class _Reasons(Sequence[str]):
    """The rejection reasons of these workers, each worked out when a wait sentence reads it."""

    def __init__(self, task: PendingTask, workers: list[WorkerView], ctx: PlacementContext) -> None:
        self._task, self._workers, self._ctx = task, workers, ctx
        self._reasons: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._workers)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # IndexError and negative indices as a list has them
        reason = self._reasons.get(index)
        if reason is None:
            reason = self._reasons[index] = evaluate(self._task, self._workers[index], self._ctx).reason
        return reason
