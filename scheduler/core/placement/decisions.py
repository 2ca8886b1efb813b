"""Placement decisions: which pending task goes to which worker in a round, and why.

`plan` walks pending tasks in effective-priority order (highest first, then first-in first-out)
and gives each the best eligible worker (verdicts.py judges one task against one worker),
booking slots, per-queue counts, per-device GPU memory and rate-limit tokens as the round goes,
so a round never overcommits anything and a more urgent task is never passed over for a worker
that could take it.

`plan` finds each task's worker through the shape index (shapes.py); `run_round` is the round
itself (order, budgets, memo, rate limits) for any picker, and reference.py runs it with the
worker-by-worker scan that the shape index must agree with.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

from scheduler.core.model import Assignment, PendingTask, Plan, WorkerView
from scheduler.core.placement.filters import memo_key
from scheduler.core.placement.policy import PlacementContext
from scheduler.core.placement.rounds import Choice, Picker
from scheduler.core.placement.shapes import ShapeIndex, ShapeVerdicts
from scheduler.core.ratelimit import RateLimit


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
    verdicts: ShapeVerdicts | None = None,
) -> Plan:
    """Assign pending tasks (given highest effective priority first) to workers.

    Each task gets the best eligible worker of the whole fleet (highest score, ties to the smaller
    worker id), found through the shape index (shapes.py) rather than by scoring every worker;
    the choice is the one scoring every worker would make (reference.py, property-tested).

    Stops as soon as no worker has a free slot, so the cost of a round is bounded by the free
    slots, `max_assignments` and `max_examined` (tasks actually evaluated; tasks skipped because
    an identical task already found no worker cost a dict lookup and do not count), not by the
    length of the backlog. `rate_tokens` holds the hand-outs each rate limit (by pattern) still
    allows this round. Plan.more is True when the round stopped early with work left.
    `verdicts`, kept by the caller from round to round, spares judging each kind of task against
    each shape of worker again in every round (shapes.ShapeVerdicts).
    """
    ctx = ctx or PlacementContext(prefetch=prefetch)
    index = ShapeIndex(workers, ctx, verdicts.for_round(ctx) if verdicts is not None else None)
    return run_round(pending_in_order, index, ctx, rate_tokens=rate_tokens,
                     max_examined=max_examined, max_assignments=max_assignments)


def run_round(pending_in_order: Iterable[PendingTask], picker: Picker, ctx: PlacementContext, *,
              rate_tokens: Mapping[str, int] | None, max_examined: int, max_assignments: int) -> Plan:
    """One round of `plan` with the given picker: priority order, budgets, memo, rate limits."""
    tokens = dict(rate_tokens or {})
    assignments: list[Assignment] = []
    waiting: dict[str, str] = {}
    unplaceable: dict[tuple[Hashable, ...], str] = {}
    examined = 0
    more = False
    for task in pending_in_order:
        if not picker.has_open():
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
        best = picker.best(task, key, examined)
        if best is None:
            reason = picker.wait_reason(task)
            unplaceable[key] = reason
            waiting[task.task_id] = reason
            continue
        if limit is not None:
            tokens[limit.pattern] = tokens.get(limit.pattern, limit.burst) - 1
        picker.book(task, best)
        assignments.append(_assignment(task, best))
    return Plan(assignments=tuple(assignments), waiting=waiting, more=more)


def _assignment(task: PendingTask, best: Choice) -> Assignment:
    served = "" if best.served_queue == task.queue else f", served as {best.served_queue} (fallback)"
    gpu = "" if best.gpu_index is None else f", GPU {best.gpu_index} reserved {task.gpu_memory_mb} MiB"
    return Assignment(
        task_id=task.task_id,
        worker_id=best.worker_id,
        gpu_index=best.gpu_index,
        reason=f"{best.worker_id} ({best.worker_type.value}) scored {best.score:.2f}{served}{gpu}",
        served_queue=best.served_queue,
    )
