"""The engine's view of durable state: four narrow interfaces and the plain data they trade.

`scheduler/state/store.py` implements them over Redis (every transition one Lua script);
`tests/support/fakes.py` implements them in memory for the engine's unit tests. The engine
depends on these Protocols only, never on Redis.

    State
    ├── tasks     TaskStore     task records and every state transition
    ├── indexes   IndexStore    what recovery and statistics read: pending, ledgers, retries, dead letters
    ├── controls  ControlStore  paused queues and worker registrations
    └── events    EventLog      the lifecycle stream workers report into
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

from scheduler.core.model import TaskState
from scheduler.dispatch import Envelope
from scheduler.state.records import TaskRecord, WorkerRecord


class IdempotencyConflict(Exception):
    """An idempotency key is already bound to a different task name or payload."""

    def __init__(self, index: int, existing_task_id: str) -> None:
        super().__init__(index, existing_task_id)
        self.index = index
        """Position of the offending item in the submitted batch."""
        self.existing_task_id = existing_task_id
        """Task that owns the key ("" when the clash is inside the batch itself)."""


@dataclass(frozen=True)
class NewTask:
    """What the store writes for one accepted submission."""

    record: TaskRecord
    """Metadata as classified (its seq, state and attempt are set by the store)."""
    args_json: str
    kwargs_json: str
    celery_body: str = ""
    """A msgpack task's ready-made Celery body (base64), when it travels inline; "" otherwise."""


SubmitGroup = Sequence[NewTask]
"""Tasks accepted together: all are written, or none."""


class SubmitOutcome(NamedTuple):
    """What the store made of one submitted task (a tuple: one per task of a big batch)."""

    task_id: str
    deduplicated: bool
    seq: int = 0
    """Submission sequence of a new task (0 for a deduplicated one)."""


@dataclass(frozen=True)
class HandOutRequest:
    """One placement decision to commit: this task to this worker as this attempt, with the
    Celery message that goes onto the worker's queue in the same atomic step."""

    task_id: str
    worker_id: str
    attempt: int
    """The new attempt; committed only if the task is pending at attempt - 1."""
    by_reference: bool
    gpu_index: int | None
    served_queue: str
    """Queue whose per-worker limit the attempt counts against ("" = its own)."""
    reason: str
    envelope: Envelope


@dataclass(frozen=True)
class Applied:
    """What a report did: the task's state after it, its queue, and the attempt's worker."""

    state: TaskState
    queue: str
    worker_id: str
    waited_seconds: float = 0.0
    """For an attempt that ended: submitted -> started."""
    ran_seconds: float = 0.0
    """For an attempt that ended: started -> ended."""


@dataclass(frozen=True)
class Started:
    """A claim the worker side announced: this attempt of this task started on this worker."""

    task_id: str
    attempt: int
    worker_id: str


class EventKind(StrEnum):
    """Lifecycle report types (the wire contract's event types)."""

    STARTED = "started"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class LifecycleEvent:
    """One report read from the lifecycle stream."""

    stream_id: str
    kind: str
    task_id: str
    attempt: int
    worker_id: str
    ts: float
    fields: Mapping[str, str]
    """Everything the report carried (result_json, error, traceback, error_type, progress...)."""


class FailureAction(StrEnum):
    FAIL = "fail"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class FailureOutcome:
    """What a failed report turns into, as the retry policy decided."""

    action: FailureAction
    next_attempt_at: float
    reason: str


@dataclass(frozen=True)
class Reclaim:
    """A hand-out that missed its start deadline, to take back from its worker."""

    task_id: str
    worker_id: str
    attempt: int
    """Taken back only while the task is still dispatched (never started) at this attempt."""
    reason: str
    """The task's reason afterwards (and its error, when it ends failed)."""
    fail_at: float | None = None
    """End the task failed at this time instead of returning it to pending (its returns are used up)."""
    error_type: str = ""
    """The error type of a task it ends failed."""


@dataclass(frozen=True)
class Retention:
    """How long finished tasks are kept."""

    result_ttl_seconds: float
    dead_letter_ttl_seconds: float


class CancelStatus(StrEnum):
    OK = "ok"
    TERMINAL = "terminal"
    MISSING = "missing"


@dataclass(frozen=True)
class CancelOutcome:
    status: CancelStatus
    previous_state: TaskState | None
    task: TaskRecord | None


class TaskStore(Protocol):
    """Task records and their transitions; each transition is atomic and fenced by state."""

    async def submit(
        self, groups: Sequence[SubmitGroup], idempotency_ttl_seconds: int,
        hand_outs: Sequence[HandOutRequest] = (), now: float = 0.0,
    ) -> tuple[list[list[SubmitOutcome] | IdempotencyConflict], list[bool]]:
        """Write each group atomically (or none of it: its IdempotencyConflict comes back in its
        place); then, in the same round trip, try `hand_outs` of the new tasks at `now` (sync match)."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def load(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        """Records of many ids in one round trip (missing ones are skipped)."""
        ...

    async def watch(self, task_id: str) -> None:
        """Mark the task watched: its worker's claim then announces the start (`EventLog.started`);
        a task nobody watches is claimed without one. Nothing happens for a missing task."""
        ...

    async def dispatch(self, requests: Sequence[HandOutRequest], now: float) -> list[bool]:
        """Commit hand-outs and queue their messages (pending -> dispatched, new attempt, fence),
        all in one step; False where the task was no longer pending at that attempt."""
        ...

    async def apply(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention
    ) -> list[Applied | None]:
        """Apply and acknowledge reports, fenced by attempt; None where a report was stale.
        `outcomes[i]` says what a failed report turns into (None for other kinds)."""
        ...

    async def apply_then_dispatch(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention,
        hand_outs: Sequence[HandOutRequest], now: float,
    ) -> tuple[list[Applied | None], list[bool]]:
        """`apply`, then `dispatch` (the slots those reports free, handed out again), in one round trip."""
        ...

    async def apply_dispatch_and_read(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention,
        hand_outs: Sequence[HandOutRequest], now: float,
    ) -> tuple[list[Applied | None], list[bool], NextReports]:
        """`apply_then_dispatch`, with the next read of new reports (`EventLog.read` without
        backlog) sent in the same round trip, after it: the lifecycle's round. When this raises,
        no read is left behind."""
        ...

    async def requeue(self, task_id: str, worker_id: str, reason: str) -> TaskRecord | None:
        """A lost worker's attempt back to pending, its fence moved on; None if not in flight there."""
        ...

    async def reclaim_unstarted(self, reclaim: Reclaim, result_ttl_seconds: float) -> TaskRecord | None:
        """Take a hand-out that never started back from its worker: to pending with one more
        `start_returns` and its fence moved on, or (`fail_at`) ended failed. None when the task is
        no longer dispatched at that attempt on that worker (it started, or moved on meanwhile)."""
        ...

    async def reclaim_unreported(self, task_id: str, worker_id: str, attempt: int, reason: str) -> TaskRecord | None:
        """Take a running attempt back from a worker that no longer reports it running (its outcome
        report was lost): to pending, its fence moved on. None when the task is no longer running at
        that attempt on that worker (its outcome arrived, or it moved on meanwhile)."""
        ...

    async def cancel(self, task_id: str, now: float, reason: str, result_ttl_seconds: float) -> CancelOutcome: ...

    async def promote(self, task_id: str, from_state: TaskState, reason: str) -> TaskRecord | None:
        """A due retry or a replayed dead letter back to pending; None if not in `from_state`."""
        ...


class NextReports(Protocol):
    """A read of new reports already sent (`TaskStore.apply_dispatch_and_read`)."""

    async def wait(self) -> list[LifecycleEvent]:
        """The reports it read, [] when none came within its wait (as `EventLog.read`)."""
        ...

    def drop(self) -> None:
        """Give it up unread: it takes no more reports, and what it took is read again as backlog."""
        ...


class IndexStore(Protocol):
    """Indexes over tasks: what recovery, retries, dead letters and statistics read."""

    async def pending_ids(self) -> list[str]: ...

    async def in_flight_ledgers(self) -> dict[str, set[str]]:
        """Worker id -> ids of the tasks dispatched to or running on it."""
        ...

    async def due_retries(self, now: float, limit: int = 500) -> list[str]: ...

    async def dead_letters(self) -> list[tuple[str, float]]:
        """(task id, dead-lettered at), newest first."""
        ...

    async def purge_dead_letters(self, task_ids: Sequence[str]) -> int: ...

    async def newest_tasks(self, before_seq: int, count: int, *, pending_only: bool = False) -> list[tuple[str, int]]:
        """(task id, submission seq) of up to `count` kept tasks submitted before `before_seq`
        (0: from the newest), newest first; with `pending_only`, of pending tasks only. An id may
        name a task whose hash has just expired (the index is swept lazily: `sweep_task_index`)."""
        ...

    async def sweep_task_index(self, after_seq: int, count: int, submitted_before: float) -> tuple[int, int]:
        """Drop index entries of tasks whose hash expired, examining up to `count` entries
        submitted after `after_seq` in submission order and stopping at the first one submitted
        at or after `submitted_before` (younger than any retention: nothing from there on can
        have expired yet). Returns (the seq the next sweep starts after, 0 when the pass is over;
        how many entries were dropped). Purged dead letters leave the index as they go."""
        ...

    async def queue_stats(self, queues: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per queue: completed, failed, cancelled, retried, wait/run sums and counts."""
        ...

    async def add_stats(self, deltas: Mapping[str, Mapping[str, float]]) -> None:
        """Add per-queue counter deltas (the engine batches them, about once a second)."""
        ...


class ControlStore(Protocol):
    """Operator controls and worker registrations that must survive a restart."""

    async def paused_queues(self) -> set[str]: ...

    async def set_paused(self, queue: str, paused: bool) -> None: ...

    async def remember_worker(self, worker: WorkerRecord) -> None: ...

    async def known_workers(self) -> dict[str, WorkerRecord]: ...

    async def purge_worker_queue(self, worker_id: str) -> int:
        """Drop the messages still waiting in a worker's Celery queue; how many there were."""
        ...


class EventLog(Protocol):
    """The durable lifecycle stream (read by one consumer group)."""

    async def ensure_group(self) -> None: ...

    async def read(self, *, backlog: bool, count: int = 500, block_ms: int = 500) -> list[LifecycleEvent]:
        """Next reports; backlog=True re-reads those delivered but never acknowledged."""
        ...

    async def ack(self, stream_ids: Sequence[str]) -> None:
        """Acknowledge entries that are not reports (apply acknowledges the reports it applies)."""
        ...

    def started(self) -> AsyncIterator[Started]:
        """Claims as they happen (best effort: the task record holds the truth)."""
        ...


class State(Protocol):
    """All durable state the engine uses."""

    tasks: TaskStore
    indexes: IndexStore
    controls: ControlStore
    events: EventLog

    async def close(self) -> None: ...
