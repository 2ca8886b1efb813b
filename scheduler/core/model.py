"""Plain, frozen data the core decides on: tasks, workers, queues and the decisions themselves."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType

from switchyard.wire import TERMINAL_STATE_NAMES

MIN_PRIORITY = 1
MAX_PRIORITY = 10


class TaskClass(StrEnum):
    """What kind of work a task is."""

    GPU_INTENSIVE = "gpu_intensive"
    CPU = "cpu"
    MIXED = "mixed"
    IO = "io"


class GpuNeed(StrEnum):
    """How much a task needs a GPU, after classification."""

    UNSPECIFIED = "unspecified"
    NONE = "none"
    PREFERRED = "preferred"
    REQUIRED = "required"


class TaskState(StrEnum):
    """Life cycle of a task; see TERMINAL_STATES."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset(TaskState(name) for name in TERMINAL_STATE_NAMES)
"""States after which nothing changes any more; the set itself is the wire contract's."""
IN_FLIGHT_STATES = frozenset({TaskState.DISPATCHED, TaskState.RUNNING})


class WorkerType(StrEnum):
    """What a worker is for."""

    CPU = "cpu"
    GPU = "gpu"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class QueueSpec:
    """One logical queue of the scheduler."""

    name: str
    """Queue name users see, e.g. `gpu_priority`."""
    task_class: TaskClass
    """Class of work this queue holds by default."""
    default_priority: int
    """Priority (1-10) given to its tasks when the submitter gives none."""
    paused: bool = False
    """Start paused (operators resume it)."""
    max_tasks_per_worker: int = 0
    """At most this many of the queue's tasks on one worker at once (0 = no limit)."""
    soft_time_limit_seconds: float = 0.0
    """Soft time limit of its tasks (0 = none): the task gets SoftTimeLimitExceeded."""
    hard_time_limit_seconds: float = 0.0
    """Hard time limit of its tasks (0 = none): the task's process is killed."""
    max_depth: int = 0
    """Alert threshold: warn when more tasks than this are pending (0 = off)."""
    max_error_rate: float = 0.0
    """Alert threshold: warn when the share of recent tasks that failed exceeds this (0 = off)."""
    retry_policy: str = ""
    """Retry policy of its tasks unless the submitter names one ("" = the global default)."""
    serializer: str = "json"
    """Encoding of its tasks' Celery messages unless the submitter names one: json or msgpack."""


NO_LABELS: Mapping[str, str] = MappingProxyType({})
"""An empty, read-only label map: what submissions that carry no labels share."""


@dataclass(frozen=True)
class Submission:
    """A validated task submission, as the core classifies it."""

    task_name: str
    content_type: str = ""
    gpu: GpuNeed = GpuNeed.UNSPECIFIED
    gpu_memory_mb: int = 0
    priority: int = 0
    """0 lets the scheduler decide, else 1-10."""
    queue: str = ""
    """Explicit queue override; empty lets classification choose."""
    labels: Mapping[str, str] = field(default_factory=dict)
    user_initiated: bool = False
    batch_size: int = 0
    """Items in the batch this task came with; more than 10 lowers its priority by one."""
    retry_policy: str = ""
    """Named retry policy; "" lets rules / the queue decide."""
    preferred_labels: Mapping[str, str] = field(default_factory=dict)
    """Soft affinity: workers with these labels score higher (never required)."""


@dataclass(frozen=True)
class Classification:
    """Where a submission goes and how urgent it is, with the reason."""

    task_class: TaskClass
    gpu: GpuNeed
    queue: str
    priority: int
    reason: str
    retry_policy: str = ""
    """Retry policy that governs the task (resolved name)."""
    preferred_labels: Mapping[str, str] = field(default_factory=dict)
    """Soft affinity labels (from the submission or a rule)."""


@dataclass(frozen=True, slots=True, weakref_slot=True)
class TaskKind:
    """What a pending task has in common with others of its kind: everything but its id, order,
    submission time and attempt. Held once per kind (`task_kind`), so a million pending tasks of
    a few kinds cost a million small `PendingTask`s, not a million copies of these fields."""

    queue: str
    priority: int
    task_class: TaskClass
    gpu: GpuNeed
    gpu_memory_mb: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    class_reason: str = ""
    """Why classification put it where it is (kept for explanations)."""
    preferred_labels: tuple[tuple[str, str], ...] = ()
    """Soft affinity labels."""
    task_name: str = ""
    """Celery task name (rate limits match on it)."""
    by_reference: bool = False
    """Its payload is too large to travel in the Celery message; the worker loads it from Redis."""
    time_limits: tuple[float, float] | None = None
    """(soft, hard) seconds (0 = none), or None when it has neither."""
    serializer: str = "json"
    """Encoding of its Celery message: json or msgpack (scheduler/dispatch.py)."""


_KIND_FIELDS = tuple(f.name for f in fields(TaskKind))
_KINDS: weakref.WeakValueDictionary[tuple[object, ...], TaskKind] = weakref.WeakValueDictionary()


def task_kind(*values: object) -> TaskKind:
    """The one shared TaskKind with these field values (in TaskKind's field order); kinds no
    pending task holds any more are dropped."""
    kind = _KINDS.get(values)
    if kind is None:
        kind = _KINDS[values] = TaskKind(*values)  # type: ignore[arg-type]
    return kind


_UNSET: object = object()


@dataclass(frozen=True, slots=True, init=False)
class PendingTask:
    """A task waiting for a worker slot: its own id, order, submission time and attempt, and its
    shared `TaskKind` (slotted and small: a million of them wait in memory at scale).

    Built like a flat record (`PendingTask(task_id, queue, priority, seq, task_class, gpu, ...)`,
    positionally or by name) and read like one (`task.queue`); `dataclasses.replace` works too,
    with a kind field among the changes or not."""

    task_id: str
    seq: int
    """Global submission order; ties in priority go first-in first-out by it."""
    submitted_at: float
    attempt: int
    """Hand-outs so far; the next one is attempt + 1."""
    kind: TaskKind

    def __init__(self, task_id: str, queue: str | object = _UNSET, priority: int | object = _UNSET,
                 seq: int = 0, task_class: TaskClass | object = _UNSET, gpu: GpuNeed | object = _UNSET,
                 gpu_memory_mb: int | object = _UNSET, labels: tuple[tuple[str, str], ...] | object = _UNSET,
                 submitted_at: float = 0.0, class_reason: str | object = _UNSET,
                 preferred_labels: tuple[tuple[str, str], ...] | object = _UNSET,
                 task_name: str | object = _UNSET, attempt: int = 0, by_reference: bool | object = _UNSET,
                 time_limits: tuple[float, float] | object | None = _UNSET, serializer: str | object = _UNSET,
                 kind: TaskKind | None = None) -> None:
        given = (queue, priority, task_class, gpu, gpu_memory_mb, labels, class_reason, preferred_labels,
                 task_name, by_reference, time_limits, serializer)
        if kind is None:
            if _UNSET in given[:4]:
                raise TypeError("PendingTask needs queue, priority, task_class and gpu (or a kind)")
            defaults = (None, None, None, None, 0, (), "", (), "", False, None, "json")
            values = tuple(d if v is _UNSET else v for v, d in zip(given, defaults, strict=True))
        else:
            values = tuple(getattr(kind, name) if v is _UNSET else v
                           for v, name in zip(given, _KIND_FIELDS, strict=True))
        object.__setattr__(self, "task_id", task_id)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "submitted_at", submitted_at)
        object.__setattr__(self, "attempt", attempt)
        object.__setattr__(self, "kind", task_kind(*values))

    @classmethod
    def of_kind(cls, task_id: str, seq: int, submitted_at: float, attempt: int, kind: TaskKind) -> PendingTask:
        """One more task of a kind already held (the hot path of a big submission: no field of
        the kind is looked at again)."""
        task = object.__new__(cls)
        object.__setattr__(task, "task_id", task_id)
        object.__setattr__(task, "seq", seq)
        object.__setattr__(task, "submitted_at", submitted_at)
        object.__setattr__(task, "attempt", attempt)
        object.__setattr__(task, "kind", kind)
        return task

    @property
    def queue(self) -> str:
        return self.kind.queue

    @property
    def priority(self) -> int:
        return self.kind.priority

    @property
    def task_class(self) -> TaskClass:
        return self.kind.task_class

    @property
    def gpu(self) -> GpuNeed:
        return self.kind.gpu

    @property
    def gpu_memory_mb(self) -> int:
        return self.kind.gpu_memory_mb

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        return self.kind.labels

    @property
    def class_reason(self) -> str:
        return self.kind.class_reason

    @property
    def preferred_labels(self) -> tuple[tuple[str, str], ...]:
        return self.kind.preferred_labels

    @property
    def task_name(self) -> str:
        return self.kind.task_name

    @property
    def by_reference(self) -> bool:
        return self.kind.by_reference

    @property
    def time_limits(self) -> tuple[float, float] | None:
        return self.kind.time_limits

    @property
    def serializer(self) -> str:
        return self.kind.serializer

    @property
    def order_key(self) -> tuple[int, int]:
        """Sort key: highest priority first, then oldest first."""
        return (-self.kind.priority, self.seq)


@dataclass(frozen=True)
class GpuView:
    """One GPU of a worker as placement sees it."""

    index: int
    memory_total_mb: int
    memory_free_mb: int
    """Free memory from the last heartbeat."""
    reserved_mb: int = 0
    """Memory promised to tasks in flight on this device since that heartbeat."""
    utilization_percent: int = 0

    @property
    def available_mb(self) -> int:
        """Memory a new task can still be promised on this device."""
        return max(0, self.memory_free_mb - self.reserved_mb)


@dataclass(frozen=True)
class WorkerView:
    """One worker as placement sees it."""

    worker_id: str
    worker_type: WorkerType
    slots: int
    in_flight: int
    """Tasks dispatched to or running on the worker."""
    accepting: bool = True
    """False while draining, unreachable or lost."""
    gpus: tuple[GpuView, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    in_flight_by_queue: Mapping[str, int] = field(default_factory=dict)
    """Tasks in flight per logical queue (for per-queue limits)."""
    recent_failures: int = 0
    """Failed attempts on this worker within the failure window."""
    quarantined: bool = False
    """Kept from new work because it keeps failing tasks."""
    registered_tasks: frozenset[str] = frozenset()
    """Task names its Celery app registers; empty when not known (then any name may go there)."""

    @property
    def has_gpu(self) -> bool:
        """Whether GPU work can run here: a GPU-capable worker type that reported a device."""
        return bool(self.gpus) and self.worker_type in (WorkerType.GPU, WorkerType.HYBRID)

    def free_slots(self, prefetch: int = 0) -> int:
        """Slots the worker can still be handed work for (prefetch lets a queue run slightly ahead)."""
        return max(0, self.slots + prefetch - self.in_flight)

    def may_run(self, task_name: str) -> bool:
        """Whether its Celery app may run `task_name`: it registers it, or its registry is unknown."""
        return not self.registered_tasks or task_name in self.registered_tasks


@dataclass(frozen=True)
class Assignment:
    """A decision to hand one task to one worker."""

    task_id: str
    worker_id: str
    gpu_index: int | None
    """Device the task's GPU memory is reserved on, when it asked for some."""
    reason: str
    served_queue: str = ""
    """Queue whose limits the task counts against (its own, or one reached by fallback)."""


@dataclass(frozen=True)
class Plan:
    """The outcome of one placement round."""

    assignments: tuple[Assignment, ...]
    waiting: Mapping[str, str]
    """Reason per examined task that could not be placed."""
    more: bool = False
    """The round stopped at its assignment/examination budget with placeable work maybe left."""
