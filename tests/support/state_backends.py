"""The two `State` implementations as tests/integration/test_state_contract.py drives them:
each with the worker's side of it (its Celery queue, the fenced claim, reports appended to the
lifecycle stream, the notify channel's subscribers, the consumer group's unacknowledged entries),
read the same way for both, so a scenario and the final comparison cannot tell them apart."""

from __future__ import annotations

from typing import Protocol

import redis.asyncio as aioredis
from switchyard.wire import EVENTS_GROUP, PAYLOAD_FIELDS, Keys, claim_script, worker_queue

from scheduler.state.interface import State
from scheduler.state.store import RedisState
from tests.support.celery_queue import QueuedMessage, decode_message
from tests.support.fake_state import FakeState


class Backend(Protocol):
    """One implementation of State, plus the worker's side: its queue, fences and stream."""

    state: State

    async def claim(self, task_id: str, attempt: int, worker_id: str, ts: float) -> bool: ...
    async def report(self, kind: str, task_id: str, attempt: int, worker_id: str, ts: float, **fields: str) -> None: ...
    async def fence(self, task_id: str) -> str | None: ...
    async def payload(self, task_id: str) -> tuple[str | None, str | None]: ...
    async def queued(self, worker_id: str) -> list[QueuedMessage]: ...
    async def subscribers(self) -> int: ...
    async def unacked(self) -> int: ...
    async def expire(self, task_id: str) -> None:
        """What Redis does when the task's retention runs out: its hash goes, index entries stay."""
    async def close(self) -> None: ...


class FakeBackend:
    def __init__(self) -> None:
        self.fake = FakeState()
        self.state: State = self.fake

    async def claim(self, task_id: str, attempt: int, worker_id: str, ts: float) -> bool:
        return self.fake.claim(task_id, attempt, worker_id, ts)

    async def report(self, kind: str, task_id: str, attempt: int, worker_id: str, ts: float, **fields: str) -> None:
        self.fake.report(kind, task_id, attempt, worker_id, ts, **fields)

    async def fence(self, task_id: str) -> str | None:
        return self.fake.fence(task_id)

    async def payload(self, task_id: str) -> tuple[str | None, str | None]:
        return self.fake.payload(task_id)

    async def queued(self, worker_id: str) -> list[QueuedMessage]:
        return self.fake.queued(worker_id)

    async def subscribers(self) -> int:
        return len(self.fake.tables.subscribers)

    async def unacked(self) -> int:
        return len(self.fake.tables.unacked)

    async def expire(self, task_id: str) -> None:
        del self.fake.tables.hashes[task_id]

    async def close(self) -> None:
        await self.fake.close()


class RedisBackend:
    """RedisState, with a worker that reads its Celery list, claims through the shipped claim
    script and XADDs reports."""

    def __init__(self, url: str) -> None:
        self.state: State = RedisState(url, "sy")
        self.keys = Keys("sy")
        self.redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._claim = self.redis.register_script(claim_script())

    async def claim(self, task_id: str, attempt: int, worker_id: str, ts: float) -> bool:
        keys = [self.keys.task(task_id), self.keys.notify]
        return await self._claim(keys=keys, args=[str(attempt), worker_id, task_id, repr(ts), "0"]) == 1

    async def report(self, kind: str, task_id: str, attempt: int, worker_id: str, ts: float, **fields: str) -> None:
        entry = {"type": kind, "task_id": task_id, "attempt": str(attempt), "worker_id": worker_id,
                 "ts": repr(ts), **fields}
        await self.redis.xadd(self.keys.events, entry)  # type: ignore[arg-type]

    async def fence(self, task_id: str) -> str | None:
        value = await self.redis.hget(self.keys.task(task_id), "fence")  # type: ignore[misc]
        return None if value is None else str(value)

    async def payload(self, task_id: str) -> tuple[str | None, str | None]:
        args_json, kwargs_json = await self.redis.hmget(self.keys.task(task_id), PAYLOAD_FIELDS)  # type: ignore[misc]
        return args_json, kwargs_json

    async def queued(self, worker_id: str) -> list[QueuedMessage]:
        # kombu's consumer pops from the right: the list read right to left is the fetch order.
        raw = await self.redis.lrange(worker_queue(worker_id), 0, -1)  # type: ignore[misc]
        return [decode_message(message) for message in reversed(raw)]

    async def subscribers(self) -> int:
        ((_channel, count),) = await self.redis.pubsub_numsub(self.keys.notify)
        return int(count)

    async def unacked(self) -> int:
        if not await self.redis.exists(self.keys.events):
            return 0
        groups = await self.redis.xinfo_groups(self.keys.events)
        return sum(int(g["pending"]) for g in groups if g["name"] == EVENTS_GROUP)

    async def expire(self, task_id: str) -> None:
        assert await self.redis.delete(self.keys.task(task_id)) == 1

    async def close(self) -> None:
        await self.state.close()
        await self.redis.aclose()
