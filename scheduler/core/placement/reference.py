"""The reference placement: every task judged and scored against worker after worker.

This is how `plan` chose workers before the shape index (shapes.py), kept as its specification:
the exactness property test (tests/unit/test_core_placement_exact.py) checks, on random fleets,
tasks and contexts, that `plan` and `plan_reference` with `max_scored_workers=0` return the same
Plan (the same worker and device for every task, the same reasons, waits and `more`).

"Exact" means equal to this scan when it scores every eligible worker. With
`max_scored_workers` > 0 the scan stops after that many eligible workers, starting each task at
a different worker, and takes the best of those; that bound only ever existed to cap the cost of
scoring worker by worker, and `plan` has no need of it: it always finds the best of the whole
fleet, which is the choice the bounded scan makes whenever the bound is not hit. Not used by the
scheduler itself.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import replace

from scheduler.core.model import PendingTask, Plan, WorkerView
from scheduler.core.placement.decisions import run_round
from scheduler.core.placement.filters import Trial, judge
from scheduler.core.placement.policy import PlacementContext
from scheduler.core.placement.rounds import Choice
from scheduler.core.placement.verdicts import Verdict, eligible, score_of, wait_reason


class ScanPicker:
    """Picks by judging and scoring the workers with a free slot one by one (see the module)."""

    def __init__(self, workers: Sequence[WorkerView], ctx: PlacementContext) -> None:
        self.ctx = ctx
        self.fleet = {w.worker_id: w for w in workers}
        # Only workers with a free slot can take anything; full ones are skipped without evaluation.
        self.open_ids = [w.worker_id for w in workers if w.accepting and w.free_slots(ctx.prefetch) > 0]

    def has_open(self) -> bool:
        """Whether some accepting worker still has a free slot."""
        return bool(self.open_ids)

    def best(self, task: PendingTask, key: tuple[Hashable, ...], turn: int) -> Choice | None:
        """Highest-scoring eligible worker (ties to the smaller id), looking no further once
        `max_scored_workers` eligible ones were scored; each task starts its scan at a different
        worker (by `turn`) so bounded scoring still spreads work."""
        start = turn % len(self.open_ids)
        ids = self.open_ids[start:] + self.open_ids[:start]
        limit_scored = self.ctx.policy.max_scored_workers
        best: Verdict | None = None
        scored = 0
        for worker in (self.fleet[w] for w in ids):
            trial = Trial(task, worker, self.ctx)
            if judge(trial) is not None:
                continue
            scored += 1
            score, terms, gpu = score_of(trial)
            if best is None or score > best.score or (score == best.score and worker.worker_id < best.worker_id):
                best = eligible(trial, score, terms, gpu)
            if limit_scored and scored >= limit_scored:
                break
        if best is None:
            return None
        return Choice(best.worker_id, self.fleet[best.worker_id].worker_type, best.score, best.served_queue,
                      best.gpu.index if best.gpu is not None else None)

    def book(self, task: PendingTask, choice: Choice) -> None:
        """The worker after one more task (its queue count and GPU memory) is booked on it."""
        worker = self.fleet[choice.worker_id]
        gpus = worker.gpus
        if choice.gpu_index is not None and task.gpu_memory_mb:
            gpus = tuple(
                replace(g, reserved_mb=g.reserved_mb + task.gpu_memory_mb) if g.index == choice.gpu_index else g
                for g in worker.gpus
            )
        by_queue = dict(worker.in_flight_by_queue)
        by_queue[choice.served_queue] = by_queue.get(choice.served_queue, 0) + 1
        booked = replace(worker, in_flight=worker.in_flight + 1, gpus=gpus, in_flight_by_queue=by_queue)
        self.fleet[choice.worker_id] = booked
        if booked.free_slots(self.ctx.prefetch) <= 0:
            self.open_ids.remove(choice.worker_id)

    def wait_reason(self, task: PendingTask) -> str:
        """`wait_reason` over every worker after the round's bookings so far."""
        return wait_reason(task, list(self.fleet.values()), ctx=self.ctx)


def plan_reference(
    pending_in_order: Iterable[PendingTask],
    workers: Sequence[WorkerView],
    *,
    ctx: PlacementContext | None = None,
    prefetch: int = 0,
    rate_tokens: Mapping[str, int] | None = None,
    max_examined: int = 10_000,
    max_assignments: int = 512,
) -> Plan:
    """`plan`, choosing by the worker-by-worker scan (honouring `max_scored_workers`)."""
    ctx = ctx or PlacementContext(prefetch=prefetch)
    return run_round(pending_in_order, ScanPicker(workers, ctx), ctx, rate_tokens=rate_tokens,
                     max_examined=max_examined, max_assignments=max_assignments)
