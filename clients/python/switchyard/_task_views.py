"""Frozen views of what happens to a task: submission, state, cancellation, placement, dead letter.

Callers read ``task.state == "succeeded"`` and ``task.result`` instead of enum numbers and JSON
text; the original message stays reachable as ``.raw`` for anything the view leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from switchyard._convert import decode_json, enum_label, seconds_between, timestamp
from switchyard.v1 import scheduler_pb2
from switchyard.wire import TERMINAL_STATE_NAMES

__all__ = [
    "CancelResult",
    "DeadLetterView",
    "Explanation",
    "ScoreTerm",
    "SubmitResult",
    "TaskView",
    "WorkerVerdict",
]


@dataclass(frozen=True)
class SubmitResult:
    """What the scheduler decided for one submission."""

    task_id: str
    """Id of the new task, or of the existing one when ``deduplicated``."""
    queue: str
    """Logical queue the task waits in."""
    priority: int
    """Priority the scheduler gave it (1-10)."""
    task_class: str
    """``"gpu_intensive"``, ``"cpu"``, ``"mixed"`` or ``"io"``."""
    deduplicated: bool
    """True when the idempotency key matched an existing task."""
    reason: str
    """Why the scheduler classified and queued the task so."""
    raw: scheduler_pb2.SubmitTaskResponse = field(repr=False, compare=False)
    """The response message."""

    @classmethod
    def from_proto(cls, message: scheduler_pb2.SubmitTaskResponse) -> SubmitResult:
        """Build the view of a ``SubmitTaskResponse``."""
        return cls(
            task_id=message.task_id,
            queue=message.queue,
            priority=message.priority,
            task_class=enum_label(scheduler_pb2.TaskClass, message.task_class, "TASK_CLASS_"),
            deduplicated=message.deduplicated,
            reason=message.reason,
            raw=message,
        )


@dataclass(frozen=True)
class TaskView:
    """A task as the scheduler records it."""

    task_id: str
    """Unique id."""
    task_name: str
    """Celery task name."""
    state: str
    """``"pending"``, ``"dispatched"``, ``"running"``, ``"retrying"``, or a terminal state:
    ``"succeeded"``, ``"failed"``, ``"dead_lettered"``, ``"cancelled"``."""
    queue: str
    """Logical queue."""
    priority: int
    """Priority 1-10."""
    task_class: str
    """``"gpu_intensive"``, ``"cpu"``, ``"mixed"``, ``"io"`` (``"unspecified"`` before classification)."""
    content_type: str
    """Content type given at submission."""
    gpu: str
    """GPU need after classification: ``"none"``, ``"preferred"``, ``"required"``."""
    gpu_memory_mb: int
    """GPU memory asked for, MiB."""
    worker_id: str
    """Worker that holds or held the current attempt ("" while pending)."""
    attempt: int
    """Hand-out count: 1 for the first dispatch, +1 for every re-dispatch."""
    result: Any
    """Return value of a succeeded task, decoded from JSON (None otherwise)."""
    result_json: str
    """The result as the scheduler stores it, JSON text."""
    error: str
    """``"Type: message"`` of a failed task."""
    traceback: str
    """Traceback of a failed task, if the worker sent one."""
    progress: float
    """Progress 0.0-1.0 reported from inside the task."""
    progress_message: str
    """Message reported with the progress."""
    reason: str
    """Why the task waits (pending) or why it ended where it did."""
    labels: Mapping[str, str]
    """Worker labels the task requires."""
    submitted_at: datetime | None
    """When the task was accepted (UTC)."""
    dispatched_at: datetime | None
    """When the current attempt was handed to a worker."""
    started_at: datetime | None
    """When the current attempt started."""
    finished_at: datetime | None
    """When the task reached a terminal state."""
    retry_policy: str
    """Name of the retry policy that governs the task."""
    failures: int
    """Failed attempts so far."""
    next_attempt_at: datetime | None
    """When a retrying task becomes pending again (None unless retrying)."""
    error_type: str
    """Exception type of the last failure, e.g. ``"ValueError"`` ("" if none)."""
    effective_priority: int
    """Priority now, including aging (>= ``priority`` while the task waits; 0 if not reported)."""
    raw: scheduler_pb2.Task = field(repr=False, compare=False)
    """The ``Task`` message."""

    @property
    def done(self) -> bool:
        """True in a terminal state."""
        return self.state in TERMINAL_STATE_NAMES

    @property
    def succeeded(self) -> bool:
        """True when the task finished successfully."""
        return self.state == "succeeded"

    @property
    def wait_seconds(self) -> float | None:
        """Seconds from submission to the start of the current attempt."""
        return seconds_between(self.submitted_at, self.started_at)

    @property
    def run_seconds(self) -> float | None:
        """Seconds from the start of the current attempt to the end."""
        return seconds_between(self.started_at, self.finished_at)

    @classmethod
    def from_proto(cls, message: scheduler_pb2.Task) -> TaskView:
        """Build the view of a ``Task`` message."""
        return cls(
            task_id=message.task_id,
            task_name=message.task_name,
            state=enum_label(scheduler_pb2.TaskState, message.state, "TASK_STATE_"),
            queue=message.queue,
            priority=message.priority,
            task_class=enum_label(scheduler_pb2.TaskClass, message.task_class, "TASK_CLASS_"),
            content_type=message.content_type,
            gpu=enum_label(scheduler_pb2.GpuRequirement, message.gpu, "GPU_REQUIREMENT_"),
            gpu_memory_mb=message.gpu_memory_mb,
            worker_id=message.worker_id,
            attempt=message.attempt,
            result=decode_json(message.result_json),
            result_json=message.result_json,
            error=message.error,
            traceback=message.traceback,
            progress=message.progress,
            progress_message=message.progress_message,
            reason=message.reason,
            labels=dict(message.labels),
            submitted_at=timestamp(message, "submitted_at"),
            dispatched_at=timestamp(message, "dispatched_at"),
            started_at=timestamp(message, "started_at"),
            finished_at=timestamp(message, "finished_at"),
            retry_policy=message.retry_policy,
            failures=message.failures,
            next_attempt_at=timestamp(message, "next_attempt_at"),
            error_type=message.error_type,
            effective_priority=message.effective_priority,
            raw=message,
        )


@dataclass(frozen=True)
class CancelResult:
    """Outcome of a cancel."""

    task: TaskView
    """The task after cancellation."""
    previous_state: str
    """State the task was in when the cancel arrived."""


class ScoreTerm(NamedTuple):
    """One term of a worker's placement score; the terms' contributions add up to the score."""

    name: str
    """Criterion: ``load``, ``gpu_utilization``, ``memory_headroom``, ``capability``,
    ``affinity`` or ``failures``."""
    value: float
    """Raw value of the criterion, 0-1."""
    weight: float
    """Configured weight."""
    contribution: float
    """What the term adds to the score: ``value * weight``, negative for a penalty (failures)."""

    @classmethod
    def from_proto(cls, message: scheduler_pb2.ScoreTerm) -> ScoreTerm:
        """Build the term of a ``ScoreTerm`` message."""
        return cls(message.name, message.value, message.weight, message.contribution)


@dataclass(frozen=True)
class WorkerVerdict:
    """Why a worker would or would not take the explained task."""

    worker_id: str
    """Worker id."""
    eligible: bool
    """True when the worker passed every filter."""
    rejected_by: str
    """First filter that rejected it, in the order they run (``draining``, ``quarantine``,
    ``registered``, ``capability``, ``fallback_wait``, ``labels``, ``gpu_memory``, ``slots``,
    ``queue_limit``); "" when eligible."""
    rejection_reason: str
    """The rejection in words."""
    score: float
    """Total score (eligible workers only)."""
    terms: tuple[ScoreTerm, ...]
    """Score breakdown (eligible workers only)."""
    raw: scheduler_pb2.WorkerVerdict = field(repr=False, compare=False)
    """The ``WorkerVerdict`` message."""

    @classmethod
    def from_proto(cls, message: scheduler_pb2.WorkerVerdict) -> WorkerVerdict:
        """Build the view of a ``WorkerVerdict`` message."""
        return cls(
            worker_id=message.worker_id,
            eligible=message.eligible,
            rejected_by=message.rejected_by,
            rejection_reason=message.rejection_reason,
            score=message.score,
            terms=tuple(ScoreTerm.from_proto(term) for term in message.terms),
            raw=message,
        )


@dataclass(frozen=True)
class Explanation:
    """A placement dry run: how a task is classified and which worker would take it now."""

    task_class: str
    """Class decided: ``"gpu_intensive"``, ``"cpu"``, ``"mixed"`` or ``"io"``."""
    queue: str
    """Queue decided."""
    priority: int
    """Base priority decided (1-10)."""
    effective_priority: int
    """Priority after aging, for an existing pending task."""
    classification_reason: str
    """Why that class, queue and priority."""
    chosen_worker_id: str
    """Worker that would take the task now; "" if none."""
    summary: str
    """One sentence: what would happen now."""
    workers: tuple[WorkerVerdict, ...]
    """One verdict per known worker."""
    raw: scheduler_pb2.ExplainPlacementResponse = field(repr=False, compare=False)
    """The ``ExplainPlacementResponse`` message."""

    @property
    def chosen(self) -> WorkerVerdict | None:
        """The verdict of the worker that would take the task, if any."""
        return next((v for v in self.workers if v.worker_id == self.chosen_worker_id), None)

    @classmethod
    def from_proto(cls, message: scheduler_pb2.ExplainPlacementResponse) -> Explanation:
        """Build the view of an ``ExplainPlacementResponse``."""
        return cls(
            task_class=enum_label(scheduler_pb2.TaskClass, message.task_class, "TASK_CLASS_"),
            queue=message.queue,
            priority=message.priority,
            effective_priority=message.effective_priority,
            classification_reason=message.classification_reason,
            chosen_worker_id=message.chosen_worker_id,
            summary=message.summary,
            workers=tuple(WorkerVerdict.from_proto(verdict) for verdict in message.workers),
            raw=message,
        )


@dataclass(frozen=True)
class DeadLetterView:
    """A task that failed for good and is kept in the dead-letter queue."""

    task: TaskView
    """The task (state ``"dead_lettered"``)."""
    dead_lettered_at: datetime | None
    """When it was dead-lettered (UTC)."""
    reason: str
    """Why: retries exhausted, a non-retryable error, ..."""
    raw: scheduler_pb2.DeadLetter = field(repr=False, compare=False)
    """The ``DeadLetter`` message."""

    @classmethod
    def from_proto(cls, message: scheduler_pb2.DeadLetter) -> DeadLetterView:
        """Build the view of a ``DeadLetter`` message."""
        return cls(
            task=TaskView.from_proto(message.task),
            dead_lettered_at=timestamp(message, "dead_lettered_at"),
            reason=message.reason,
            raw=message,
        )
