"""Reads: a task with its live wait reason, WatchTask, queue statistics with alerts, workers,
and ExplainPlacement's dry run. Nothing here changes state."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace

from scheduler.core.classify import classify
from scheduler.core.model import (
    TERMINAL_STATES,
    GpuNeed,
    PendingTask,
    QueueSpec,
    TaskClass,
    TaskState,
)
from scheduler.core.placement import PlacementContext, evaluate, explain, wait_reason
from scheduler.core.validate import TaskInput, validate_input
from scheduler.engine.admission import UNSCHEDULABLE, Admission, submit_limits
from scheduler.engine.shared import Shared
from scheduler.engine.views import Explanation, QueueView, TaskView
from scheduler.errors import InvalidArgument, NotFound
from scheduler.fleet import OperatorStatus, Worker
from scheduler.state.records import TaskRecord

NO_WORKER_WARNING = "tasks are pending and no connected worker can serve this queue"
"""A queue's warning while it has pending tasks and no worker able to serve them."""


def _change_key(view: TaskView) -> tuple[object, ...]:
    """What makes a new version of a task worth telling a watcher about."""
    r = view.record
    return (r.state, r.attempt, r.progress, r.progress_message, r.worker_id)


class Queries:
    """Read-only views over the store and the engine's memory."""

    def __init__(self, shared: Shared, admission: Admission) -> None:
        self.shared = shared
        self._admission = admission
        self.rules = shared.settings.classification_rules()

    async def get_task(self, task_id: str) -> TaskView:
        record = await self.shared.state.tasks.get(task_id) if task_id else None
        if record is None:
            raise NotFound(f"task {task_id!r} does not exist (or its result expired)")
        return self.view_of(record)

    def view_of(self, record: TaskRecord) -> TaskView:
        """The record with its live reason (why a pending task waits) and aged priority."""
        shared = self.shared
        task = shared.pending.get(record.task_id) if record.state is TaskState.PENDING else None
        if task is None:
            return TaskView(record, record.priority)
        now = shared.clock()
        aging = shared.settings.aging
        effective = aging.effective_priority(task.priority, now - task.submitted_at)
        if task.queue in shared.paused:
            reason = f"queue {task.queue} is paused"
        elif task.task_id in shared.rate_limited:
            reason = f"waiting: {shared.rate_limited[task.task_id]}"
        else:
            reason = wait_reason(task, shared.worker_views(now), ctx=shared.placement_context(now))
            ahead = shared.pending.ahead_of(task, aging, now)
            if ahead:
                reason += f" ({ahead} task(s) ahead in {task.queue})"
        if effective > task.priority:
            reason += f"; aged from priority {task.priority} to {effective}"
        return TaskView(replace(record, reason=reason), effective)

    async def watch(self, task_id: str) -> AsyncIterator[TaskView]:
        """The task now, then at every change, ending with its terminal state."""
        watchers = self.shared.watchers.by_task
        updates: asyncio.Queue[TaskRecord] = asyncio.Queue()
        watchers[task_id].add(updates)
        try:
            # Marked before the first read: a claim after the mark announces the start, one
            # before it is in what the read returns.
            await self.shared.state.tasks.watch(task_id)
            current = await self.get_task(task_id)
            yield current
            last = _change_key(current)
            while current.record.state not in TERMINAL_STATES:
                current = self.view_of(await updates.get())
                if _change_key(current) == last:
                    continue
                last = _change_key(current)
                yield current
        finally:
            mine = watchers.get(task_id)
            if mine is not None:
                mine.discard(updates)
                if not mine:
                    del watchers[task_id]

    def processing_by_queue(self) -> dict[str, int]:
        processing: dict[str, int] = defaultdict(int)
        for worker in self.shared.fleet:
            for item in worker.in_flight.values():
                processing[item.queue] += 1
        return processing

    async def list_queues(self) -> list[QueueView]:
        shared = self.shared
        stats = shared.stats.add_unwritten(
            await shared.state.indexes.queue_stats([q.name for q in shared.settings.queues]))
        processing = self.processing_by_queue()
        return [self._queue_view(spec, stats.get(spec.name, {}), processing[spec.name])
                for spec in shared.settings.queues]

    def _queue_view(self, spec: QueueSpec, row: dict[str, float], processing: int) -> QueueView:
        shared = self.shared
        wait_n, run_n = row.get("wait_count", 0), row.get("run_count", 0)
        outcomes = shared.outcomes.get(spec.name)
        error_rate = sum(outcomes) / len(outcomes) if outcomes else 0.0
        depth = shared.pending.depth(spec.name)
        warnings: list[str] = []
        if spec.max_depth and depth > spec.max_depth:
            warnings.append(f"depth {depth} exceeds threshold {spec.max_depth}")
        if spec.max_error_rate and outcomes and error_rate > spec.max_error_rate:
            warnings.append(
                f"error rate {error_rate:.0%} over the last {len(outcomes)} task(s) exceeds "
                f"threshold {spec.max_error_rate:.0%}"
            )
        workers = self._workers_for(spec)
        if depth and not workers:
            warnings.append(NO_WORKER_WARNING)
        now = shared.monotonic()
        wait_p50, wait_p95 = shared.stats.recent.wait_percentiles(spec.name, now)
        submitted_rate, finished_rate = shared.stats.recent.rates(spec.name, now)
        return QueueView(
            spec=spec, pending=depth, processing=processing,
            completed=int(row.get("completed", 0)), failed=int(row.get("failed", 0)),
            cancelled=int(row.get("cancelled", 0)), paused=spec.name in shared.paused,
            mean_wait_seconds=row.get("wait_sum", 0) / wait_n if wait_n else 0.0,
            mean_run_seconds=row.get("run_sum", 0) / run_n if run_n else 0.0,
            workers=workers,
            retrying=sum(1 for q in shared.retrying.values() if q == spec.name),
            dead_lettered=sum(1 for q in shared.dead.values() if q == spec.name),
            error_rate=error_rate,
            warnings=tuple(warnings),
            wait_p50_seconds=wait_p50,
            wait_p95_seconds=wait_p95,
            submitted_per_second=submitted_rate,
            finished_per_second=finished_rate,
        )

    def _workers_for(self, spec: QueueSpec) -> int:
        """Connected, accepting workers capable of the queue's work (busy ones count)."""
        probe = PendingTask("", spec.name, spec.default_priority, 0, spec.task_class,
                            GpuNeed.REQUIRED if spec.task_class is TaskClass.GPU_INTENSIVE else GpuNeed.NONE)
        ctx = PlacementContext(policy=self.shared.settings.placement, queues={spec.name: spec})
        count = 0
        for worker in self.shared.fleet:
            if not worker.accepting:
                continue
            # A queue has no one task name: which names a worker registers does not count here.
            idle = replace(worker.view(), in_flight=0, in_flight_by_queue={}, quarantined=False,
                           registered_tasks=frozenset())
            count += evaluate(probe, idle, ctx).eligible
        return count

    async def queue_view(self, name: str) -> QueueView:
        for view in await self.list_queues():
            if view.spec.name == name:
                return view
        known = ", ".join(q.name for q in self.shared.settings.queues)
        raise NotFound(f"queue {name!r} does not exist; known queues: {known}")

    def worker(self, worker_id: str) -> Worker:
        worker = self.shared.fleet.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id!r} is not known to the scheduler")
        return worker

    def workers(self) -> list[Worker]:
        return sorted(self.shared.fleet, key=lambda w: w.worker_id)

    def operator_status(self, worker: Worker) -> OperatorStatus:
        """The worker's operator state, why and since when, as of now."""
        return worker.operator_status(self.shared.clock())

    async def explain(self, item: TaskInput | None, task_id: str) -> Explanation:
        """Dry run of classification and placement; changes nothing."""
        shared = self.shared
        now = shared.clock()
        refusal: str | None = None
        if task_id:
            view = await self.get_task(task_id)
            task = shared.pending.get(task_id) or shared.pending_task(view.record)
            reason = view.record.class_reason
        elif item is not None:
            validate_input(item, submit_limits(shared))
            decision = classify(item.submission, self.rules)
            task = PendingTask(
                "(dry run)", decision.queue, decision.priority, 0, decision.task_class, decision.gpu,
                item.submission.gpu_memory_mb, tuple(sorted(item.submission.labels.items())), now,
                decision.reason, tuple(sorted(decision.preferred_labels.items())), item.submission.task_name,
            )
            reason = decision.reason
            refusal = await self._admission.refusal(item, decision)
        else:
            raise InvalidArgument("give a task or a task_id to explain")
        effective = shared.settings.aging.effective_priority(task.priority, now - task.submitted_at)
        views, ctx = shared.worker_views(now), shared.placement_context(now)
        verdicts, chosen = explain(task, views, ctx)
        if refusal is not None:
            chosen = None
            summary = (f"SubmitTask would refuse it: {UNSCHEDULABLE}: {refusal} "
                       "(with allow_unschedulable it is accepted and waits for such a worker)")
        elif task.queue in shared.paused:
            chosen = None
            summary = f"queue {task.queue} is paused: the task waits until it is resumed"
        elif chosen is not None:
            summary = f"{chosen.worker_id} would take it now (score {chosen.score:.2f})"
        else:
            summary = wait_reason(task, views, ctx=ctx)
        return Explanation(task.task_class, task.queue, task.priority, effective, reason, verdicts, chosen, summary)
