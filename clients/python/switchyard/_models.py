"""Plain, frozen views of the scheduler's protobuf messages, and the conversions to build them.

Callers read ``task.state == "succeeded"`` and ``task.result`` instead of enum numbers and JSON
text; the original message stays reachable as ``.raw`` for anything the view leaves out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from switchyard.v1 import scheduler_pb2, worker_pb2

__all__ = [
    "TERMINAL_STATES",
    "CancelResult",
    "DeadLetterView",
    "Explanation",
    "GpuView",
    "QueueView",
    "ScoreTerm",
    "SubmitResult",
    "TaskView",
    "WorkerVerdict",
    "WorkerView",
]

TERMINAL_STATES = frozenset({"succeeded", "failed", "dead_lettered", "cancelled"})
"""Task states after which nothing changes any more."""

GPU_REQUIREMENTS = ("unspecified", "none", "preferred", "required")
"""Accepted spellings of ``gpu=`` in :meth:`SchedulerClient.submit`, in enum order."""


def enum_label(enum_type: Any, value: int, prefix: str) -> str:
    """``TASK_STATE_SUCCEEDED`` → ``"succeeded"``; a value this client does not know → ``"unknown(<n>)"``."""
    try:
        name = str(enum_type.Name(value))
    except ValueError:
        return f"unknown({value})"
    return name.removeprefix(prefix).lower()


def gpu_requirement_value(gpu: str | int) -> int:
    """The ``GpuRequirement`` number for ``"none"``/``"preferred"``/... or an enum number."""
    if isinstance(gpu, int):
        return gpu
    key = gpu.strip().lower()
    if key not in GPU_REQUIREMENTS:
        raise ValueError(f"gpu must be one of {', '.join(GPU_REQUIREMENTS)}; got {gpu!r}")
    return int(scheduler_pb2.GpuRequirement.Value(f"GPU_REQUIREMENT_{key.upper()}"))


def _timestamp(message: Any, field_name: str) -> datetime | None:
    if not message.HasField(field_name):
        return None
    stamp: Timestamp = getattr(message, field_name)
    return stamp.ToDatetime(tzinfo=UTC)


def _decode_json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


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
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        """True when the task finished successfully."""
        return self.state == "succeeded"

    @property
    def wait_seconds(self) -> float | None:
        """Seconds from submission to the start of the current attempt."""
        return _seconds_between(self.submitted_at, self.started_at)

    @property
    def run_seconds(self) -> float | None:
        """Seconds from the start of the current attempt to the end."""
        return _seconds_between(self.started_at, self.finished_at)

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
            result=_decode_json(message.result_json),
            result_json=message.result_json,
            error=message.error,
            traceback=message.traceback,
            progress=message.progress,
            progress_message=message.progress_message,
            reason=message.reason,
            labels=dict(message.labels),
            submitted_at=_timestamp(message, "submitted_at"),
            dispatched_at=_timestamp(message, "dispatched_at"),
            started_at=_timestamp(message, "started_at"),
            finished_at=_timestamp(message, "finished_at"),
            retry_policy=message.retry_policy,
            failures=message.failures,
            next_attempt_at=_timestamp(message, "next_attempt_at"),
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


@dataclass(frozen=True)
class QueueView:
    """Statistics of one logical queue."""

    name: str
    """Queue name."""
    paused: bool
    """True while paused."""
    pending: int
    """Tasks waiting for a worker."""
    processing: int
    """Tasks dispatched or running."""
    completed: int
    """Tasks that succeeded since the statistics began."""
    failed: int
    """Tasks that failed since the statistics began."""
    cancelled: int
    """Tasks cancelled since the statistics began."""
    mean_wait_seconds: float
    """Mean seconds from submission to start, over recent tasks."""
    mean_run_seconds: float
    """Mean seconds from start to finish, over recent tasks."""
    workers: int
    """Connected workers able to serve this queue."""
    default_priority: int
    """Default priority of the queue's tasks."""
    task_class: str
    """Class of work the queue holds."""
    retrying: int
    """Tasks waiting for their next retry."""
    dead_lettered: int
    """Dead-lettered tasks currently kept."""
    error_rate: float
    """Share of finished tasks that failed, over recent tasks (0-1)."""
    warnings: tuple[str, ...]
    """Alert thresholds crossed right now, in words (queue depth, error rate)."""
    raw: scheduler_pb2.QueueStats = field(repr=False, compare=False)
    """The ``QueueStats`` message."""

    @classmethod
    def from_proto(cls, message: scheduler_pb2.QueueStats) -> QueueView:
        """Build the view of a ``QueueStats`` message."""
        return cls(
            name=message.name,
            paused=message.paused,
            pending=message.pending,
            processing=message.processing,
            completed=message.completed,
            failed=message.failed,
            cancelled=message.cancelled,
            mean_wait_seconds=message.mean_wait_seconds,
            mean_run_seconds=message.mean_run_seconds,
            workers=message.workers,
            default_priority=message.default_priority,
            task_class=enum_label(scheduler_pb2.TaskClass, message.task_class, "TASK_CLASS_"),
            retrying=message.retrying,
            dead_lettered=message.dead_lettered,
            error_rate=message.error_rate,
            warnings=tuple(message.warnings),
            raw=message,
        )


@dataclass(frozen=True)
class GpuView:
    """One GPU of a worker, as last reported."""

    index: int
    """Device index (0-based)."""
    name: str
    """Model name, e.g. ``"NVIDIA A100-SXM4-40GB"``."""
    uuid: str
    """Device UUID; simulated devices use ``"SIM-GPU-<n>"``."""
    memory_total_mb: int
    """Total device memory, MiB."""
    memory_free_mb: int
    """Free device memory, MiB."""
    utilization_percent: int
    """Core utilisation, percent."""

    @classmethod
    def from_proto(cls, message: worker_pb2.GpuDevice) -> GpuView:
        """Build the view of a ``GpuDevice`` message."""
        return cls(
            index=message.index,
            name=message.name,
            uuid=message.uuid,
            memory_total_mb=message.memory_total_mb,
            memory_free_mb=message.memory_free_mb,
            utilization_percent=message.utilization_percent,
        )


def _merge_gpu(probed: worker_pb2.GpuDevice, fresh: worker_pb2.GpuDevice | None) -> GpuView:
    """Identity from the probe, memory and utilisation from the latest heartbeat when it has them."""
    if fresh is None:
        return GpuView.from_proto(probed)
    return GpuView(
        index=probed.index,
        name=probed.name or fresh.name,
        uuid=probed.uuid or fresh.uuid,
        memory_total_mb=probed.memory_total_mb or fresh.memory_total_mb,
        memory_free_mb=fresh.memory_free_mb,
        utilization_percent=fresh.utilization_percent,
    )


@dataclass(frozen=True)
class WorkerView:
    """A worker as the scheduler sees it."""

    worker_id: str
    """Worker id."""
    worker_type: str
    """``"cpu"``, ``"gpu"``, ``"hybrid"`` (``"unspecified"`` if the agent did not say)."""
    status: str
    """``"connected"``, ``"unreachable"``, ``"draining"`` or ``"lost"``."""
    slots: int
    """Concurrent task slots."""
    free_slots: int
    """Slots with nothing dispatched or running."""
    task_ids: tuple[str, ...]
    """Tasks dispatched to or running on the worker."""
    labels: Mapping[str, str]
    """Worker labels."""
    celery_queue: str
    """Celery queue the worker consumes (``sy.w.<worker_id>``)."""
    hostname: str
    """Host the worker runs on."""
    cpu_count: int
    """Logical CPUs."""
    memory_total_mb: int
    """System memory, MiB."""
    gpus: tuple[GpuView, ...]
    """GPUs, with the latest memory and utilisation the heartbeats carried."""
    gpu_simulated: bool
    """True when the GPUs are simulated (demo/test profile)."""
    active_tasks: int
    """Tasks the Celery worker executes right now, per its agent."""
    cpu_percent: float
    """System CPU use, percent."""
    memory_percent: float
    """Memory use, percent."""
    last_heartbeat_at: datetime | None
    """Last heartbeat (UTC)."""
    raw: scheduler_pb2.WorkerInfo = field(repr=False, compare=False)
    """The ``WorkerInfo`` message."""

    @classmethod
    def from_proto(cls, message: scheduler_pb2.WorkerInfo) -> WorkerView:
        """Build the view of a ``WorkerInfo`` message, preferring the load's fresher GPU figures."""
        capabilities = message.capabilities
        fresh_by_index = {gpu.index: gpu for gpu in message.load.gpus}
        gpus = tuple(
            _merge_gpu(probed, fresh_by_index.get(probed.index)) for probed in capabilities.gpus
        )
        return cls(
            worker_id=message.worker_id,
            worker_type=enum_label(worker_pb2.WorkerType, message.worker_type, "WORKER_TYPE_"),
            status=enum_label(scheduler_pb2.WorkerStatus, message.status, "WORKER_STATUS_"),
            slots=message.slots,
            free_slots=message.free_slots,
            task_ids=tuple(message.task_ids),
            labels=dict(message.labels),
            celery_queue=message.celery_queue,
            hostname=capabilities.hostname,
            cpu_count=capabilities.cpu_count,
            memory_total_mb=capabilities.memory_total_mb,
            gpus=gpus,
            gpu_simulated=capabilities.gpu_simulated,
            active_tasks=message.load.active_tasks,
            cpu_percent=message.load.cpu_percent,
            memory_percent=message.load.memory_percent,
            last_heartbeat_at=_timestamp(message, "last_heartbeat_at"),
            raw=message,
        )


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
    """First filter that rejected it (``capability``, ``slots``, ``queue_limit``, ``draining``,
    ``health``, ``labels``, ``gpu_memory``, ``quarantine``, ``fallback_wait``); "" when eligible."""
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
            dead_lettered_at=_timestamp(message, "dead_lettered_at"),
            reason=message.reason,
            raw=message,
        )
