"""Admission: validate, classify and durably accept submissions (one task or an atomic batch)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace

from scheduler.core.classify import classify
from scheduler.core.model import Classification, TaskState
from scheduler.core.validate import (
    SubmitLimits,
    TaskInput,
    batch_error,
    payload_digest,
    validate_input,
)
from scheduler.engine.shared import Shared
from scheduler.engine.views import Accepted
from scheduler.errors import AlreadyExists, InvalidArgument, SchedulerError
from scheduler.state.interface import IdempotencyConflict, NewTask
from scheduler.state.records import TaskRecord


def submit_limits(shared: Shared) -> SubmitLimits:
    """What validation checks submissions against, from the settings."""
    settings = shared.settings
    return SubmitLimits(
        max_payload_bytes=settings.max_payload_bytes,
        queue_names=tuple(q.name for q in settings.queues),
        retry_policy_names=tuple(sorted(settings.retry_policies)),
    )


class Admission:
    """Turns submissions into pending tasks: all of a batch, or none."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.rules = shared.settings.classification_rules()
        self.limits = submit_limits(shared)

    async def submit(self, items: Sequence[TaskInput]) -> list[Accepted]:
        """Validate every item, then accept all atomically (or none)."""
        if not items:
            raise InvalidArgument("no tasks given")
        many = len(items) > 1
        problems: list[SchedulerError] = []
        for index, item in enumerate(items):
            try:
                validate_input(item, self.limits, index if many else None)
            except SchedulerError as exc:
                problems.append(exc)
        if problems:
            raise batch_error(problems)
        now = self.shared.clock()
        decisions = [self._classify(item, len(items) if many else 0) for item in items]
        new_tasks = [self._new_task(item, decision, now) for item, decision in zip(items, decisions, strict=True)]
        try:
            outcomes = await self.shared.state.tasks.submit(
                new_tasks, int(self.shared.settings.idempotency_ttl_seconds)
            )
        except IdempotencyConflict as exc:
            where = f"tasks[{exc.index}]: " if many else ""
            owner = f" (task {exc.existing_task_id})" if exc.existing_task_id else ""
            raise AlreadyExists(
                f"{where}idempotency_key is already used{owner} with a different task name or payload; "
                "use a new key for a different task"
            ) from None
        accepted: list[Accepted] = []
        for new, decision, outcome in zip(new_tasks, decisions, outcomes, strict=True):
            if outcome.deduplicated:
                accepted.append(await self._original(outcome.task_id, decision))
                continue
            # Built from what was just written: no read-back round trip on the hot path.
            self.shared.pending.add(replace(new.record, seq=outcome.seq).pending_task())
            accepted.append(Accepted(new.record.task_id, decision.queue, decision.priority,
                                     decision.task_class, False, decision.reason))
            self.shared.metrics.submitted.labels(decision.queue).inc()
        if any(not outcome.deduplicated for outcome in outcomes):
            self.shared.kick.set()
        return accepted

    def _classify(self, item: TaskInput, batch_size: int) -> Classification:
        submission = item.submission
        if batch_size and submission.batch_size < batch_size:
            submission = replace(submission, batch_size=batch_size)
        return classify(submission, self.rules)

    def _new_task(self, item: TaskInput, decision: Classification, now: float) -> NewTask:
        sub = item.submission
        spec = self.shared.settings.queue(decision.queue)
        args_json, kwargs_json = item.args_json or "[]", item.kwargs_json or "{}"
        record = TaskRecord(
            task_id=uuid.uuid4().hex,
            name=sub.task_name,
            queue=decision.queue,
            state=TaskState.PENDING,
            priority=decision.priority,
            task_class=decision.task_class,
            gpu=decision.gpu,
            gpu_memory_mb=sub.gpu_memory_mb,
            labels=dict(sub.labels),
            preferred_labels=dict(decision.preferred_labels),
            content_type=sub.content_type,
            user_initiated=sub.user_initiated,
            submitted_at=now,
            reason=decision.reason,
            class_reason=decision.reason,
            payload_bytes=len(args_json) + len(kwargs_json),
            payload_digest=payload_digest(item),
            idempotency_key=item.idempotency_key,
            retry_policy=decision.retry_policy,
            soft_time_limit=item.soft_time_limit_seconds or (spec.soft_time_limit_seconds if spec else 0.0),
            hard_time_limit=item.hard_time_limit_seconds or (spec.hard_time_limit_seconds if spec else 0.0),
        )
        return NewTask(record, args_json, kwargs_json)

    async def _original(self, task_id: str, decision: Classification) -> Accepted:
        """The answer for a deduplicated submission: the task the key already names."""
        record = await self.shared.state.tasks.get(task_id)
        if record is None:
            return Accepted(task_id, decision.queue, decision.priority, decision.task_class, True, decision.reason)
        return Accepted(task_id, record.queue, record.priority, record.task_class, True, record.class_reason)
