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

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from redis import exceptions as redis_errors
from switchyard.redis_urls import aclose_client
from switchyard.wire import EVENTS_GROUP, worker_queue

from scheduler.state import records
from scheduler.state.connection import Connection, ReplicaWait, StorePart, guarded
from scheduler.state.interface import (
    ControlStore,
    EventLog,
    IndexStore,
    LifecycleEvent,
    Started,
    TaskStore,
)
from scheduler.state.lease import RedisLease
from scheduler.state.records import WorkerRecord
from scheduler.state.reports import ensure_group, int_or_zero, lost_group, read_command, reports_of
from scheduler.state.tasks import RedisTaskStore

_PURGE_CHUNK = 500
"""Dead letters deleted per script call, so one call never blocks Redis for long."""

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
            purged += int(await self._scripts.purge_dead(keys=[keys.dead_letters, keys.tasks], args=[keys.task(""), *chunk]))
        return purged

    @guarded
    async def newest_tasks(self, before_seq: int, count: int, *, pending_only: bool = False) -> list[tuple[str, int]]:
        """(task id, seq) of kept (or pending) tasks submitted before `before_seq` (0: from the
        newest), newest first: one ZREVRANGEBYSCORE of `P:tasks` (or `P:pending`)."""
        key = self._keys.pending if pending_only else self._keys.tasks
        newest = f"({before_seq}" if before_seq > 0 else "+inf"
        rows: Any = await self._redis.zrevrangebyscore(key, newest, "-inf", start=0, num=count, withscores=True)
        return [(str(member), int(score)) for member, score in rows]

    @guarded
    async def sweep_task_index(self, after_seq: int, count: int, submitted_before: float) -> tuple[int, int]:
        """Drop `P:tasks` entries whose task hash expired, looking at `count` entries after
        `after_seq` up to the first one submitted at or after `submitted_before`: one
        ZRANGEBYSCORE and one pipeline of HMGET id, submitted_at (`id` is written whatever its
        value, so a missing one is a hash that is gone; a missing submitted_at, left out at its
        default, reads as old). Not one script, and needs none: a
        task id never comes back once its hash is gone (ids are never reused), so an entry found
        dangling stays dangling until removed."""
        keys = self._keys
        rows: Any = await self._redis.zrangebyscore(keys.tasks, f"({after_seq}", "+inf", start=0, num=count,
                                                    withscores=True)
        if not rows:
            return 0, 0
        pipe = self._redis.pipeline(transaction=False)
        for member, _score in rows:
            pipe.hmget(keys.task(str(member)), ["id", "submitted_at"])
        gone: list[str] = []
        next_after = int(rows[-1][1]) if len(rows) == count else 0
        for (member, _score), (stored_id, submitted) in zip(rows, await pipe.execute(), strict=True):
            if stored_id is None:
                gone.append(str(member))
            elif submitted and float(submitted) >= submitted_before:
                next_after = 0  # too young to have expired, and so is everything after it
                break
        if gone:
            self._conn.fence.check()
            await self._redis.zrem(keys.tasks, *gone)
        return next_after, len(gone)

    @guarded
    async def queue_stats(self, queues: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per queue: completed, failed, cancelled, retried, wait/run sums and counts."""
        pipe = self._redis.pipeline(transaction=False)
        for queue in queues:
            pipe.hgetall(self._keys.stats(queue))
        rows = await pipe.execute()
        return {q: {str(k): float(v) for k, v in row.items()} for q, row in zip(queues, rows, strict=True)}

    @guarded
    async def add_stats(self, deltas: Mapping[str, Mapping[str, float]]) -> None:
        """Add per-queue counter deltas in one round trip."""
        self._conn.fence.check()
        pipe = self._redis.pipeline(transaction=False)
        for queue, row in deltas.items():
            for name, amount in row.items():
                if name.endswith("_sum"):
                    pipe.hincrbyfloat(self._keys.stats(queue), name, amount)
                else:
                    pipe.hincrby(self._keys.stats(queue), name, int(amount))
        await pipe.execute()


class RedisControlStore(StorePart):
    """Paused queues and worker registrations that survive a restart (`ControlStore`)."""

    @guarded
    async def paused_queues(self) -> set[str]:
        """Names of the queues an operator paused."""
        return {str(x) for x in await self._redis.smembers(self._keys.paused)}

    @guarded
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue durably."""
        self._conn.fence.check()
        if paused:
            await self._redis.sadd(self._keys.paused, queue)
        else:
            await self._redis.srem(self._keys.paused, queue)

    @guarded
    async def remember_worker(self, worker: WorkerRecord) -> None:
        """Keep a worker's latest registration (a restart needs it to rebuild that worker's ledger)."""
        self._conn.fence.check()
        await self._redis.hset(self._keys.workers, worker.worker_id, records.encode_worker(worker))

    @guarded
    async def known_workers(self) -> dict[str, WorkerRecord]:
        """Every worker that ever registered, by id."""
        raw = await self._redis.hgetall(self._keys.workers)
        return {str(k): records.decode_worker(str(k), str(v)) for k, v in raw.items()}

    @guarded
    async def purge_worker_queue(self, worker_id: str) -> int:
        """Drop what still waits in a lost worker's Celery queue (its attempts are fenced anyway)."""
        self._conn.fence.check()
        queue = worker_queue(worker_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.delete(queue)
        waiting, _deleted = await pipe.execute()
        return int(waiting)


class RedisEventLog(StorePart):
    """The lifecycle stream workers report into, read by one consumer group (`EventLog`)."""

    @guarded
    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        await ensure_group(self._conn)

    @guarded
    async def read(self, *, backlog: bool, count: int = 500, block_ms: int = 500) -> list[LifecycleEvent]:
        """Next reports; backlog=True re-reads those delivered but never acknowledged."""
        command = read_command(self._keys, backlog=backlog, count=count, block_ms=block_ms)
        try:
            reply = await self._conn.stream_lane.execute(*command)
        except redis_errors.ResponseError as exc:
            if not lost_group(exc):
                raise
            await ensure_group(self._conn)
            reply = await self._conn.stream_lane.execute(*command)
        return reports_of(reply)

    @guarded
    async def ack(self, stream_ids: Sequence[str]) -> None:
        """Acknowledge entries that are not reports (apply acknowledges the reports)."""
        if stream_ids:
            await self._redis.xack(self._keys.events, EVENTS_GROUP, *stream_ids)

    async def started(self) -> AsyncIterator[Started]:
        """Claims as workers announce them on the notify channel; ends when the connection drops
        (raising StateUnavailable), so the caller resubscribes. Best effort by design: the task
        record already says the attempt runs."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await self._subscribe(pubsub)
            while True:
                message = await self._next_message(pubsub)
                if message is None:
                    continue
                parts = str(message.get("data", "")).split(" ")
                if len(parts) == 4 and parts[0] == "started":
                    yield Started(parts[1], int_or_zero(parts[2]), parts[3])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    @guarded
    async def _subscribe(self, pubsub: Any) -> None:
        await pubsub.subscribe(self._keys.notify)

    @guarded
    async def _next_message(self, pubsub: Any) -> Any:
        return await pubsub.get_message(timeout=1.0)


class RedisState(StorePart):
    """All durable state the engine uses (`State`), over one Redis connection pool."""

    def __init__(self, redis_url: str, prefix: str, replica_wait: ReplicaWait | None = None) -> None:
        super().__init__(Connection(redis_url, prefix, replica_wait))
        self.tasks: TaskStore = RedisTaskStore(self._conn)
        self.indexes: IndexStore = RedisIndexStore(self._conn)
        self.controls: ControlStore = RedisControlStore(self._conn)
        self.events: EventLog = RedisEventLog(self._conn)
        self.lease = RedisLease(self._conn)
        self.fence = self._conn.fence

    @property
    def location(self) -> str:
        """The Redis URL without credentials (for logs and health reports)."""
        return self._conn.location

    @property
    def replica_timeouts(self) -> int:
        """Submissions answered before the replicas `submit_wait_replicas` asks for had them."""
        return self._conn.replica_wait.timeouts

    async def close(self) -> None:
        """Close the connection pool (and the connections to the Sentinels, if any)."""
        await self._conn.lane.aclose()
        await self._conn.stream_lane.aclose()
        await aclose_client(self._redis)

    @guarded
    async def ping(self) -> bool:
        """True when Redis answers; raises StateUnavailable when it cannot be reached."""
        return bool(await self._redis.ping())
