"""Placement: which pending task goes to which worker — filter, then score, and say why.

`evaluate` judges one task against one worker: the first filter that rejects it, or its score
broken down by criterion. `plan` walks pending tasks in effective-priority order (highest
first, then first-in first-out) and gives each the best eligible worker, booking slots,
per-queue counts, per-device GPU memory and rate-limit tokens as the round goes, so a round
never overcommits anything and a more urgent task is never passed over for a worker that
could take it. `explain` is `evaluate` over the whole fleet, for the ExplainPlacement RPC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from scheduler.core.model import (
    Assignment,
    GpuNeed,
    GpuView,
    PendingTask,
    Plan,
    QueueSpec,
    TaskClass,
    WorkerType,
    WorkerView,
)
from scheduler.core.policy import (
    FallbackChain,
    PlacementPolicy,
    RateLimit,
    Strategy,
    fallback_queues,
)

# How well a worker type fits a class of work (capability match). Keeps GPU workers for GPU
# work and hybrid workers as the second choice for everything.
_MATCH: dict[TaskClass, dict[WorkerType, float]] = {
    TaskClass.GPU_INTENSIVE: {WorkerType.GPU: 1.0, WorkerType.HYBRID: 0.8},
    TaskClass.MIXED: {WorkerType.GPU: 1.0, WorkerType.HYBRID: 0.9, WorkerType.CPU: 0.3},
    TaskClass.CPU: {WorkerType.CPU: 1.0, WorkerType.HYBRID: 0.5},
    TaskClass.IO: {WorkerType.CPU: 1.0, WorkerType.HYBRID: 0.5},
}
_MIXED_ON_CPU = 0.3


@dataclass(frozen=True)
class PlacementContext:
    """Everything placement needs besides the task and the workers."""

    policy: PlacementPolicy = field(default_factory=PlacementPolicy)
    prefetch: int = 0
    """Hand-outs allowed beyond free slots."""
    now: float = 0.0
    """Current time (seconds), for waits: fallback and preferred-GPU waits."""
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)
    """Queue specs by name (classes for fallback, per-worker limits)."""
    chains: tuple[FallbackChain, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """One worker judged for one task."""

    worker_id: str
    rejected_by: str
    """First filter that rejected the worker; "" when eligible."""
    reason: str
    score: float = 0.0
    terms: tuple[tuple[str, float, float], ...] = ()
    """(criterion, value 0-1, weight); failures count against the score."""
    served_queue: str = ""
    """Queue the task would be served under (its own, or one reached by fallback)."""
    gpu: GpuView | None = None
    """Device its GPU memory would be reserved on."""

    @property
    def eligible(self) -> bool:
        return not self.rejected_by


def free_slots(worker: WorkerView, prefetch: int = 0) -> int:
    """Slots a worker can still be handed work for (prefetch lets a queue run slightly ahead)."""
    return max(0, worker.slots + prefetch - worker.in_flight)


def _pick_gpu(memory_mb: int, worker: WorkerView, strategy: Strategy) -> GpuView | None:
    """Device for the task's GPU memory: best fit (binpack) or most room (spread)."""
    fitting = [g for g in worker.gpus if g.available_mb >= memory_mb]
    if not fitting:
        return None
    if strategy is Strategy.BINPACK:
        return min(fitting, key=lambda g: (g.available_mb, g.index))
    return max(fitting, key=lambda g: (g.available_mb, -g.index))


def _capable(task: PendingTask, task_class: TaskClass, worker: WorkerView, waited: float,
             policy: PlacementPolicy) -> tuple[str, str] | None:
    """(filter, reason) when the worker cannot run the task as `task_class`, else None."""
    if worker.worker_type not in _MATCH[task_class]:
        return "capability", f"a {worker.worker_type.value} worker does not run {task_class.value} work"
    if task.gpu is GpuNeed.REQUIRED and not worker.has_gpu:
        return "capability", "task requires a GPU and the worker has none"
    if task_class is TaskClass.MIXED and not worker.has_gpu and waited < policy.preferred_gpu_wait_seconds:
        return ("fallback_wait", f"GPU preferred: CPU workers only after waiting "
                f"{policy.preferred_gpu_wait_seconds:g}s (waited {max(0.0, waited):.1f}s)")
    return None


def _candidate_queues(task: PendingTask, ctx: PlacementContext) -> tuple[str, ...]:
    return fallback_queues(ctx.chains, task.queue, ctx.now - task.submitted_at) if ctx.chains else (task.queue,)


def _class_in(queue: str, task: PendingTask, ctx: PlacementContext) -> TaskClass:
    spec = ctx.queues.get(queue)
    return task.task_class if queue == task.queue or spec is None else spec.task_class


def evaluate(task: PendingTask, worker: WorkerView, ctx: PlacementContext) -> Verdict:
    """Filters in order, then the score breakdown."""
    wid = worker.worker_id
    if not worker.accepting:
        return Verdict(wid, "draining", "not accepting work (draining, unreachable or lost)")
    if worker.quarantined:
        return Verdict(wid, "quarantine",
                       f"quarantined after {worker.recent_failures} recent failure(s)")
    waited = ctx.now - task.submitted_at
    capable_queues: list[str] = []
    first_rejection: tuple[str, str] | None = None
    for queue in _candidate_queues(task, ctx):
        rejected = _capable(task, _class_in(queue, task, ctx), worker, waited, ctx.policy)
        if rejected is None:
            capable_queues.append(queue)
        else:
            first_rejection = first_rejection or rejected
    if not capable_queues:
        assert first_rejection is not None
        return Verdict(wid, first_rejection[0], first_rejection[1])
    for key, value in task.labels:
        if worker.labels.get(key) != value:
            return Verdict(wid, "labels", f"missing label {key}={value}")
    gpu: GpuView | None = None
    if task.gpu_memory_mb and worker.has_gpu:
        gpu = _pick_gpu(task.gpu_memory_mb, worker, ctx.policy.strategy)
        if gpu is None:
            best = max((g.available_mb for g in worker.gpus), default=0)
            return Verdict(wid, "gpu_memory",
                           f"needs {task.gpu_memory_mb} MiB GPU memory on one device, most free is {best} MiB")
    if free_slots(worker, ctx.prefetch) <= 0:
        return Verdict(wid, "slots", f"no free slot ({worker.in_flight}/{worker.slots} busy)")
    # The task counts against the first queue (its own, then fallbacks) still under its per-worker limit.
    served = ""
    for queue in capable_queues:
        spec = ctx.queues.get(queue)
        if spec is None or not spec.max_tasks_per_worker or (
            worker.in_flight_by_queue.get(queue, 0) < spec.max_tasks_per_worker
        ):
            served = queue
            break
    if not served:
        running = worker.in_flight_by_queue.get(capable_queues[0], 0)
        return Verdict(wid, "queue_limit",
                       f"already runs {running} {capable_queues[0]} task(s), the queue's limit per worker")
    terms = _terms(task, _class_in(served, task, ctx), worker, gpu, ctx.policy)
    score = sum(-v * w if name == "failures" else v * w for name, v, w in terms)
    return Verdict(wid, "", "eligible", score, terms, served, gpu)


def _terms(task: PendingTask, task_class: TaskClass, worker: WorkerView, gpu: GpuView | None,
           policy: PlacementPolicy) -> tuple[tuple[str, float, float], ...]:
    weights = policy.weights
    binpack = policy.strategy is Strategy.BINPACK
    share_free = free_slots(worker) / max(1, worker.slots)
    load = 1.0 - share_free if binpack else share_free
    uses_gpu = worker.has_gpu and task_class in (TaskClass.GPU_INTENSIVE, TaskClass.MIXED)
    gpu_idle = 0.0
    if uses_gpu and worker.gpus:
        gpu_idle = 1.0 - sum(g.utilization_percent for g in worker.gpus) / (100.0 * len(worker.gpus))
    headroom = 0.0
    if gpu is not None and gpu.memory_total_mb:
        left = (gpu.available_mb - task.gpu_memory_mb) / gpu.memory_total_mb
        headroom = 1.0 - left if binpack else left
    match = _MATCH[task_class].get(worker.worker_type, 0.0)
    if task_class is TaskClass.MIXED and not worker.has_gpu:
        match = _MIXED_ON_CPU
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


def rejection(task: PendingTask, worker: WorkerView, prefetch: int = 0,
              ctx: PlacementContext | None = None) -> str | None:
    """Why `worker` cannot take `task` now, or None when it can."""
    ctx = ctx or PlacementContext(prefetch=prefetch, now=task.submitted_at)
    verdict = evaluate(task, worker, ctx)
    return None if verdict.eligible else verdict.reason


def _signature(task: PendingTask, ctx: PlacementContext) -> tuple[object, ...]:
    waited = ctx.now - task.submitted_at
    return (task.task_class, task.gpu, task.gpu_memory_mb, task.labels, _candidate_queues(task, ctx),
            task.task_class is TaskClass.MIXED and waited >= ctx.policy.preferred_gpu_wait_seconds)


def _book(worker: WorkerView, verdict: Verdict, memory_mb: int) -> WorkerView:
    """The worker after one more task (its queue count and GPU memory) is booked on it."""
    gpus = worker.gpus
    if verdict.gpu is not None and memory_mb:
        gpus = tuple(
            replace(g, reserved_mb=g.reserved_mb + memory_mb) if g.index == verdict.gpu.index else g
            for g in worker.gpus
        )
    by_queue = dict(worker.in_flight_by_queue)
    by_queue[verdict.served_queue] = by_queue.get(verdict.served_queue, 0) + 1
    return replace(worker, in_flight=worker.in_flight + 1, gpus=gpus, in_flight_by_queue=by_queue)


def _rate_limit(task: PendingTask, ctx: PlacementContext) -> RateLimit | None:
    for limit in ctx.rate_limits:
        if limit.matches(task.task_name):
            return limit
    return None


def plan(
    pending_in_order: Iterable[PendingTask],
    workers: Sequence[WorkerView],
    *,
    ctx: PlacementContext | None = None,
    prefetch: int = 0,
    rate_tokens: Mapping[str, int] | None = None,
    max_examined: int = 10_000,
    max_assignments: int = 512,
) -> Plan:
    """Assign pending tasks (given highest effective priority first) to workers.

    Stops as soon as no worker has a free slot, so the cost of a round is bounded by the free
    slots, `max_assignments` and `max_examined` (tasks actually evaluated; tasks skipped because
    an identical task already found no worker cost a dict lookup and do not count), not by the
    length of the backlog. `rate_tokens` holds the hand-outs each rate limit (by pattern) still
    allows this round. Plan.more is True when the round stopped early with work left.
    """
    ctx = ctx or PlacementContext(prefetch=prefetch)
    fleet = {w.worker_id: w for w in workers}
    tokens = dict(rate_tokens or {})
    assignments: list[Assignment] = []
    waiting: dict[str, str] = {}
    unplaceable: dict[tuple[object, ...], str] = {}
    # Only workers with a free slot can take anything; full ones are skipped without evaluation.
    open_ids = [w.worker_id for w in workers if w.accepting and free_slots(w, ctx.prefetch) > 0]
    limit_scored = ctx.policy.max_scored_workers
    examined = 0
    more = False
    for task in pending_in_order:
        if not open_ids:
            break
        if len(assignments) >= max_assignments or examined >= max_examined:
            more = True
            break
        limit = _rate_limit(task, ctx)
        if limit is not None and tokens.get(limit.pattern, limit.burst) <= 0:
            waiting[task.task_id] = f"rate limited: {limit.pattern} at {limit.per_second * 60:g}/min"
            continue
        sig = _signature(task, ctx)
        if sig in unplaceable:
            waiting[task.task_id] = unplaceable[sig]
            continue
        examined += 1
        best: Verdict | None = None
        scored = 0
        # Start each task's scan at a different worker so bounded scoring still spreads work.
        start = examined % len(open_ids)
        for worker_id in open_ids[start:] + open_ids[:start]:
            verdict = evaluate(task, fleet[worker_id], ctx)
            if not verdict.eligible:
                continue
            scored += 1
            if best is None or verdict.score > best.score or (
                verdict.score == best.score and verdict.worker_id < best.worker_id
            ):
                best = verdict
            if limit_scored and scored >= limit_scored:
                break
        if best is None:
            reason = wait_reason(task, list(fleet.values()), ctx=ctx)
            unplaceable[sig] = reason
            waiting[task.task_id] = reason
            continue
        if limit is not None:
            tokens[limit.pattern] = tokens.get(limit.pattern, limit.burst) - 1
        reserved = task.gpu_memory_mb if best.gpu is not None else 0
        fleet[best.worker_id] = _book(fleet[best.worker_id], best, reserved)
        chosen = fleet[best.worker_id]
        if free_slots(chosen, ctx.prefetch) <= 0:
            open_ids.remove(chosen.worker_id)
        served = "" if best.served_queue == task.queue else f", served as {best.served_queue} (fallback)"
        assignments.append(
            Assignment(
                task_id=task.task_id,
                worker_id=best.worker_id,
                gpu_index=best.gpu.index if best.gpu is not None else None,
                gpu_memory_mb=reserved,
                reason=f"{best.worker_id} ({chosen.worker_type.value}) scored {best.score:.2f}{served}"
                + (f", GPU {best.gpu.index} reserved {reserved} MiB" if best.gpu is not None else ""),
                served_queue=best.served_queue,
            )
        )
    return Plan(assignments=tuple(assignments), waiting=waiting, more=more)


def explain(task: PendingTask, workers: Sequence[WorkerView], ctx: PlacementContext) -> tuple[list[Verdict], Verdict | None]:
    """Every worker's verdict for the task, and the one placement would choose now."""
    verdicts = sorted((evaluate(task, w, ctx) for w in workers), key=lambda v: (not v.eligible, -v.score, v.worker_id))
    chosen = verdicts[0] if verdicts and verdicts[0].eligible else None
    return verdicts, chosen


def wait_reason(task: PendingTask, workers: Sequence[WorkerView], prefetch: int = 0,
                ctx: PlacementContext | None = None) -> str:
    """A sentence saying why no worker takes `task` right now."""
    ctx = ctx or PlacementContext(prefetch=prefetch, now=task.submitted_at)
    if task.gpu is GpuNeed.REQUIRED and not any(w.has_gpu for w in workers):
        return "waiting for a GPU worker: none is connected"
    if not workers:
        return "waiting for a worker: none is connected"
    verdicts = [evaluate(task, w, ctx) for w in workers]
    if any(v.eligible for v in verdicts):
        return "waiting for its turn: higher-priority or older tasks are placed first"
    by_filter: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        by_filter.setdefault(verdict.rejected_by, []).append(verdict)
    # The most "hopeful" rejection says best what the task waits for.
    for name in ("slots", "queue_limit", "gpu_memory", "fallback_wait", "labels", "quarantine", "draining", "capability"):
        group = by_filter.get(name)
        if not group:
            continue
        if name == "slots":
            return f"waiting for a free slot on {len(group)} capable worker(s)"
        if name == "queue_limit":
            return f"waiting: {len(group)} capable worker(s) are at the {task.queue} per-worker limit"
        if name == "capability":
            wanted = "GPU" if task.gpu is GpuNeed.REQUIRED else task.task_class.value
            return f"waiting for a worker that runs {wanted} work: none is connected and accepting"
        return f"waiting: {group[0].reason}"
    return "waiting for a capable worker"
