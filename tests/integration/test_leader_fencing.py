"""Issue 9, item 1: the leader lease and its fencing token, on a real Redis.

Two `RedisState`s stand for two scheduler processes. The lease goes to one at a time, each new
holder gets a larger token, and a write carrying a token that no longer holds the lease — a
deposed leader's late write — changes nothing.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from switchyard.wire import Keys

from scheduler.core.model import TaskState
from scheduler.errors import LeadershipLost
from scheduler.state.store import RedisState
from tests.support.redis_server import RedisServer
from tests.support.store_kit import PREFIX, new_task, submitted

LEASE = 0.5


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _two(url: str) -> tuple[RedisState, RedisState]:
    return RedisState(url, PREFIX), RedisState(url, PREFIX)


def test_one_holder_at_a_time_and_tokens_only_grow(fresh_redis: RedisServer) -> None:
    async def scenario() -> None:
        a, b = await _two(fresh_redis.url)
        first = await a.lease.claim("a", "10.0.0.1:1", LEASE, "inst")
        assert first.held and first.token == "1"
        seen_by_b = await b.lease.claim("b", "10.0.0.2:1", LEASE, "other")
        assert not seen_by_b.held
        assert (seen_by_b.leader_address, seen_by_b.instance) == ("10.0.0.1:1", "inst")
        renewed = await a.lease.claim("a", "10.0.0.1:1", LEASE, "inst")
        assert renewed.held and renewed.token == "1"
        # Handed back: the other one gets it at once, with a larger token.
        await a.lease.release("a", "inst")
        taken = await b.lease.claim("b", "10.0.0.2:1", LEASE, "other")
        assert taken.held and taken.token == "2"
        await a.close()
        await b.close()

    _run(scenario())


def test_a_deposed_leaders_late_writes_bounce(fresh_redis: RedisServer) -> None:
    async def scenario() -> None:
        a, b = await _two(fresh_redis.url)
        view = await a.lease.claim("a", "a:1", LEASE, "inst")
        a.fence.hold(view.token, time.monotonic() + 60)  # A believes it leads for a minute
        await submitted(a, new_task("kept"))

        # A pauses; its lease expires in Redis; B takes over with the next token.
        async def b_takes_over() -> str:
            while True:
                seen = await b.lease.claim("b", "b:1", LEASE, "inst")
                if seen.held:
                    return seen.token
                await asyncio.sleep(0.05)

        assert await asyncio.wait_for(b_takes_over(), 5) == "2"
        lost: list[bool] = []
        a.fence.on_lost = lambda: lost.append(True)
        with pytest.raises(LeadershipLost):
            await submitted(a, new_task("late"))
        with pytest.raises(LeadershipLost):
            await a.tasks.cancel("kept", 1.0, "cancelled by a deposed leader", 60)
        assert lost, "the fence tells the leadership loop at once"
        # Nothing of the late writes landed; B writes with its own token.
        assert await b.tasks.get("late") is None
        record = await b.tasks.get("kept")
        assert record is not None and record.state is TaskState.PENDING
        b.fence.hold("2", time.monotonic() + 60)
        await submitted(b, new_task("fresh"))
        assert await b.tasks.get("fresh") is not None
        await a.close()
        await b.close()

    _run(scenario())


def test_a_leader_that_could_not_renew_in_time_stops_writing_by_its_own_clock(fresh_redis: RedisServer) -> None:
    async def scenario() -> None:
        a = RedisState(fresh_redis.url, PREFIX)
        view = await a.lease.claim("a", "a:1", 30, "inst")  # the lease itself still holds in Redis
        a.fence.hold(view.token, time.monotonic() - 0.001)  # ...but A's own clock says "maybe not"
        probe = redis.Redis.from_url(fresh_redis.url)
        commands_before = probe.info("stats")["total_commands_processed"]
        with pytest.raises(LeadershipLost):
            await submitted(a, new_task("t"))
        commands_after = probe.info("stats")["total_commands_processed"]
        # Refused before anything was sent (the INFO call itself is the one command between).
        assert commands_after - commands_before == 1
        await a.close()

    _run(scenario())


def test_a_redis_that_lost_its_data_shows_a_new_instance(fresh_redis: RedisServer) -> None:
    async def scenario() -> None:
        a = RedisState(fresh_redis.url, PREFIX)
        first = await a.lease.claim("a", "a:1", LEASE, "first")
        assert first.instance == "first" and first.instance_recorded
        redis.Redis.from_url(fresh_redis.url).flushall()
        again = await a.lease.claim("a", "a:1", LEASE, "second")
        assert again.instance == "second" and again.instance_recorded and again.held
        assert again.token == "1"  # the epoch went with the data: fencing compares tokens for equality
        await a.close()

    _run(scenario())


def test_the_key_layout_names_the_lease_in_one_place() -> None:
    keys = Keys("sy")
    assert (keys.leader, keys.leader_epoch, keys.instance) == ("sy:leader", "sy:leader:epoch", "sy:instance")
