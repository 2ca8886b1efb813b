"""Every Redis read and write of the scheduler; the only module that knows key names.

Each task state change is one Lua script, so it is atomic, and scripts are registered with
`register_script` so a Redis restart (NOSCRIPT) heals itself. Keys (prefix `P`, default "sy"):

    P:task:<id>        hash   task metadata and state (small; payload lives apart)
    P:payload:<id>     hash   args_json, kwargs_json, stored once
    P:pending          zset   pending task ids, scored by submission sequence
    P:seq              string global submission sequence
    P:inflight:<wid>   set    task ids dispatched to or running on a worker (the in-flight ledger)
    P:fence:<id>       string which attempt may start (see docs/wire-contract.md)
    P:events           stream lifecycle reports from workers, consumer group "scheduler"
    P:idem:<key>       string task id of an idempotency key (expires)
    P:paused           set    paused queue names
    P:workers          hash   worker id -> last registration (JSON), for restarts
    P:retry            zset   retrying task ids, scored by when they become pending again
    P:dlq              zset   dead-lettered task ids, scored by when they were dead-lettered
    P:counts           hash   number of tasks per state
    P:stats:<queue>    hash   completed/failed/cancelled counters, wait and run sums
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

EVENTS_GROUP = "scheduler"
EVENTS_CONSUMER = "scheduler-1"

_SUBMIT = """
-- ARGV: prefix, idem_ttl, n, then per task: id, idem_key, digest, args, kwargs, nfields, fields...
local p = ARGV[1]
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local items = {}
local pos = 4
for i = 1, n do
  local item = {id = ARGV[pos], idem = ARGV[pos + 1], digest = ARGV[pos + 2],
                args = ARGV[pos + 3], kwargs = ARGV[pos + 4]}
  local nf = tonumber(ARGV[pos + 5])
  item.fields = {}
  for j = 1, nf do item.fields[j] = ARGV[pos + 5 + j] end
  pos = pos + 6 + nf
  items[i] = item
end
-- First pass: decide duplicates and conflicts before writing anything (all or none).
local seen = {}
for i, item in ipairs(items) do
  if item.idem ~= '' then
    local existing = redis.call('GET', p .. ':idem:' .. item.idem)
    if existing then
      local digest = redis.call('HGET', p .. ':task:' .. existing, 'payload_digest')
      if digest and digest ~= item.digest then
        return {'conflict', tostring(i - 1), existing}
      end
      item.existing = existing
    elseif seen[item.idem] then
      if seen[item.idem].digest ~= item.digest then return {'conflict', tostring(i - 1), ''} end
      item.same_as = seen[item.idem]
    else
      seen[item.idem] = item
    end
  end
end
local out = {'ok'}
for i, item in ipairs(items) do
  if item.existing then
    table.insert(out, item.existing); table.insert(out, '-1')
  elseif item.same_as then
    table.insert(out, item.same_as.id); table.insert(out, '-1')
  else
    local seq = redis.call('INCR', p .. ':seq')
    local key = p .. ':task:' .. item.id
    redis.call('HSET', key, 'seq', seq, 'state', 'pending', 'attempt', 0, unpack(item.fields))
    redis.call('HSET', p .. ':payload:' .. item.id, 'args_json', item.args, 'kwargs_json', item.kwargs)
    redis.call('ZADD', p .. ':pending', seq, item.id)
    redis.call('HINCRBY', p .. ':counts', 'pending', 1)
    if item.idem ~= '' then redis.call('SET', p .. ':idem:' .. item.idem, item.id, 'EX', ttl) end
    table.insert(out, item.id); table.insert(out, tostring(seq))
  end
end
return out
"""

_DISPATCH = """
-- ARGV: prefix, task_id, worker, now, gpu_index, inline_limit, placement_reason
local p, id, worker = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':task:' .. id
if redis.call('HGET', key, 'state') ~= 'pending' then return false end
local attempt = redis.call('HINCRBY', key, 'attempt', 1)
redis.call('HSET', key, 'state', 'dispatched', 'worker', worker, 'dispatched_at', ARGV[4],
           'published', '0', 'gpu_index', ARGV[5], 'started_at', '', 'progress', '0',
           'progress_msg', '', 'reason', ARGV[7])
redis.call('ZREM', p .. ':pending', id)
redis.call('SADD', p .. ':inflight:' .. worker, id)
redis.call('SET', p .. ':fence:' .. id, tostring(attempt))
redis.call('HINCRBY', p .. ':counts', 'pending', -1)
redis.call('HINCRBY', p .. ':counts', 'dispatched', 1)
local payload = false
local size = tonumber(redis.call('HGET', key, 'payload_bytes') or '0')
if size <= tonumber(ARGV[6]) then
  payload = redis.call('HMGET', p .. ':payload:' .. id, 'args_json', 'kwargs_json')
end
return {redis.call('HGETALL', key), payload}
"""

_APPLY_EVENT = """
-- ARGV: prefix, task_id, type, attempt, worker, ts, a, b, error_type, action, next_at, result_ttl, dlq_ttl, reason
-- action (failed reports only): fail | retry | dead_letter, decided by the retry policy.
local p, id, kind, attempt, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[6]
local key = p .. ':task:' .. id
local cur = redis.call('HMGET', key, 'state', 'attempt', 'worker', 'queue', 'submitted_at', 'started_at')
local state, cur_attempt, worker, queue = cur[1], cur[2], cur[3], cur[4]
if not state or cur_attempt ~= attempt then return false end
local stats = p .. ':stats:' .. queue
if kind == 'started' then
  if state ~= 'dispatched' then return false end
  redis.call('HSET', key, 'state', 'running', 'started_at', ts)
  redis.call('HINCRBY', p .. ':counts', 'dispatched', -1)
  redis.call('HINCRBY', p .. ':counts', 'running', 1)
  redis.call('HINCRBYFLOAT', stats, 'wait_sum', tonumber(ts) - tonumber(cur[5]))
  redis.call('HINCRBY', stats, 'wait_count', 1)
  return redis.call('HGETALL', key)
end
if kind == 'progress' then
  if state ~= 'running' and state ~= 'dispatched' then return false end
  redis.call('HSET', key, 'progress', ARGV[7], 'progress_msg', ARGV[8])
  return redis.call('HGETALL', key)
end
if kind ~= 'succeeded' and kind ~= 'failed' then return false end
if state ~= 'running' and state ~= 'dispatched' then return false end
local started = cur[6]
if not started or started == '' then started = ts end
redis.call('SREM', p .. ':inflight:' .. worker, id)
redis.call('DEL', p .. ':fence:' .. id)
redis.call('HINCRBY', p .. ':counts', state, -1)
redis.call('HINCRBYFLOAT', stats, 'run_sum', math.max(0, tonumber(ts) - tonumber(started)))
redis.call('HINCRBY', stats, 'run_count', 1)
local payload = p .. ':payload:' .. id
if kind == 'succeeded' then
  redis.call('HSET', key, 'state', 'succeeded', 'finished_at', ts, 'started_at', started,
             'result_json', ARGV[7], 'progress', '1')
  redis.call('HINCRBY', p .. ':counts', 'succeeded', 1)
  redis.call('HINCRBY', stats, 'completed', 1)
  redis.call('EXPIRE', key, ARGV[12]); redis.call('EXPIRE', payload, ARGV[12])
  return redis.call('HGETALL', key)
end
local action = ARGV[10]
redis.call('HINCRBY', key, 'failures', 1)
redis.call('HSET', key, 'error', ARGV[7], 'traceback', ARGV[8], 'error_type', ARGV[9],
           'started_at', started, 'reason', ARGV[14])
if action == 'retry' then
  redis.call('HSET', key, 'state', 'retrying', 'next_attempt_at', ARGV[11], 'worker', '',
             'progress', '0', 'progress_msg', '')
  redis.call('ZADD', p .. ':retry', ARGV[11], id)
  redis.call('HINCRBY', p .. ':counts', 'retrying', 1)
  redis.call('HINCRBY', stats, 'retried', 1)
elseif action == 'dead_letter' then
  redis.call('HSET', key, 'state', 'dead_lettered', 'finished_at', ts)
  redis.call('ZADD', p .. ':dlq', ts, id)
  redis.call('HINCRBY', p .. ':counts', 'dead_lettered', 1)
  redis.call('HINCRBY', stats, 'failed', 1)
  redis.call('EXPIRE', key, ARGV[13]); redis.call('EXPIRE', payload, ARGV[13])
else
  redis.call('HSET', key, 'state', 'failed', 'finished_at', ts)
  redis.call('HINCRBY', p .. ':counts', 'failed', 1)
  redis.call('HINCRBY', stats, 'failed', 1)
  redis.call('EXPIRE', key, ARGV[12]); redis.call('EXPIRE', payload, ARGV[12])
end
return redis.call('HGETALL', key)
"""

_PROMOTE = """
-- Move a task back to pending: a due retry (from = 'retrying') or a replayed dead letter
-- (from = 'dead_lettered', which also resets its failure count).
-- ARGV: prefix, task_id, from, reason
local p, id, from = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':task:' .. id
local zset = from == 'retrying' and (p .. ':retry') or (p .. ':dlq')
redis.call('ZREM', zset, id)
local cur = redis.call('HMGET', key, 'state', 'seq')
if cur[1] ~= from then return false end
redis.call('HSET', key, 'state', 'pending', 'reason', ARGV[4], 'next_attempt_at', '', 'worker', '')
if from == 'dead_lettered' then
  redis.call('HSET', key, 'failures', 0, 'finished_at', '', 'error', '', 'traceback', '', 'error_type', '')
  redis.call('PERSIST', key); redis.call('PERSIST', p .. ':payload:' .. id)
end
redis.call('ZADD', p .. ':pending', cur[2], id)
redis.call('HINCRBY', p .. ':counts', from, -1)
redis.call('HINCRBY', p .. ':counts', 'pending', 1)
return redis.call('HGETALL', key)
"""

_PURGE_DEAD = """
-- ARGV: prefix, task_id...  Deletes dead letters (only tasks still dead-lettered).
local p = ARGV[1]
local purged = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = p .. ':task:' .. id
  redis.call('ZREM', p .. ':dlq', id)
  if redis.call('HGET', key, 'state') == 'dead_lettered' then
    redis.call('DEL', key, p .. ':payload:' .. id, p .. ':fence:' .. id)
    redis.call('HINCRBY', p .. ':counts', 'dead_lettered', -1)
    purged = purged + 1
  end
end
return purged
"""

_REQUEUE = """
-- ARGV: prefix, task_id, worker, reason
local p, id, worker = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':task:' .. id
redis.call('SREM', p .. ':inflight:' .. worker, id)
local cur = redis.call('HMGET', key, 'state', 'worker', 'seq')
local state = cur[1]
if (state ~= 'dispatched' and state ~= 'running') or cur[2] ~= worker then return false end
redis.call('HSET', key, 'state', 'pending', 'worker', '', 'reason', ARGV[4], 'progress', '0',
           'progress_msg', '', 'started_at', '', 'dispatched_at', '', 'gpu_index', '')
redis.call('SET', p .. ':fence:' .. id, 'requeued')
redis.call('ZADD', p .. ':pending', cur[3], id)
redis.call('HINCRBY', p .. ':counts', state, -1)
redis.call('HINCRBY', p .. ':counts', 'pending', 1)
return redis.call('HGETALL', key)
"""

_CANCEL = """
-- ARGV: prefix, task_id, now, reason, fence_ttl, result_ttl
local p, id = ARGV[1], ARGV[2]
local key = p .. ':task:' .. id
local cur = redis.call('HMGET', key, 'state', 'worker', 'queue')
local state = cur[1]
if not state then return {'missing'} end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' or state == 'dead_lettered' then
  return {'terminal', state, redis.call('HGETALL', key)}
end
if state == 'pending' or state == 'retrying' then
  redis.call('ZREM', p .. ':pending', id)
else
  redis.call('SREM', p .. ':inflight:' .. cur[2], id)
end
redis.call('SET', p .. ':fence:' .. id, 'cancelled', 'EX', tonumber(ARGV[5]))
redis.call('HSET', key, 'state', 'cancelled', 'finished_at', ARGV[3], 'reason', ARGV[4])
redis.call('HINCRBY', p .. ':counts', state, -1)
redis.call('HINCRBY', p .. ':counts', 'cancelled', 1)
redis.call('HINCRBY', p .. ':stats:' .. cur[3], 'cancelled', 1)
if state == 'retrying' then redis.call('ZREM', p .. ':retry', id) end
redis.call('EXPIRE', key, ARGV[6]); redis.call('EXPIRE', p .. ':payload:' .. id, ARGV[6])
return {'ok', state, redis.call('HGETALL', key)}
"""


class IdempotencyConflict(Exception):
    """An idempotency key is already bound to a different payload."""

    def __init__(self, index: int, existing_task_id: str) -> None:
        super().__init__(index, existing_task_id)
        self.index = index
        self.existing_task_id = existing_task_id


@dataclass(frozen=True)
class NewTask:
    """What the store writes for one accepted submission."""

    task_id: str
    fields: Mapping[str, str]
    """Task hash fields (metadata; never the payload)."""
    args_json: str
    kwargs_json: str
    idempotency_key: str
    payload_digest: str


@dataclass(frozen=True)
class SubmitOutcome:
    task_id: str
    deduplicated: bool
    seq: int = 0
    """Submission sequence of a new task (0 for a deduplicated one)."""


@dataclass(frozen=True)
class DispatchOutcome:
    """A committed hand-out; payload is None when it travels by reference."""

    task: dict[str, str]
    args_json: str | None
    kwargs_json: str | None


@dataclass(frozen=True)
class LifecycleEvent:
    """One report read from the lifecycle stream."""

    stream_id: str
    kind: str
    task_id: str
    attempt: str
    worker_id: str
    ts: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class FailureOutcome:
    """What a failed report turns into, as the retry policy decided."""

    action: str
    """'fail', 'retry' or 'dead_letter'."""
    next_attempt_at: float
    reason: str


@dataclass(frozen=True)
class CancelOutcome:
    status: str
    """'ok', 'terminal' or 'missing'."""
    previous_state: str
    task: dict[str, str]


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


class Store:
    """Async access to the scheduler's durable state in Redis."""

    def __init__(self, redis_url: str, prefix: str = "sy") -> None:
        self.prefix = prefix
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, decode_responses=True, health_check_interval=10,
            socket_keepalive=True, retry_on_timeout=True,
        )
        self._submit = self.redis.register_script(_SUBMIT)
        self._dispatch = self.redis.register_script(_DISPATCH)
        self._apply_event = self.redis.register_script(_APPLY_EVENT)
        self._requeue = self.redis.register_script(_REQUEUE)
        self._cancel = self.redis.register_script(_CANCEL)
        self._promote = self.redis.register_script(_PROMOTE)
        self._purge_dead = self.redis.register_script(_PURGE_DEAD)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def events_key(self) -> str:
        return self.key("events")

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # --- submissions -------------------------------------------------------------------

    async def submit(self, tasks: Sequence[NewTask], idempotency_ttl_seconds: int) -> list[SubmitOutcome]:
        """Write all tasks (and idempotency keys) atomically; raise IdempotencyConflict for none written."""
        args: list[Any] = [self.prefix, idempotency_ttl_seconds, len(tasks)]
        for task in tasks:
            flat = [x for pair in task.fields.items() for x in pair]
            args += [task.task_id, task.idempotency_key, task.payload_digest,
                     task.args_json, task.kwargs_json, len(flat), *flat]
        reply = await self._submit(keys=[], args=args)
        if reply[0] == "conflict":
            raise IdempotencyConflict(int(reply[1]), str(reply[2]))
        return [
            SubmitOutcome(task_id=str(reply[i]), deduplicated=reply[i + 1] == "-1",
                          seq=max(0, int(reply[i + 1])))
            for i in range(1, len(reply), 2)
        ]

    # --- reads ------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> dict[str, str] | None:
        data = cast(dict[str, str], await self.redis.hgetall(self.key("task", task_id)))
        return data or None

    async def get_payload(self, task_id: str) -> tuple[str, str]:
        args_json, kwargs_json = await self.redis.hmget(self.key("payload", task_id), "args_json", "kwargs_json")
        return str(args_json or "[]"), str(kwargs_json or "{}")

    async def load_tasks(self, task_ids: Iterable[str]) -> list[dict[str, str]]:
        """Task hashes of many ids in one round trip (missing ones are skipped)."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(self.key("task", task_id))
        return [cast(dict[str, str], row) for row in await pipe.execute() if row]

    async def pending_ids(self) -> list[str]:
        return [str(x) for x in await self.redis.zrange(self.key("pending"), 0, -1)]

    async def in_flight_ledgers(self) -> dict[str, set[str]]:
        """Worker id -> task ids in its durable in-flight ledger."""
        ledgers: dict[str, set[str]] = {}
        prefix = self.key("inflight", "")
        async for key in self.redis.scan_iter(match=prefix + "*", count=500):
            members = await self.redis.smembers(key)
            if members:
                ledgers[str(key)[len(prefix):]] = {str(m) for m in members}
        return ledgers

    async def counts(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.key("counts"))
        return {str(k): int(v) for k, v in raw.items()}

    async def queue_stats(self, queues: Sequence[str]) -> dict[str, dict[str, float]]:
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.hgetall(self.key("stats", queue))
        rows = await pipe.execute()
        return {q: {str(k): float(v) for k, v in row.items()} for q, row in zip(queues, rows, strict=True)}

    # --- transitions ------------------------------------------------------------------

    async def dispatch_many(
        self, hand_outs: Sequence[tuple[str, str, int | None, str]], now: float, inline_limit: int,
    ) -> list[DispatchOutcome | None]:
        """Commit many hand-outs (task id, worker id, GPU index, reason) in one round trip; each
        is its own atomic script, so each is committed or not on its own."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id, worker_id, gpu_index, reason in hand_outs:
            await self._dispatch(
                keys=[], args=[self.prefix, task_id, worker_id, repr(now),
                               "" if gpu_index is None else gpu_index, inline_limit, reason],
                client=pipe,
            )
        outcomes: list[DispatchOutcome | None] = []
        for reply in await pipe.execute():
            if not reply:
                outcomes.append(None)
                continue
            payload = reply[1]
            outcomes.append(DispatchOutcome(
                _pairs(reply[0]),
                str(payload[0] or "[]") if payload else None,
                str(payload[1] or "{}") if payload else None,
            ))
        return outcomes

    async def mark_published(self, task_ids: Iterable[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hset(self.key("task", task_id), "published", "1")
        await pipe.execute()

    def _event_args(self, event: LifecycleEvent, outcome: FailureOutcome | None,
                    result_ttl_seconds: float, dead_letter_ttl_seconds: float) -> list[Any]:
        if event.kind == "succeeded":
            a, b = event.fields.get("result_json", "null"), ""
        elif event.kind == "failed":
            a, b = event.fields.get("error", ""), event.fields.get("traceback", "")
        elif event.kind == "progress":
            a, b = event.fields.get("progress", "0"), event.fields.get("message", "")
        else:
            a, b = "", ""
        outcome = outcome or FailureOutcome("fail", 0.0, "")
        return [self.prefix, event.task_id, event.kind, event.attempt, event.worker_id, event.ts,
                a, b, event.fields.get("error_type", ""), outcome.action, repr(outcome.next_attempt_at),
                max(1, int(result_ttl_seconds)), max(1, int(dead_letter_ttl_seconds)), outcome.reason]

    async def apply_event(
        self, event: LifecycleEvent, *, outcome: FailureOutcome | None = None,
        result_ttl_seconds: float = 7 * 86400, dead_letter_ttl_seconds: float = 7 * 86400,
    ) -> dict[str, str] | None:
        """Apply a worker report, fenced by attempt; the task after it, or None when it was stale.

        A `failed` report needs `outcome`: what the retry policy decided (fail, retry, dead letter).
        """
        reply = await self._apply_event(
            keys=[], args=self._event_args(event, outcome, result_ttl_seconds, dead_letter_ttl_seconds)
        )
        return _pairs(reply) if reply else None

    async def apply_events(
        self, events: Sequence[LifecycleEvent], *,
        result_ttl_seconds: float = 7 * 86400, dead_letter_ttl_seconds: float = 7 * 86400,
    ) -> list[dict[str, str] | None]:
        """Apply many reports (not `failed` ones) in one round trip; each is still its own atomic script."""
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            await self._apply_event(
                keys=[], args=self._event_args(event, None, result_ttl_seconds, dead_letter_ttl_seconds),
                client=pipe,
            )
        replies = await pipe.execute()
        return [_pairs(reply) if reply else None for reply in replies]

    async def due_retries(self, now: float, limit: int = 500) -> list[str]:
        return [str(x) for x in await self.redis.zrangebyscore(self.key("retry"), "-inf", now, start=0, num=limit)]

    async def promote(self, task_id: str, from_state: str, reason: str) -> dict[str, str] | None:
        """A due retry or a replayed dead letter back to pending (atomic); None if it was not in that state."""
        reply = await self._promote(keys=[], args=[self.prefix, task_id, from_state, reason])
        return _pairs(reply) if reply else None

    async def dead_letters(self, *, newest_first: bool = True) -> list[tuple[str, float]]:
        """(task id, dead-lettered at) for every dead letter."""
        rows: Any = await self.redis.zrange(self.key("dlq"), 0, -1, desc=newest_first, withscores=True)
        return [(str(member), float(score)) for member, score in rows]

    async def purge_dead_letters(self, task_ids: Sequence[str]) -> int:
        purged = 0
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start : start + 500]
            purged += int(await self._purge_dead(keys=[], args=[self.prefix, *chunk]))
        return purged

    async def requeue(self, task_id: str, worker_id: str, reason: str) -> dict[str, str] | None:
        """Move a task of a lost worker back to pending and fence its old attempt."""
        reply = await self._requeue(keys=[], args=[self.prefix, task_id, worker_id, reason])
        return _pairs(reply) if reply else None

    async def cancel(self, task_id: str, now: float, reason: str, result_ttl_seconds: float = 7 * 86400) -> CancelOutcome:
        reply = await self._cancel(keys=[], args=[self.prefix, task_id, repr(now), reason, 7 * 86400,
                                                  max(1, int(result_ttl_seconds))])
        if reply[0] == "missing":
            return CancelOutcome("missing", "", {})
        return CancelOutcome(str(reply[0]), str(reply[1]), _pairs(reply[2]))

    # --- queues and workers -----------------------------------------------------------

    async def paused_queues(self) -> set[str]:
        return {str(x) for x in await self.redis.smembers(self.key("paused"))}

    async def set_paused(self, queue: str, paused: bool) -> None:
        if paused:
            await self.redis.sadd(self.key("paused"), queue)
        else:
            await self.redis.srem(self.key("paused"), queue)

    async def remember_worker(self, worker_id: str, registration: Mapping[str, Any]) -> None:
        await self.redis.hset(self.key("workers"), worker_id, json.dumps(registration))

    async def known_workers(self) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.key("workers"))
        return {str(k): json.loads(v) for k, v in raw.items()}

    # --- lifecycle stream -------------------------------------------------------------

    async def ensure_events_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.events_key, EVENTS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_events(self, *, backlog: bool, count: int = 500, block_ms: int = 500) -> list[LifecycleEvent]:
        """Next lifecycle reports; backlog=True re-reads ones delivered but never acknowledged."""
        reply: Any = await self.redis.xreadgroup(
            EVENTS_GROUP, EVENTS_CONSUMER, {self.events_key: "0" if backlog else ">"},
            count=count, block=None if backlog else block_ms,
        )
        events: list[LifecycleEvent] = []
        for _stream, entries in reply or []:
            for stream_id, fields in entries:
                if not fields:
                    continue
                events.append(LifecycleEvent(
                    stream_id=str(stream_id), kind=fields.get("type", ""),
                    task_id=fields.get("task_id", ""), attempt=fields.get("attempt", ""),
                    worker_id=fields.get("worker_id", ""), ts=fields.get("ts", "0"), fields=fields,
                ))
        return events

    async def ack_events(self, stream_ids: Sequence[str]) -> None:
        if stream_ids:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(self.events_key, EVENTS_GROUP, *stream_ids)
            # Entries older than the newest acknowledged one are done with; keep the stream short.
            pipe.xtrim(self.events_key, minid=stream_ids[-1], approximate=True)
            await pipe.execute()
