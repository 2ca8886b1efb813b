"""An in-memory `scheduler.state.interface.State`, so the engine's unit tests need no Redis.

`FakeState` keeps, over plain dicts, the semantics of the Lua scripts in scheduler/state/scripts/
(tests/integration/test_state_contract.py runs the same scenarios against it and the real
`RedisState` to keep the two in step). It also plays a worker's side: `claim` does what
switchyard/lua/claim.lua does, `report` what the agent's XADD does, `fence` reads the fence.

Not modelled: key expiry (finished tasks and idempotency keys never expire here) and the stream's
trimming; a blocking read waits at most `block_ms` and then returns nothing, as Redis does.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from switchyard.wire import FENCE_CANCELLED, FENCE_REQUEUED, fence_started

from scheduler.core.model import IN_FLIGHT_STATES, TERMINAL_STATES, TaskState
from scheduler.state.interface import (
    CancelOutcome,
    CancelStatus,
    ControlStore,
    DispatchOutcome,
    EventKind,
    EventLog,
    FailureAction,
    FailureOutcome,
    HandOutRequest,
    IdempotencyConflict,
    IndexStore,
    LifecycleEvent,
    NewTask,
    Retention,
    SubmitOutcome,
    TaskStore,
)
from scheduler.state.records import (
    SUBMIT_FIELDS,
    TaskRecord,
    WorkerRecord,
    decode_task,
    encode_task,
)

PENDING, DISPATCHED, RUNNING = TaskState.PENDING, TaskState.DISPATCHED, TaskState.RUNNING


@dataclass
class Tables:
    """Everything a FakeState holds: one field per Redis key (family) of switchyard.wire.Keys."""

    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    payloads: dict[str, tuple[str, str]] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    """Task id -> submission sequence (the zset's score)."""
    seq: int = 0
    inflight: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    fences: dict[str, str] = field(default_factory=dict)
    idempotency: dict[str, str] = field(default_factory=dict)
    retry: dict[str, float] = field(default_factory=dict)
    dead: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    paused: set[str] = field(default_factory=set)
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    stream: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    delivered: int = 0
    """How many stream entries the consumer group has been given."""
    unacked: dict[str, dict[str, str]] = field(default_factory=dict)

    def count(self, state: TaskState, delta: int) -> None:
        self.counts[state.value] = self.counts.get(state.value, 0) + delta

    def stat(self, queue: str, name: str, delta: float) -> None:
        row = self.stats[queue]
        row[name] = row.get(name, 0.0) + delta


class FakeTaskStore:
    """submit.lua, dispatch.lua, apply_event.lua, requeue.lua, cancel.lua and promote.lua."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def submit(self, tasks: Sequence[NewTask], idempotency_ttl_seconds: int) -> list[SubmitOutcome]:
        t = self.t
        same_as: list[str | None] = []
        seen: dict[str, NewTask] = {}
        # Decide duplicates and conflicts before writing anything (all or none).
        for index, new in enumerate(tasks):
            key, digest = new.record.idempotency_key, new.record.payload_digest
            existing = t.idempotency.get(key) if key else None
            if existing is not None:
                owner = t.tasks.get(existing)
                if owner is not None and owner.payload_digest != digest:
                    raise IdempotencyConflict(index, existing)
                same_as.append(existing)
            elif key and key in seen:
                if seen[key].record.payload_digest != digest:
                    raise IdempotencyConflict(index, "")
                same_as.append(seen[key].record.task_id)
            else:
                if key:
                    seen[key] = new
                same_as.append(None)
        outcomes: list[SubmitOutcome] = []
        for new, original in zip(tasks, same_as, strict=True):
            if original is not None:
                outcomes.append(SubmitOutcome(original, True))
                continue
            t.seq += 1
            task_id = new.record.task_id
            written = decode_task(encode_task(new.record, SUBMIT_FIELDS))  # what the script writes
            t.tasks[task_id] = replace(written, seq=t.seq, state=PENDING, attempt=0)
            t.payloads[task_id] = (new.args_json, new.kwargs_json)
            t.pending[task_id] = t.seq
            t.count(PENDING, 1)
            if new.record.idempotency_key:
                t.idempotency[new.record.idempotency_key] = task_id
            outcomes.append(SubmitOutcome(task_id, False, t.seq))
        return outcomes

    async def get(self, task_id: str) -> TaskRecord | None:
        return self.t.tasks.get(task_id)

    async def load(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        return [self.t.tasks[i] for i in task_ids if i in self.t.tasks]

    async def payload(self, task_id: str) -> tuple[str, str]:
        args_json, kwargs_json = self.t.payloads.get(task_id, ("", ""))
        return args_json or "[]", kwargs_json or "{}"

    async def dispatch(
        self, requests: Sequence[HandOutRequest], now: float, inline_limit: int
    ) -> list[DispatchOutcome | None]:
        t = self.t
        outcomes: list[DispatchOutcome | None] = []
        for request in requests:
            task_id = request.task_id
            task = t.tasks.get(task_id)
            if task is None or task.state is not PENDING:
                outcomes.append(None)
                continue
            task = t.tasks[task_id] = replace(
                task, attempt=task.attempt + 1, state=DISPATCHED, worker_id=request.worker_id,
                dispatched_at=now, published=False, gpu_index=request.gpu_index,
                served_queue=request.served_queue, started_at=0.0, progress=0.0, progress_message="",
                reason=request.reason,
            )
            del t.pending[task_id]
            t.inflight[request.worker_id].add(task_id)
            t.fences[task_id] = str(task.attempt)
            t.count(PENDING, -1)
            t.count(DISPATCHED, 1)
            if task.payload_bytes <= inline_limit:
                outcomes.append(DispatchOutcome(task, *await self.payload(task_id)))
            else:
                outcomes.append(DispatchOutcome(task, None, None))
        return outcomes

    async def mark_published(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            if task_id in self.t.tasks:
                self.t.tasks[task_id] = replace(self.t.tasks[task_id], published=True)

    async def apply(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention
    ) -> list[TaskRecord | None]:
        return [self._apply(event, outcome) for event, outcome in zip(events, outcomes, strict=True)]

    def _apply(self, event: LifecycleEvent, outcome: FailureOutcome | None) -> TaskRecord | None:
        t, fields, ts = self.t, event.fields, event.ts
        task = t.tasks.get(event.task_id)
        if task is None or task.attempt != event.attempt:
            return None
        if event.kind == EventKind.STARTED:
            if task.state is not DISPATCHED:
                return None
            t.count(DISPATCHED, -1)
            t.count(RUNNING, 1)
            t.stat(task.queue, "wait_sum", ts - task.submitted_at)
            t.stat(task.queue, "wait_count", 1)
            return self._put(replace(task, state=RUNNING, started_at=ts))
        if event.kind == EventKind.PROGRESS:
            if task.state not in IN_FLIGHT_STATES:
                return None
            return self._put(replace(task, progress=float(fields.get("progress") or 0),
                                     progress_message=fields.get("message", "")))
        if event.kind not in (EventKind.SUCCEEDED, EventKind.FAILED) or task.state not in IN_FLIGHT_STATES:
            return None
        started = task.started_at or ts
        t.inflight[task.worker_id].discard(task.task_id)
        t.fences.pop(task.task_id, None)
        t.count(task.state, -1)
        t.stat(task.queue, "run_sum", max(0.0, ts - started))
        t.stat(task.queue, "run_count", 1)
        task = replace(task, served_queue="", started_at=started)
        if event.kind == EventKind.SUCCEEDED:
            t.count(TaskState.SUCCEEDED, 1)
            t.stat(task.queue, "completed", 1)
            return self._put(replace(task, state=TaskState.SUCCEEDED, finished_at=ts, progress=1.0,
                                     result_json=fields.get("result_json", "null")))
        outcome = outcome or FailureOutcome(FailureAction.FAIL, 0.0, "")
        task = replace(task, failures=task.failures + 1, error=fields.get("error", ""),
                       traceback=fields.get("traceback", ""), error_type=fields.get("error_type", ""),
                       reason=outcome.reason)
        if outcome.action is FailureAction.RETRY:
            t.retry[task.task_id] = outcome.next_attempt_at
            t.count(TaskState.RETRYING, 1)
            t.stat(task.queue, "retried", 1)
            return self._put(replace(task, state=TaskState.RETRYING, next_attempt_at=outcome.next_attempt_at,
                                     worker_id="", progress=0.0, progress_message=""))
        end = TaskState.DEAD_LETTERED if outcome.action is FailureAction.DEAD_LETTER else TaskState.FAILED
        if end is TaskState.DEAD_LETTERED:
            t.dead[task.task_id] = ts
        t.count(end, 1)
        t.stat(task.queue, "failed", 1)
        return self._put(replace(task, state=end, finished_at=ts))

    def _put(self, task: TaskRecord) -> TaskRecord:
        self.t.tasks[task.task_id] = task
        return task

    async def requeue(self, task_id: str, worker_id: str, reason: str) -> TaskRecord | None:
        t = self.t
        t.inflight[worker_id].discard(task_id)
        task = t.tasks.get(task_id)
        if task is None or task.state not in IN_FLIGHT_STATES or task.worker_id != worker_id:
            return None
        t.fences[task_id] = FENCE_REQUEUED
        t.pending[task_id] = task.seq
        t.count(task.state, -1)
        t.count(PENDING, 1)
        return self._put(replace(task, state=PENDING, worker_id="", reason=reason, progress=0.0,
                                 progress_message="", started_at=0.0, dispatched_at=0.0, gpu_index=None,
                                 served_queue=""))

    async def cancel(self, task_id: str, now: float, reason: str, result_ttl_seconds: float) -> CancelOutcome:
        t = self.t
        task = t.tasks.get(task_id)
        if task is None:
            return CancelOutcome(CancelStatus.MISSING, None, None)
        if task.state in TERMINAL_STATES:
            return CancelOutcome(CancelStatus.TERMINAL, task.state, task)
        previous = task.state
        if previous in IN_FLIGHT_STATES:
            t.inflight[task.worker_id].discard(task_id)
        t.pending.pop(task_id, None)
        t.retry.pop(task_id, None)
        t.fences[task_id] = FENCE_CANCELLED
        t.count(previous, -1)
        t.count(TaskState.CANCELLED, 1)
        t.stat(task.queue, "cancelled", 1)
        task = self._put(replace(task, state=TaskState.CANCELLED, finished_at=now, reason=reason, served_queue=""))
        return CancelOutcome(CancelStatus.OK, previous, task)

    async def promote(self, task_id: str, from_state: TaskState, reason: str) -> TaskRecord | None:
        t = self.t
        (t.retry if from_state is TaskState.RETRYING else t.dead).pop(task_id, None)
        task = t.tasks.get(task_id)
        if task is None or task.state is not from_state:
            return None
        task = replace(task, state=PENDING, reason=reason, next_attempt_at=0.0, worker_id="")
        if from_state is TaskState.DEAD_LETTERED:
            task = replace(task, failures=0, finished_at=0.0, error="", traceback="", error_type="")
        t.pending[task_id] = task.seq
        t.count(from_state, -1)
        t.count(PENDING, 1)
        return self._put(task)


class FakeIndexStore:
    """What the zsets, sets and hashes of FakeState answer to reads."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def pending_ids(self) -> list[str]:
        return sorted(self.t.pending, key=lambda i: (self.t.pending[i], i))

    async def in_flight_ledgers(self) -> dict[str, set[str]]:
        return {worker: set(ids) for worker, ids in self.t.inflight.items() if ids}

    async def due_retries(self, now: float, limit: int = 500) -> list[str]:
        due = sorted((at, i) for i, at in self.t.retry.items() if at <= now)
        return [i for _at, i in due[:limit]]

    async def dead_letters(self) -> list[tuple[str, float]]:
        return [(i, at) for at, i in sorted(((at, i) for i, at in self.t.dead.items()), reverse=True)]

    async def purge_dead_letters(self, task_ids: Sequence[str]) -> int:
        t = self.t
        purged = 0
        for task_id in task_ids:
            t.dead.pop(task_id, None)
            task = t.tasks.get(task_id)
            if task is not None and task.state is TaskState.DEAD_LETTERED:
                del t.tasks[task_id]
                t.payloads.pop(task_id, None)
                t.fences.pop(task_id, None)
                t.count(TaskState.DEAD_LETTERED, -1)
                purged += 1
        return purged

    async def counts(self) -> dict[str, int]:
        return dict(self.t.counts)

    async def queue_stats(self, queues: Sequence[str]) -> dict[str, dict[str, float]]:
        return {queue: dict(self.t.stats.get(queue, {})) for queue in queues}


class FakeControlStore:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def paused_queues(self) -> set[str]:
        return set(self.t.paused)

    async def set_paused(self, queue: str, paused: bool) -> None:
        if paused:
            self.t.paused.add(queue)
        else:
            self.t.paused.discard(queue)

    async def remember_worker(self, worker: WorkerRecord) -> None:
        self.t.workers[worker.worker_id] = worker

    async def known_workers(self) -> dict[str, WorkerRecord]:
        return dict(self.t.workers)


class FakeEventLog:
    """The lifecycle stream, read by one consumer group (workers append through FakeState)."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def ensure_group(self) -> None:
        """The group always exists here (the real log recreates a lost one the same way)."""

    async def read(self, *, backlog: bool, count: int = 500, block_ms: int = 500) -> list[LifecycleEvent]:
        t = self.t
        if backlog:
            return [_event(i, entry) for i, entry in list(t.unacked.items())[:count]]
        waited = 0
        while t.delivered == len(t.stream) and waited < block_ms:
            await asyncio.sleep(0.01)
            waited += 10
        fresh = t.stream[t.delivered : t.delivered + count]
        t.delivered += len(fresh)
        t.unacked.update(fresh)
        return [_event(i, entry) for i, entry in fresh]

    async def ack(self, stream_ids: Sequence[str]) -> None:
        for stream_id in stream_ids:
            self.t.unacked.pop(stream_id, None)


def _event(stream_id: str, entry: dict[str, str]) -> LifecycleEvent:
    attempt = entry.get("attempt", "")
    return LifecycleEvent(stream_id, entry.get("type", ""), entry.get("task_id", ""),
                          int(attempt) if attempt.isdigit() else 0, entry.get("worker_id", ""),
                          float(entry.get("ts") or 0), entry)


class FakeState:
    """All durable state in memory (shared with no other instance), and a worker's view of it."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.tasks: TaskStore = FakeTaskStore(self.tables)
        self.indexes: IndexStore = FakeIndexStore(self.tables)
        self.controls: ControlStore = FakeControlStore(self.tables)
        self.events: EventLog = FakeEventLog(self.tables)

    # --- the worker's side: its fenced claim and its reports ----------------------------

    def claim(self, task_id: str, attempt: int, worker_id: str, ts: float) -> bool:
        """The worker's fenced claim (claim.lua): only the current attempt starts, and only once."""
        if self.tables.fences.get(task_id) != str(attempt):
            return False
        self.tables.fences[task_id] = fence_started(attempt)
        self.report(EventKind.STARTED, task_id, attempt, worker_id, ts)
        return True

    def report(self, kind: str, task_id: str, attempt: int, worker_id: str, ts: float, **fields: str) -> str:
        """Append a report to the lifecycle stream as a worker's agent does; returns its stream id."""
        stream = self.tables.stream
        stream_id = f"{len(stream) + 1}-0"
        stream.append((stream_id, {"type": kind, "task_id": task_id, "attempt": str(attempt),
                                   "worker_id": worker_id, "ts": repr(ts), **fields}))
        return stream_id

    def fence(self, task_id: str) -> str | None:
        """Which attempt of the task may start (`P:fence:<id>`); None when there is no fence."""
        return self.tables.fences.get(task_id)

    async def close(self) -> None:
        """Nothing to release: the state lives as long as the object."""
