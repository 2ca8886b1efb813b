"""An in-memory `scheduler.state.interface.State`, so the engine's unit tests need no Redis.

`FakeState` is a port of the Lua scripts in scheduler/state/scripts/ over the same data: a task is
a hash of text fields (metadata, state, fence and payload, as in Redis), read through
`records.decode_fields` exactly as the store's HMGET reads it; hand-outs put their Celery message
on the worker's queue as the script's LPUSH does (tests/integration/test_state_contract.py runs
the same scenarios against it and the real `RedisState` and compares what both hold). It also
plays a worker's side: `claim` does what switchyard/lua/claim.lua does (and announces the start
to `events.started()` subscribers), `report` what the agent's XADD does, `take` what a worker's
Celery consumer fetches.

Not modelled: key expiry (finished tasks and idempotency keys never expire here) and the stream's
trimming; a blocking read waits at most `block_ms` and then returns nothing, as Redis does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

from switchyard.wire import FENCE_STARTED_SUFFIX, PAYLOAD_FIELDS, worker_queue

from scheduler.state.interface import (
    ControlStore,
    EventLog,
    IndexStore,
    LifecycleEvent,
    Started,
    TaskStore,
)
from scheduler.state.records import WorkerRecord
from tests.support.celery_queue import QueuedMessage, decode_message
from tests.support.fake_tasks import FakeTaskStore, SubmitCall, Tables

__all__ = ["FakeState", "SubmitCall", "Tables"]


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
        """purge_dead.lua: only tasks still dead-lettered go (payload and fence with them)."""
        t = self.t
        purged = 0
        for task_id in task_ids:
            t.dead.pop(task_id, None)
            if t.hashes.get(task_id, {}).get("state") == "dead_lettered":
                del t.hashes[task_id]
                t.tasks.pop(task_id, None)
                purged += 1
        return purged

    async def newest_tasks(self, before_seq: int, count: int, *, pending_only: bool = False) -> list[tuple[str, int]]:
        """ZREVRANGEBYSCORE of P:tasks (or P:pending) below `before_seq`."""
        index = self.t.pending if pending_only else self.t.tasks
        rows = sorted(((seq, i) for i, seq in index.items() if not before_seq or seq < before_seq), reverse=True)
        return [(i, seq) for seq, i in rows[:count]]

    async def sweep_task_index(self, after_seq: int, count: int, submitted_before: float) -> tuple[int, int]:
        """Drop P:tasks entries whose hash is gone, `count` entries after `after_seq`, up to the
        first one submitted at or after `submitted_before`."""
        t = self.t
        rows = sorted((seq, i) for i, seq in t.tasks.items() if seq > after_seq)[:count]
        next_after = rows[-1][0] if rows and len(rows) == count else 0
        gone = []
        for _seq, task_id in rows:
            fields = t.hashes.get(task_id)
            if fields is None:
                gone.append(task_id)
            elif fields.get("submitted_at") and float(fields["submitted_at"]) >= submitted_before:
                next_after = 0
                break
        for task_id in gone:
            del t.tasks[task_id]
        return next_after, len(gone)

    async def queue_stats(self, queues: Sequence[str]) -> dict[str, dict[str, float]]:
        return {queue: dict(self.t.stats.get(queue, {})) for queue in queues}

    async def add_stats(self, deltas: Mapping[str, Mapping[str, float]]) -> None:
        """HINCRBYFLOAT for the sums, HINCRBY (whole numbers) for the counts."""
        for queue, row in deltas.items():
            stored = self.t.stats[queue]
            for name, amount in row.items():
                stored[name] = stored.get(name, 0.0) + (amount if name.endswith("_sum") else int(amount))


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

    async def purge_worker_queue(self, worker_id: str) -> int:
        self.t.purged.append(worker_id)
        return len(self.t.queues.pop(worker_queue(worker_id), []))


class FakeEventLog:
    """The lifecycle stream, read by one consumer group (workers append through FakeState), and
    the claims' notify channel."""

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

    async def started(self) -> AsyncIterator[Started]:
        """Starts announced by claims made while subscribed (subscribes on the first `anext`)."""
        heard: asyncio.Queue[Started] = asyncio.Queue()
        self.t.subscribers.append(heard)
        try:
            while True:
                yield await heard.get()
        finally:
            self.t.subscribers.remove(heard)


def _event(stream_id: str, entry: dict[str, str]) -> LifecycleEvent:
    attempt = entry.get("attempt", "")
    return LifecycleEvent(stream_id, entry.get("type", ""), entry.get("task_id", ""),
                          int(attempt) if attempt.isdigit() else 0, entry.get("worker_id", ""),
                          float(entry.get("ts") or 0), entry)


class FakeState:
    """All durable state in memory (shared with no other instance), and a worker's view of it."""

    def __init__(self) -> None:
        self.tables = Tables()
        tasks = FakeTaskStore(self.tables)
        self.tasks: TaskStore = tasks
        self.indexes: IndexStore = FakeIndexStore(self.tables)
        self.controls: ControlStore = FakeControlStore(self.tables)
        self.events: EventLog = FakeEventLog(self.tables)
        tasks.read_new = lambda: self.events.read(backlog=False)

    # --- the worker's side: its Celery queue, its fenced claim and its reports ---------------

    def queued(self, worker_id: str) -> list[QueuedMessage]:
        """What waits in the worker's Celery queue, in the order its consumer will fetch it."""
        return [decode_message(raw) for raw in reversed(self.tables.queues.get(worker_queue(worker_id), []))]

    def take(self, worker_id: str) -> list[QueuedMessage]:
        """What the worker's Celery consumer fetches now (its queue is then empty)."""
        waiting = self.queued(worker_id)
        self.tables.queues.pop(worker_queue(worker_id), None)
        return waiting

    def claim(self, task_id: str, attempt: int, worker_id: str, ts: float) -> bool:
        """The worker's fenced claim (claim.lua): only the current attempt starts, and only once;
        the start is recorded in the task and, when the task is watched, announced on the notify
        channel."""
        return self.claim_payload(task_id, attempt, worker_id, ts) is not None

    def claim_payload(self, task_id: str, attempt: int, worker_id: str, ts: float) -> tuple[str, str] | None:
        """claim.lua asked for the payload too (it travels by reference): None when refused."""
        task = self.tables.hashes.get(task_id)
        if task is None or task.get("fence") != str(attempt):
            return None
        task.update(fence=f"{attempt}{FENCE_STARTED_SUFFIX}", state="running", started_at=repr(ts))
        if task.get("watched") == "1":
            for heard in self.tables.subscribers:
                heard.put_nowait(Started(task_id, attempt, worker_id))
        args_json, kwargs_json = (task.get(name, "") for name in PAYLOAD_FIELDS)
        return args_json, kwargs_json

    def report(self, kind: str, task_id: str, attempt: int, worker_id: str, ts: float, **fields: str) -> str:
        """Append a report to the lifecycle stream as a worker's agent does; returns its stream id."""
        stream = self.tables.stream
        stream_id = f"{len(stream) + 1}-0"
        stream.append((stream_id, {"type": kind, "task_id": task_id, "attempt": str(attempt),
                                   "worker_id": worker_id, "ts": repr(ts), **fields}))
        return stream_id

    def fence(self, task_id: str) -> str | None:
        """The task hash's `fence` field: which attempt may start (None when there is none)."""
        return self.tables.hashes.get(task_id, {}).get("fence")

    def payload(self, task_id: str) -> tuple[str | None, str | None]:
        """The payload fields of the task hash (None where missing)."""
        task = self.tables.hashes.get(task_id, {})
        args_json, kwargs_json = (task.get(name) for name in PAYLOAD_FIELDS)
        return args_json, kwargs_json

    async def close(self) -> None:
        """Nothing to release: the state lives as long as the object."""
