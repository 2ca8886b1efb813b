"""The scheduler's durable state in Redis.

`RedisState` implements `scheduler.state.interface.State` as four small parts sharing one
connection (`connection.py`, which also words outages). Every task transition is one Lua script from `scripts/` (one file per operation,
registered with `register_script`, so NOSCRIPT after a Redis restart heals itself); every key
name comes from `switchyard.wire.Keys`; every task hash goes through `records` once.

A Redis that cannot be reached surfaces as `scheduler.errors.StateUnavailable` from every
public method, whose message names the server (never its password) and says the request can
be retried.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

from redis import exceptions as redis_errors
from switchyard.wire import EVENTS_GROUP, FENCE_CANCELLED, FENCE_REQUEUED

from scheduler.core.model import TaskState
from scheduler.state import records
from scheduler.state.connection import Connection, StorePart, guarded
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
from scheduler.state.records import TaskRecord, WorkerRecord

EVENTS_CONSUMER = "scheduler-1"
"""Consumer name within the events group (one leader reads at a time)."""

CANCEL_FENCE_TTL_SECONDS = 7 * 86400
"""How long a cancelled task's fence outlives it: long enough that a message of it still
waiting in a worker's queue (kombu redelivers after its visibility timeout) is refused."""

_PURGE_CHUNK = 500
"""Dead letters deleted per script call, so one call never blocks Redis for long."""

((_PUBLISHED_FIELD, _PUBLISHED_VALUE),) = records.encode_task(
    TaskRecord("", "", "", published=True), ("published",)
).items()
"""The task field (and value) that marks a hand-out's message as published, by the one codec."""


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    """A flat HGETALL reply from a script as a mapping."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _task_or_none(reply: Any) -> TaskRecord | None:
    """A script's task reply as a record; None where the script refused (returned false)."""
    return records.decode_task(_pairs(reply)) if reply else None


class RedisTaskStore(StorePart):
    """Task records and their transitions (`TaskStore`)."""

    @guarded
    async def submit(self, tasks: Sequence[NewTask], idempotency_ttl_seconds: int) -> list[SubmitOutcome]:
        """Write all tasks (and idempotency keys) atomically; raise IdempotencyConflict for none written."""
        keys = self._keys
        args: list[Any] = [keys.task(""), keys.payload(""), keys.idempotency(""),
                           idempotency_ttl_seconds, len(tasks)]
        for task in tasks:
            record = task.record
            flat = [x for pair in records.encode_task(record, records.SUBMIT_FIELDS).items() for x in pair]
            args += [record.task_id, record.idempotency_key, record.payload_digest,
                     task.args_json, task.kwargs_json, len(flat), *flat]
        reply = await self._scripts.submit(keys=[keys.seq, keys.pending, keys.counts], args=args)
        if reply[0] == "conflict":
            raise IdempotencyConflict(int(reply[1]), str(reply[2]))
        return [
            SubmitOutcome(task_id=str(reply[i]), deduplicated=reply[i + 1] == "-1",
                          seq=max(0, int(reply[i + 1])))
            for i in range(1, len(reply), 2)
        ]

    @guarded
    async def get(self, task_id: str) -> TaskRecord | None:
        """The task's record, or None when it does not exist (or has expired)."""
        raw = cast(dict[str, str], await self._redis.hgetall(self._keys.task(task_id)))
        return records.decode_task(raw) if raw else None

    @guarded
    async def load(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        """Records of many ids in one round trip (missing ones are skipped)."""
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(self._keys.task(task_id))
        return [records.decode_task(cast(dict[str, str], raw)) for raw in await pipe.execute() if raw]

    @guarded
    async def payload(self, task_id: str) -> tuple[str, str]:
        """(args_json, kwargs_json) as stored once at submission."""
        args_json, kwargs_json = await self._redis.hmget(self._keys.payload(task_id), "args_json", "kwargs_json")
        return str(args_json or "[]"), str(kwargs_json or "{}")

    @guarded
    async def dispatch(
        self, requests: Sequence[HandOutRequest], now: float, inline_limit: int
    ) -> list[DispatchOutcome | None]:
        """Commit many hand-outs in one round trip; each is its own atomic script, so each is
        committed or not on its own (None where the task was no longer pending)."""
        keys = self._keys
        pipe = self._redis.pipeline(transaction=False)
        for request in requests:
            task_id, worker_id = request.task_id, request.worker_id
            await self._scripts.dispatch(
                keys=[keys.task(task_id), keys.payload(task_id), keys.pending, keys.inflight(worker_id),
                      keys.fence(task_id), keys.counts],
                args=[task_id, worker_id, repr(now), "" if request.gpu_index is None else request.gpu_index,
                      inline_limit, request.reason, request.served_queue],
                client=pipe,
            )
        outcomes: list[DispatchOutcome | None] = []
        for reply in await pipe.execute():
            if not reply:
                outcomes.append(None)
                continue
            payload = reply[1]
            outcomes.append(DispatchOutcome(
                records.decode_task(_pairs(reply[0])),
                str(payload[0] or "[]") if payload else None,
                str(payload[1] or "{}") if payload else None,
            ))
        return outcomes

    @guarded
    async def mark_published(self, task_ids: Iterable[str]) -> None:
        """Record that these hand-outs' Celery messages were published (recovery re-publishes the rest)."""
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hset(self._keys.task(task_id), _PUBLISHED_FIELD, _PUBLISHED_VALUE)
        await pipe.execute()

    @guarded
    async def apply(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention
    ) -> list[TaskRecord | None]:
        """Apply reports in one round trip, each its own script fenced by attempt; the task after
        each, or None when it was stale. `outcomes[i]` is what a failed report turns into (None: fail)."""
        pipe = self._redis.pipeline(transaction=False)
        for event, outcome in zip(events, outcomes, strict=True):
            await self._scripts.apply_event(
                keys=self._event_keys(event.task_id), args=self._event_args(event, outcome, retention),
                client=pipe,
            )
        return [_task_or_none(reply) for reply in await pipe.execute()]

    def _event_keys(self, task_id: str) -> list[str]:
        keys = self._keys
        return [keys.task(task_id), keys.payload(task_id), keys.fence(task_id), keys.counts,
                keys.retry, keys.dead_letters]

    def _event_args(self, event: LifecycleEvent, outcome: FailureOutcome | None, retention: Retention) -> list[Any]:
        fields = event.fields
        if event.kind == EventKind.SUCCEEDED:
            first, second = fields.get("result_json", "null"), ""
        elif event.kind == EventKind.FAILED:
            first, second = fields.get("error", ""), fields.get("traceback", "")
        elif event.kind == EventKind.PROGRESS:
            first, second = fields.get("progress", "0"), fields.get("message", "")
        else:
            first, second = "", ""
        outcome = outcome or FailureOutcome(FailureAction.FAIL, 0.0, "")
        # The script compares attempts as text, so the attempt goes as the decimal the
        # dispatch script's HINCRBY stored.
        return [self._keys.inflight(""), self._keys.stats(""), event.task_id, event.kind,
                str(event.attempt), repr(event.ts), first, second, fields.get("error_type", ""),
                outcome.action.value, repr(outcome.next_attempt_at),
                max(1, int(retention.result_ttl_seconds)), max(1, int(retention.dead_letter_ttl_seconds)),
                outcome.reason]

    @guarded
    async def requeue(self, task_id: str, worker_id: str, reason: str) -> TaskRecord | None:
        """A lost worker's attempt back to pending, its fence moved on; None if not in flight there."""
        keys = self._keys
        reply = await self._scripts.requeue(
            keys=[keys.task(task_id), keys.inflight(worker_id), keys.fence(task_id), keys.pending, keys.counts],
            args=[task_id, worker_id, reason, FENCE_REQUEUED],
        )
        return _task_or_none(reply)

    @guarded
    async def cancel(self, task_id: str, now: float, reason: str, result_ttl_seconds: float) -> CancelOutcome:
        """Cancel a task that has not finished (a finished one comes back as TERMINAL, unchanged)."""
        keys = self._keys
        reply = await self._scripts.cancel(
            keys=[keys.task(task_id), keys.payload(task_id), keys.fence(task_id), keys.pending,
                  keys.retry, keys.counts],
            args=[keys.inflight(""), keys.stats(""), task_id, repr(now), reason, FENCE_CANCELLED,
                  CANCEL_FENCE_TTL_SECONDS, max(1, int(result_ttl_seconds))],
        )
        status = CancelStatus(reply[0])
        if status is CancelStatus.MISSING:
            return CancelOutcome(status, None, None)
        return CancelOutcome(status, TaskState(reply[1]), records.decode_task(_pairs(reply[2])))

    @guarded
    async def promote(self, task_id: str, from_state: TaskState, reason: str) -> TaskRecord | None:
        """A due retry or a replayed dead letter back to pending; None if not in `from_state`."""
        keys = self._keys
        index = keys.retry if from_state == TaskState.RETRYING else keys.dead_letters
        reply = await self._scripts.promote(
            keys=[keys.task(task_id), keys.payload(task_id), keys.pending, keys.counts, index],
            args=[task_id, from_state.value, reason],
        )
        return _task_or_none(reply)


class RedisIndexStore(StorePart):
    """Indexes over tasks: pending, ledgers, retries, dead letters, statistics (`IndexStore`)."""

    @guarded
    async def pending_ids(self) -> list[str]:
        """Pending task ids in submission order."""
        return [str(x) for x in await self._redis.zrange(self._keys.pending, 0, -1)]

    @guarded
    async def in_flight_ledgers(self) -> dict[str, set[str]]:
        """Worker id -> ids of the tasks dispatched to or running on it."""
        ledgers: dict[str, set[str]] = {}
        prefix_length = len(self._keys.inflight(""))
        async for key in self._redis.scan_iter(match=self._keys.inflight_pattern, count=500):
            members = await self._redis.smembers(key)
            if members:
                ledgers[str(key)[prefix_length:]] = {str(m) for m in members}
        return ledgers

    @guarded
    async def due_retries(self, now: float, limit: int = 500) -> list[str]:
        """Retrying task ids whose next attempt is due at `now`, earliest first."""
        due = await self._redis.zrangebyscore(self._keys.retry, "-inf", now, start=0, num=limit)
        return [str(x) for x in due]

    @guarded
    async def dead_letters(self) -> list[tuple[str, float]]:
        """(task id, dead-lettered at), newest first."""
        rows: Any = await self._redis.zrange(self._keys.dead_letters, 0, -1, desc=True, withscores=True)
        return [(str(member), float(score)) for member, score in rows]

    @guarded
    async def purge_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Delete these dead letters for good; how many were still dead-lettered and went."""
        keys = self._keys
        purged = 0
        for start in range(0, len(task_ids), _PURGE_CHUNK):
            chunk = task_ids[start : start + _PURGE_CHUNK]
            purged += int(await self._scripts.purge_dead(
                keys=[keys.dead_letters, keys.counts],
                args=[keys.task(""), keys.payload(""), keys.fence(""), *chunk],
            ))
        return purged

    @guarded
    async def counts(self) -> dict[str, int]:
        """Tasks per state."""
        raw = await self._redis.hgetall(self._keys.counts)
        return {str(k): int(v) for k, v in raw.items()}

    @guarded
    async def queue_stats(self, queues: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per queue: completed, failed, cancelled, retried, wait/run sums and counts."""
        pipe = self._redis.pipeline(transaction=False)
        for queue in queues:
            pipe.hgetall(self._keys.stats(queue))
        rows = await pipe.execute()
        return {q: {str(k): float(v) for k, v in row.items()} for q, row in zip(queues, rows, strict=True)}


class RedisControlStore(StorePart):
    """Paused queues and worker registrations that survive a restart (`ControlStore`)."""

    @guarded
    async def paused_queues(self) -> set[str]:
        """Names of the queues an operator paused."""
        return {str(x) for x in await self._redis.smembers(self._keys.paused)}

    @guarded
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue durably."""
        if paused:
            await self._redis.sadd(self._keys.paused, queue)
        else:
            await self._redis.srem(self._keys.paused, queue)

    @guarded
    async def remember_worker(self, worker: WorkerRecord) -> None:
        """Keep a worker's latest registration (a restart needs it to rebuild that worker's ledger)."""
        await self._redis.hset(self._keys.workers, worker.worker_id, records.encode_worker(worker))

    @guarded
    async def known_workers(self) -> dict[str, WorkerRecord]:
        """Every worker that ever registered, by id."""
        raw = await self._redis.hgetall(self._keys.workers)
        return {str(k): records.decode_worker(str(k), str(v)) for k, v in raw.items()}


def _int_or_zero(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        return 0


def _time_or_zero(text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _event(stream_id: Any, fields: dict[str, str]) -> LifecycleEvent:
    """A stream entry as a report. A malformed attempt reads as 0, which no dispatched task
    has, so the report is dropped as stale rather than breaking the reader."""
    return LifecycleEvent(
        stream_id=str(stream_id), kind=fields.get("type", ""), task_id=fields.get("task_id", ""),
        attempt=_int_or_zero(fields.get("attempt")), worker_id=fields.get("worker_id", ""),
        ts=_time_or_zero(fields.get("ts")), fields=fields,
    )


class RedisEventLog(StorePart):
    """The lifecycle stream workers report into, read by one consumer group (`EventLog`)."""

    @guarded
    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self._redis.xgroup_create(self._keys.events, EVENTS_GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @guarded
    async def read(self, *, backlog: bool, count: int = 500, block_ms: int = 500) -> list[LifecycleEvent]:
        """Next reports; backlog=True re-reads those delivered but never acknowledged."""
        try:
            reply = await self._read(backlog=backlog, count=count, block_ms=block_ms)
        except redis_errors.ResponseError as exc:
            # A Redis that came back empty has lost the group: recreate it, or every read
            # after this fails the same way.
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            reply = await self._read(backlog=backlog, count=count, block_ms=block_ms)
        return [
            _event(stream_id, fields)
            for _stream, entries in reply or []
            for stream_id, fields in entries
            if fields
        ]

    async def _read(self, *, backlog: bool, count: int, block_ms: int) -> Any:
        return await self._redis.xreadgroup(
            EVENTS_GROUP, EVENTS_CONSUMER, {self._keys.events: "0" if backlog else ">"},
            count=count, block=None if backlog else block_ms,
        )

    @guarded
    async def ack(self, stream_ids: Sequence[str]) -> None:
        """Acknowledge applied reports and trim the stream behind them."""
        if stream_ids:
            pipe = self._redis.pipeline(transaction=False)
            pipe.xack(self._keys.events, EVENTS_GROUP, *stream_ids)
            # Entries older than the newest acknowledged one are done with; keep the stream short.
            pipe.xtrim(self._keys.events, minid=stream_ids[-1], approximate=True)
            await pipe.execute()


class RedisState(StorePart):
    """All durable state the engine uses (`State`), over one Redis connection pool."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        super().__init__(Connection(redis_url, prefix))
        self.tasks: TaskStore = RedisTaskStore(self._conn)
        self.indexes: IndexStore = RedisIndexStore(self._conn)
        self.controls: ControlStore = RedisControlStore(self._conn)
        self.events: EventLog = RedisEventLog(self._conn)

    @property
    def location(self) -> str:
        """The Redis URL without credentials (for logs and health reports)."""
        return self._conn.location

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    @guarded
    async def ping(self) -> bool:
        """True when Redis answers; raises StateUnavailable when it cannot be reached."""
        return bool(await self._redis.ping())
