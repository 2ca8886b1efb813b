"""The task scripts of scheduler/state/scripts/ ported to Python over in-memory tables: what
`FakeState` (tests/support/fake_state.py) holds, and its `TaskStore`.

Each method follows its script line by line over the same text fields the script reads and
writes (`records` decodes them, as the store does after its HMGET), so the fake and Redis differ
in speed only; tests/integration/test_state_contract.py holds them to that.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from switchyard.wire import FENCE_CANCELLED, FENCE_REQUEUED, FENCE_STARTED_SUFFIX, PAYLOAD_FIELDS

from scheduler.core.model import TaskState
from scheduler.dispatch import EMPTY_MSGPACK_BODY
from scheduler.state.interface import (
    Applied,
    CancelOutcome,
    CancelStatus,
    EventKind,
    FailureAction,
    FailureOutcome,
    HandOutRequest,
    IdempotencyConflict,
    LifecycleEvent,
    NewTask,
    NextReports,
    Reclaim,
    Retention,
    Started,
    SubmitGroup,
    SubmitOutcome,
)
from scheduler.state.records import (
    CELERY_BODY_FIELD,
    RECORD_FIELDS,
    TaskRecord,
    WorkerRecord,
    decode_fields,
    encode_submitted,
)
from tests.support.celery_queue import message_text

IN_FLIGHT = ("dispatched", "running")
TERMINAL = ("succeeded", "failed", "cancelled", "dead_lettered")


@dataclass
class SubmitCall:
    """One call of `tasks.submit`, as the engine made it."""

    groups: list[list[str]]
    """Task ids of each group."""
    hand_outs: list[str]
    """Task ids handed out in the same round trip (sync match)."""


@dataclass
class Tables:
    """Everything a FakeState holds: one field per Redis key (family) of switchyard.wire.Keys."""

    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    """P:task:<id>: every field as text (payload and fence included)."""
    pending: dict[str, int] = field(default_factory=dict)
    """Task id -> submission sequence (the zset's score)."""
    seq: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    """P:tasks: every kept task id -> submission sequence (entries outlive expired hashes until swept)."""
    inflight: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    idempotency: dict[str, str] = field(default_factory=dict)
    retry: dict[str, float] = field(default_factory=dict)
    dead: dict[str, float] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    paused: set[str] = field(default_factory=set)
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    queues: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """Celery queue (list) -> its messages, left to right: LPUSH adds at 0, the consumer pops the end."""
    stream: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    delivered: int = 0
    """How many stream entries the consumer group has been given."""
    unacked: dict[str, dict[str, str]] = field(default_factory=dict)
    subscribers: list[asyncio.Queue[Started]] = field(default_factory=list)
    """P:notify subscribers (pub/sub: only those subscribed when a claim runs hear of it)."""
    # What the engine did, for tests to look at (no Redis key behind these):
    submits: list[SubmitCall] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    """Workers whose Celery queue was purged, in order."""
    completions: list[list[str]] = field(default_factory=list)
    """Task ids handed out by each `apply_then_dispatch` that carried hand-outs (completion match)."""
    reads_sent: int = 0
    """Reads of new reports sent with a round (`apply_dispatch_and_read`)."""
    reads_dropped: int = 0
    """Of those, the ones given up unread."""

    def record(self, task_id: str) -> TaskRecord | None:
        """The record as the store reads it (HMGET of RECORD_FIELDS)."""
        task = self.hashes.get(task_id, {})
        return decode_fields([task.get(name) for name in RECORD_FIELDS])


def _report_values(event: LifecycleEvent) -> tuple[str, str]:
    """The two kind-specific values a report carries into apply.lua."""
    fields = event.fields
    if event.kind == EventKind.SUCCEEDED:
        return fields.get("result_json", "null"), ""
    if event.kind == EventKind.FAILED:
        return fields.get("error", ""), fields.get("traceback", "")
    if event.kind == EventKind.PROGRESS:
        return fields.get("progress", "0"), fields.get("message", "")
    return "", ""


def _lua_number(seconds: float) -> float:
    """`tostring(math.max(0, seconds))` in the script, read back: Lua 5.1 prints 14 significant digits."""
    return float(f"{max(0.0, seconds):.14g}")


class FakeNextReports:
    """A read of new reports sent with a round (`NextReports`): here it reads when waited for."""

    def __init__(self, read: Callable[[], Awaitable[list[LifecycleEvent]]], tables: Tables) -> None:
        self._read, self.t = read, tables

    async def wait(self) -> list[LifecycleEvent]:
        return await self._read()

    def drop(self) -> None:
        self.t.reads_dropped += 1


class FakeTaskStore:
    """submit.lua, dispatch.lua, apply.lua, requeue.lua (and its start-deadline variant,
    `reclaim_unstarted`, `reclaim_unreported`), cancel.lua and promote.lua."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables
        self.read_new: Callable[[], Awaitable[list[LifecycleEvent]]] | None = None
        """The event log's read of new reports (FakeState wires it in)."""

    async def submit(
        self, groups: Sequence[SubmitGroup], idempotency_ttl_seconds: int,
        hand_outs: Sequence[HandOutRequest] = (), now: float = 0.0,
    ) -> tuple[list[list[SubmitOutcome] | IdempotencyConflict], list[bool]]:
        """submit.lua for every group, then (pipelined after it) dispatch.lua for `hand_outs`."""
        self.t.submits.append(SubmitCall([[n.record.task_id for n in g] for g in groups],
                                         [r.task_id for r in hand_outs]))
        results: list[list[SubmitOutcome] | IdempotencyConflict] = []
        for group in groups:
            plan = self._plan(group)
            results.append(plan if isinstance(plan, IdempotencyConflict) else self._write(group, plan))
        return results, self._dispatch(hand_outs, now) if hand_outs else []

    def _plan(self, group: SubmitGroup) -> list[str | None] | IdempotencyConflict:
        """Decide duplicates and conflicts before writing anything (the group is all or none):
        per task, the task it duplicates, or None for a new one."""
        t = self.t
        same_as: list[str | None] = []
        seen: dict[str, NewTask] = {}
        for index, new in enumerate(group):
            key, digest = new.record.idempotency_key, new.record.payload_digest
            original: str | None = None
            if key:
                existing = t.idempotency.get(key)
                if existing is not None:
                    owner_digest = t.hashes.get(existing, {}).get("payload_digest")
                    if owner_digest is not None and owner_digest != digest:
                        return IdempotencyConflict(index, existing)
                    original = existing
                elif key in seen:
                    if seen[key].record.payload_digest != digest:
                        return IdempotencyConflict(index, "")
                    original = seen[key].record.task_id
                else:
                    seen[key] = new
            same_as.append(original)
        return same_as

    def _write(self, group: SubmitGroup, same_as: list[str | None]) -> list[SubmitOutcome]:
        t = self.t
        outcomes: list[SubmitOutcome] = []
        for new, original in zip(group, same_as, strict=True):
            if original is not None:
                outcomes.append(SubmitOutcome(original, True))
                continue
            t.seq += 1
            record = new.record
            task = t.hashes.setdefault(record.task_id, {})
            task.update(seq=str(t.seq), state="pending", attempt="0")
            flat = encode_submitted(record)
            task.update(zip(flat[::2], flat[1::2], strict=True))
            task.update(zip(PAYLOAD_FIELDS, (new.args_json, new.kwargs_json), strict=True))
            if new.celery_body:
                task[CELERY_BODY_FIELD] = new.celery_body
            if record.idempotency_key:
                t.idempotency[record.idempotency_key] = record.task_id
            t.pending[record.task_id] = t.seq
            t.tasks[record.task_id] = t.seq
            outcomes.append(SubmitOutcome(record.task_id, False, t.seq))
        return outcomes

    async def get(self, task_id: str) -> TaskRecord | None:
        return self.t.record(task_id)

    async def load(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        return [r for task_id in task_ids if (r := self.t.record(task_id)) is not None]

    async def watch(self, task_id: str) -> None:
        task = self.t.hashes.get(task_id)
        if task is not None:
            task["watched"] = "1"

    async def dispatch(self, requests: Sequence[HandOutRequest], now: float) -> list[bool]:
        return self._dispatch(requests, now) if requests else []

    def _dispatch(self, requests: Sequence[HandOutRequest], now: float) -> list[bool]:
        """dispatch.lua: commit each hand-out still pending at attempt - 1, queue its message."""
        t = self.t
        handed: list[bool] = []
        by_queue: dict[str, list[str]] = defaultdict(list)
        for r in requests:
            task = t.hashes.get(r.task_id, {})
            body_missing = (r.envelope.serializer == "msgpack" and not r.by_reference
                            and CELERY_BODY_FIELD not in task)
            if task.get("state") != "pending" or int(task.get("attempt") or "0") + 1 != r.attempt or body_missing:
                handed.append(False)
                continue
            task.update(state="dispatched", worker=r.worker_id, attempt=str(r.attempt), fence=str(r.attempt),
                        dispatched_at=repr(now), gpu_index="" if r.gpu_index is None else str(r.gpu_index),
                        served_queue=r.served_queue, started_at="", progress="0", progress_msg="",
                        reason=r.reason)
            args_json, kwargs_json = "[]", "{}"
            if not r.by_reference:
                args_json, kwargs_json = task.get("args_json", "[]"), task.get("kwargs_json", "{}")
            celery_body = None
            if r.envelope.serializer == "msgpack":
                celery_body = EMPTY_MSGPACK_BODY if r.by_reference else task[CELERY_BODY_FIELD]
            by_queue[r.envelope.queue].append(message_text(r.envelope, args_json, kwargs_json, celery_body))
            t.pending.pop(r.task_id, None)
            t.inflight[r.worker_id].add(r.task_id)
            handed.append(True)
        for queue, messages in by_queue.items():
            for message in messages:  # LPUSH: the consumer pops the other end, in round order
                t.queues[queue].insert(0, message)
        return handed

    async def apply(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention
    ) -> list[Applied | None]:
        """apply.lua: every report fenced by attempt, then ledgers and acknowledgements."""
        t = self.t
        leaving: dict[str, list[str]] = defaultdict(list)
        applied = [self._apply(event, outcome, leaving) for event, outcome in zip(events, outcomes, strict=True)]
        for worker, task_ids in leaving.items():
            t.inflight[worker].difference_update(task_ids)
        for event in events:
            t.unacked.pop(event.stream_id, None)
        return applied

    async def apply_then_dispatch(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention,
        hand_outs: Sequence[HandOutRequest], now: float,
    ) -> tuple[list[Applied | None], list[bool]]:
        """apply.lua, then (pipelined after it) dispatch.lua for `hand_outs`."""
        applied = await self.apply(events, outcomes, retention)
        if not hand_outs:
            return applied, []
        self.t.completions.append([r.task_id for r in hand_outs])
        return applied, self._dispatch(hand_outs, now)

    async def apply_dispatch_and_read(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention,
        hand_outs: Sequence[HandOutRequest], now: float,
    ) -> tuple[list[Applied | None], list[bool], NextReports]:
        """`apply_then_dispatch`, and the next read of new reports (it reads when waited for)."""
        if self.read_new is None:
            raise AssertionError("FakeState wires the event log's read in")
        applied, handed = await self.apply_then_dispatch(events, outcomes, retention, hand_outs, now)
        self.t.reads_sent += 1
        return applied, handed, FakeNextReports(self.read_new, self.t)

    def _apply(self, event: LifecycleEvent, outcome: FailureOutcome | None,
               leaving: dict[str, list[str]]) -> Applied | None:
        task = self.t.hashes.get(event.task_id, {})
        state, worker, queue = task.get("state"), task.get("worker", ""), task.get("queue", "")
        if state is None or task.get("attempt") != str(event.attempt):
            return None
        first, second = _report_values(event)
        ts = repr(event.ts)
        if event.kind == EventKind.PROGRESS:
            if state not in IN_FLIGHT:
                return None
            task.update(progress=first, progress_msg=second)
            return Applied(TaskState(state), queue, worker)
        if event.kind == EventKind.STARTED:
            if state != "dispatched":
                return None
            task.update(state="running", started_at=ts, fence=f"{event.attempt}{FENCE_STARTED_SUFFIX}")
            return Applied(TaskState.RUNNING, queue, worker)
        if event.kind not in (EventKind.SUCCEEDED, EventKind.FAILED) or state not in IN_FLIGHT:
            return None
        started = task.get("started_at") or ts
        leaving[worker].append(event.task_id)
        waited = _lua_number(float(started) - float(task.get("submitted_at", started)))
        ran = _lua_number(float(ts) - float(started))
        if event.kind == EventKind.SUCCEEDED:
            task.update(state="succeeded", finished_at=ts, started_at=started, result_json=first, progress="1",
                        served_queue="", fence="")
            return Applied(TaskState.SUCCEEDED, queue, worker, waited, ran)
        outcome = outcome or FailureOutcome(FailureAction.FAIL, 0.0, "")
        task["failures"] = str(int(task.get("failures") or "0") + 1)
        task.update(error=first, traceback=second, error_type=event.fields.get("error_type", ""),
                    started_at=started, reason=outcome.reason, served_queue="", fence="")
        if outcome.action is FailureAction.RETRY:
            next_at = repr(outcome.next_attempt_at)
            task.update(state="retrying", next_attempt_at=next_at, worker="", progress="0", progress_msg="")
            self.t.retry[event.task_id] = float(next_at)
            return Applied(TaskState.RETRYING, queue, worker, waited, ran)
        if outcome.action is FailureAction.DEAD_LETTER:
            task.update(state="dead_lettered", finished_at=ts)
            self.t.dead[event.task_id] = float(ts)
            return Applied(TaskState.DEAD_LETTERED, queue, worker, waited, ran)
        task.update(state="failed", finished_at=ts)
        return Applied(TaskState.FAILED, queue, worker, waited, ran)

    async def requeue(self, task_id: str, worker_id: str, reason: str) -> TaskRecord | None:
        """requeue.lua, then the record read in the same round trip."""
        t = self.t
        t.inflight[worker_id].discard(task_id)
        task = t.hashes.get(task_id, {})
        if task.get("state") not in IN_FLIGHT or task.get("worker") != worker_id:
            return None
        return self._to_pending(task_id, task, reason)

    async def reclaim_unstarted(self, reclaim: Reclaim, result_ttl_seconds: float) -> TaskRecord | None:
        """requeue.lua for a hand-out that missed its start deadline, then the record read."""
        t = self.t
        task_id, worker_id = reclaim.task_id, reclaim.worker_id
        task = t.hashes.get(task_id, {})
        if (task.get("state"), task.get("worker"), task.get("attempt")) != ("dispatched", worker_id,
                                                                            str(reclaim.attempt)):
            return None
        t.inflight[worker_id].discard(task_id)
        if reclaim.fail_at is not None:
            task.update(state="failed", finished_at=repr(reclaim.fail_at), reason=reclaim.reason,
                        error=reclaim.reason, error_type=reclaim.error_type, served_queue="", fence="")
            return t.record(task_id)
        task["start_returns"] = str(int(task.get("start_returns") or "0") + 1)
        return self._to_pending(task_id, task, reclaim.reason)

    async def reclaim_unreported(self, task_id: str, worker_id: str, attempt: int, reason: str) -> TaskRecord | None:
        """requeue.lua for a running attempt its worker no longer reports, then the record read."""
        t = self.t
        task = t.hashes.get(task_id, {})
        if (task.get("state"), task.get("worker"), task.get("attempt")) != ("running", worker_id, str(attempt)):
            return None
        t.inflight[worker_id].discard(task_id)
        return self._to_pending(task_id, task, reason)

    def _to_pending(self, task_id: str, task: dict[str, str], reason: str) -> TaskRecord:
        """requeue.lua's common end: the attempt back to pending, its fence moved on."""
        task.update(state="pending", worker="", reason=reason, progress="0", progress_msg="", started_at="",
                    dispatched_at="", gpu_index="", served_queue="", fence=FENCE_REQUEUED)
        self.t.pending[task_id] = int(task["seq"])
        return self.t.record(task_id)

    async def cancel(self, task_id: str, now: float, reason: str, result_ttl_seconds: float) -> CancelOutcome:
        """cancel.lua, then the record read in the same round trip."""
        t = self.t
        task = t.hashes.get(task_id, {})
        state = task.get("state")
        if state is None:
            return CancelOutcome(CancelStatus.MISSING, None, None)
        if state in TERMINAL:
            return CancelOutcome(CancelStatus.TERMINAL, TaskState(state), t.record(task_id))
        if state == "pending":
            t.pending.pop(task_id, None)
        elif state == "retrying":
            t.retry.pop(task_id, None)
        else:
            t.inflight[task.get("worker", "")].discard(task_id)
        task.update(state="cancelled", finished_at=repr(now), reason=reason, served_queue="", fence=FENCE_CANCELLED)
        row = t.stats[task.get("queue", "")]
        row["cancelled"] = row.get("cancelled", 0.0) + 1
        return CancelOutcome(CancelStatus.OK, TaskState(state), t.record(task_id))

    async def promote(self, task_id: str, from_state: TaskState, reason: str) -> TaskRecord | None:
        """promote.lua, then the record read in the same round trip."""
        t = self.t
        (t.retry if from_state is TaskState.RETRYING else t.dead).pop(task_id, None)
        task = t.hashes.get(task_id, {})
        if task.get("state") != from_state.value:
            return None
        task.update(state="pending", reason=reason, next_attempt_at="", worker="")
        if from_state is TaskState.DEAD_LETTERED:
            task.update(failures="0", finished_at="", error="", traceback="", error_type="")
        t.pending[task_id] = int(task["seq"])
        return t.record(task_id)
