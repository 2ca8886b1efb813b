"""Placement decisions: which pending task goes to which worker, and why.

`evaluate` judges one task against one worker: the first filter that rejects it (filters.py), or
its score broken down by criterion (scoring.py). `plan` walks pending tasks in effective-priority
order (highest first, then first-in first-out) and gives each the best eligible worker, booking
slots, per-queue counts, per-device GPU memory and rate-limit tokens as the round goes, so a
round never overcommits anything and a more urgent task is never passed over for a worker that
could take it. `explain` is `evaluate` over the whole fleet, for the ExplainPlacement RPC;
`wait_reason` says in one sentence why no worker takes a task now.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from scheduler.core.model import Assignment, GpuNeed, GpuView, PendingTask, Plan, WorkerView
from scheduler.core.placement.filters import FILTERS, Trial, judge, memo_key
from scheduler.core.placement.policy import PlacementContext
from scheduler.core.placement.scoring import Term, pick_gpu, score_terms, total_score
from scheduler.core.ratelimit import RateLimit


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
    return _eligible(trial, *_score(trial))


def _score(trial: Trial) -> tuple[float, tuple[Term, ...], GpuView | None]:
    """Score and breakdown of a worker that passed every filter, and the device it would use."""
    task, worker, ctx = trial.task, trial.worker, trial.ctx
    gpu = pick_gpu(task.gpu_memory_mb, worker, ctx.policy.strategy) if task.gpu_memory_mb and worker.has_gpu else None
    terms = score_terms(task, ctx.class_in(trial.queues[0], task), worker, gpu, ctx.policy)
    return total_score(terms), terms, gpu


def _eligible(trial: Trial, score: float, terms: tuple[Term, ...], gpu: GpuView | None) -> Verdict:
    return Verdict(trial.worker.worker_id, "", "eligible", score, terms, trial.queues[0], gpu)


def rejection(task: PendingTask, worker: WorkerView, prefetch: int = 0,
              ctx: PlacementContext | None = None) -> str | None:
    """Why `worker` cannot take `task` now, or None when it can."""
    ctx = ctx or PlacementContext(prefetch=prefetch, now=task.submitted_at)
    verdict = evaluate(task, worker, ctx)
    return None if verdict.eligible else verdict.reason


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


def _best(task: PendingTask, candidates: Iterable[WorkerView], ctx: PlacementContext) -> Verdict | None:
    """Highest-scoring eligible worker (ties to the smaller id), looking no further once
    `max_scored_workers` eligible ones were scored."""
    limit_scored = ctx.policy.max_scored_workers
    best: Verdict | None = None
    scored = 0
    for worker in candidates:
        trial = Trial(task, worker, ctx)
        if judge(trial) is not None:
            continue
        scored += 1
        score, terms, gpu = _score(trial)
        # A Verdict is built only for a new best: most scored workers are not one.
        if best is None or score > best.score or (score == best.score and worker.worker_id < best.worker_id):
            best = _eligible(trial, score, terms, gpu)
        if limit_scored and scored >= limit_scored:
            break
    return best


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
    unplaceable: dict[tuple[Hashable, ...], str] = {}
    # Only workers with a free slot can take anything; full ones are skipped without evaluation.
    open_ids = [w.worker_id for w in workers if w.accepting and w.free_slots(ctx.prefetch) > 0]
    examined = 0
    more = False
    for task in pending_in_order:
        if not open_ids:
            break
        if len(assignments) >= max_assignments or examined >= max_examined:
            more = True
            break
        limit = _rate_limit(task, ctx) if ctx.rate_limits else None
        if limit is not None and tokens.get(limit.pattern, limit.burst) <= 0:
            waiting[task.task_id] = f"rate limited: {limit.pattern} at {limit.per_second * 60:g}/min"
            continue
        key = memo_key(task, ctx)
        if key in unplaceable:
            waiting[task.task_id] = unplaceable[key]
            continue
        examined += 1
        # Start each task's scan at a different worker so bounded scoring still spreads work.
        start = examined % len(open_ids)
        best = _best(task, (fleet[w] for w in open_ids[start:] + open_ids[:start]), ctx)
        if best is None:
            reason = wait_reason(task, list(fleet.values()), ctx=ctx)
            unplaceable[key] = reason
            waiting[task.task_id] = reason
            continue
        if limit is not None:
            tokens[limit.pattern] = tokens.get(limit.pattern, limit.burst) - 1
        reserved = task.gpu_memory_mb if best.gpu is not None else 0
        fleet[best.worker_id] = _book(fleet[best.worker_id], best, reserved)
        chosen = fleet[best.worker_id]
        if chosen.free_slots(ctx.prefetch) <= 0:
            open_ids.remove(chosen.worker_id)
        served = "" if best.served_queue == task.queue else f", served as {best.served_queue} (fallback)"
        assignments.append(
            Assignment(
                task_id=task.task_id,
                worker_id=best.worker_id,
                gpu_index=best.gpu.index if best.gpu is not None else None,
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
    reasons_by_filter: dict[str, list[str]] = {}
    for verdict in verdicts:
        reasons_by_filter.setdefault(verdict.rejected_by, []).append(verdict.reason)
    # The most hopeful rejection says best what the task waits for.
    nearest = min((f for f in FILTERS if f.name in reasons_by_filter), key=lambda f: f.hope)
    return nearest.waiting(task, reasons_by_filter[nearest.name])
