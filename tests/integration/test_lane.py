"""The hot path's pipelined Redis connection (scheduler/state/lane.py) against a real
redis-server: replies reach their callers in order however many calls are in flight, error
replies raise redis-py's exceptions, and a dead, restarted or silent Redis fails the calls in
flight and heals on the next call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from scheduler.state.lane import Lane, pack
from tests.support.redis_server import RedisServer, wait_until


def run_lane(url: str, scenario: Callable[[Lane], Awaitable[Any]], reply_timeout: float = 15.0,
             drop_on_cancel: bool = False) -> Any:
    async def main() -> Any:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        written: list[int] = []
        lane = Lane(client.connection_pool, reply_timeout, on_write=lambda: written.append(1),
                    drop_on_cancel=drop_on_cancel)
        try:
            return await scenario(lane), len(written)
        finally:
            await lane.aclose()
            await client.aclose()

    return asyncio.run(main())


def test_pack_writes_resp_with_str_bytes_int_and_float():
    assert pack(("SET", b"k\xff", 12, 1.5, "é")) == (
        b"*5\r\n$3\r\nSET\r\n$2\r\nk\xff\r\n$2\r\n12\r\n$3\r\n1.5\r\n$2\r\n\xc3\xa9\r\n")
    with pytest.raises(redis_errors.DataError, match="not NoneType"):
        pack(("SET", None))
    with pytest.raises(redis_errors.DataError, match="not bool"):  # an int to Python, not to Redis
        pack(("SET", "k", True))


def test_many_calls_in_flight_each_get_their_own_reply(fresh_redis: RedisServer):
    async def scenario(lane: Lane) -> list[Any]:
        return await asyncio.gather(*(lane.execute("INCRBY", f"k{i % 7}", i) for i in range(2000)),
                                    lane.execute("ECHO", "é" * 100_000))

    replies, written = run_lane(fresh_redis.url, scenario)
    assert written == 2001
    *counts, echoed = replies
    assert echoed == "é" * 100_000
    running = [0] * 7
    for i, count in enumerate(counts):  # Redis ran them in the order they were sent
        running[i % 7] += i
        assert count == running[i % 7]


def test_an_error_reply_raises_redis_pys_exception_and_the_next_call_is_answered(fresh_redis: RedisServer):
    async def scenario(lane: Lane) -> list[Any]:
        calls = [lane.execute("SET", "k", "v"), lane.execute("EVALSHA", "0" * 40, 0),
                 lane.execute("INCR", "k"), lane.execute("GET", "k")]
        return await asyncio.gather(*calls, return_exceptions=True)

    (ok, no_script, not_int, value), _ = run_lane(fresh_redis.url, scenario)
    assert ok == "OK" and value == "v"
    assert isinstance(no_script, redis_errors.NoScriptError)
    assert type(not_int) is redis_errors.ResponseError and "not an integer" in str(not_int)


def test_a_cancelled_caller_leaves_the_replies_of_the_others_in_order(fresh_redis: RedisServer):
    async def scenario(lane: Lane) -> list[Any]:
        await lane.execute("SET", "k", "0")
        blocked = asyncio.ensure_future(lane.execute("INCR", "k"))
        others = [asyncio.ensure_future(lane.execute("ECHO", str(i))) for i in range(50)]
        await asyncio.sleep(0)  # every call written, none answered yet
        blocked.cancel()
        replies = await asyncio.gather(*others)
        return [*replies, await lane.execute("GET", "k")]

    replies, _ = run_lane(fresh_redis.url, scenario)
    assert replies == [*map(str, range(50)), "1"]  # the cancelled call still ran, once


def test_a_killed_redis_fails_the_calls_in_flight_and_the_lane_heals_after_a_restart(fresh_redis: RedisServer):
    async def scenario(lane: Lane) -> tuple[BaseException, BaseException, str]:
        await lane.execute("SET", "k", "before")
        # The server dies while a call is in flight: it fails, it does not hang.
        in_flight = asyncio.ensure_future(lane.execute("BLPOP", "never", 0))
        await asyncio.sleep(0)
        await asyncio.to_thread(fresh_redis.kill)
        with pytest.raises(redis_errors.ConnectionError) as lost:
            await in_flight
        with pytest.raises(redis_errors.ConnectionError) as refused:  # nothing to reconnect to
            await lane.execute("GET", "k")
        await asyncio.to_thread(fresh_redis.start)
        return lost.value, refused.value, await lane.execute("GET", "k")

    (lost, refused, value), _ = run_lane(fresh_redis.url, scenario)
    assert value == "before"  # a new connection, to the restarted server (AOF kept the key)
    assert "closed" in str(lost).lower() or "reset" in str(lost).lower()
    assert "connect" in str(refused).lower()


def test_a_silent_redis_times_the_calls_out_and_the_next_call_gets_a_new_connection(fresh_redis: RedisServer):
    admin = fresh_redis.client()

    async def scenario(lane: Lane) -> tuple[float, str]:
        first_id = await lane.execute("CLIENT", "ID")
        # Redis holds every client's writes (CLIENT UNPAUSE, a read, still goes through).
        await asyncio.to_thread(admin.client_pause, 30_000, False)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(redis_errors.TimeoutError):
            await lane.execute("SET", "k", "v")
        waited = loop.time() - started
        await asyncio.to_thread(admin.client_unpause)
        second_id = await lane.execute("CLIENT", "ID")
        assert second_id != first_id
        return waited, await lane.execute("PING")

    (waited, pong), _ = run_lane(fresh_redis.url, scenario, reply_timeout=0.3)
    assert waited >= 0.3 and pong == "PONG"  # the watchdog, not the unpause, ended the wait


def test_a_closed_lane_fails_its_blocked_call_and_refuses_new_ones(fresh_redis: RedisServer):
    async def scenario(lane: Lane) -> tuple[BaseException, BaseException]:
        await lane.execute("PING")
        blocked = asyncio.ensure_future(lane.execute("BLPOP", "never", 0))
        await asyncio.sleep(0)
        await lane.aclose()  # a retrying loop must not open a new connection behind it
        with pytest.raises(redis_errors.ConnectionError) as failed:
            await blocked
        with pytest.raises(redis_errors.ConnectionError) as refused:
            await lane.execute("PING")
        return failed.value, refused.value

    (failed, refused), _ = run_lane(fresh_redis.url, scenario)
    assert "closing" in str(failed) and "closed" in str(refused)
    assert int(fresh_redis.client().info("clients")["blocked_clients"]) == 0


def test_a_lane_closed_while_it_connects_gives_the_new_connection_up(fresh_redis: RedisServer):
    async def scenario(lane: Lane) -> BaseException:
        opening = asyncio.ensure_future(lane.execute("BLPOP", "never", 0))
        await asyncio.sleep(0)  # connecting, nothing written yet
        await lane.aclose()
        with pytest.raises(redis_errors.ConnectionError) as refused:
            await opening
        return refused.value

    refused, written = run_lane(fresh_redis.url, scenario)
    assert "closed" in str(refused) and written == 0
    assert int(fresh_redis.client().info("clients")["blocked_clients"]) == 0


def test_a_cancelled_blocking_read_leaves_no_reader_behind_to_take_entries(fresh_redis: RedisServer):
    admin = fresh_redis.client()
    admin.xgroup_create("events", "g", id="0", mkstream=True)
    read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "BLOCK", 60_000, "STREAMS", "events", ">")

    async def scenario(lane: Lane) -> Any:
        blocked = asyncio.ensure_future(lane.execute(*read))
        await asyncio.to_thread(wait_until, lambda: int(admin.info("clients")["blocked_clients"]) == 1)
        blocked.cancel()  # a scheduler standing down cancels its lifecycle loop
        await asyncio.to_thread(wait_until, lambda: int(admin.info("clients")["blocked_clients"]) == 0)
        admin.xadd("events", {"type": "succeeded"})
        return await lane.execute(*read)  # the next leader's read gets the entry

    reply, _ = run_lane(fresh_redis.url, scenario, drop_on_cancel=True)
    streams = list(reply.items()) if isinstance(reply, dict) else reply  # RESP3 answers a map
    [[stream, [[_id, fields]]]] = streams
    assert stream == "events" and fields == ["type", "succeeded"]


def test_commands_sent_together_go_in_one_write_and_a_read_after_them_waits_for_new_entries(fresh_redis: RedisServer):
    admin = fresh_redis.client()
    admin.xgroup_create("events", "g", id="0", mkstream=True)
    read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "BLOCK", 60_000, "STREAMS", "events", ">")

    async def scenario(lane: Lane) -> tuple[Any, Any, Any]:
        # What the lifecycle's round does: its script, then the next blocking read, one write.
        ran, waiting = await lane.send(("INCRBY", "k", 5), read)
        first = await lane.reply(ran)
        await asyncio.to_thread(wait_until, lambda: int(admin.info("clients")["blocked_clients"]) == 1)
        admin.xadd("events", {"type": "succeeded"})
        return first, await lane.reply(waiting), await lane.execute("GET", "k")

    (first, reply, value), written = run_lane(fresh_redis.url, scenario)
    assert (first, value) == (5, "5") and written == 2  # the pair counted as one round trip
    streams = list(reply.items()) if isinstance(reply, dict) else reply  # RESP3 answers a map
    [[_stream, [[_id, fields]]]] = streams
    assert fields == ["type", "succeeded"]


def test_an_abandoned_blocking_read_leaves_no_reader_behind_and_the_lane_goes_on(fresh_redis: RedisServer):
    admin = fresh_redis.client()
    admin.xgroup_create("events", "g", id="0", mkstream=True)
    read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "BLOCK", 60_000, "STREAMS", "events", ">")

    async def scenario(lane: Lane) -> tuple[Any, Any]:
        ran, waiting = await lane.send(("SET", "k", "v"), read)
        await lane.reply(ran)
        await asyncio.to_thread(wait_until, lambda: int(admin.info("clients")["blocked_clients"]) == 1)
        lane.abandon(waiting)  # a round that failed after its script: its read must take nothing
        # (Well before the lane's reply timeout, which would also end the read, at 120 s.)
        await asyncio.to_thread(wait_until, lambda: int(admin.info("clients")["blocked_clients"]) == 0, 10)
        admin.xadd("events", {"type": "succeeded"})
        lane.abandon(ran)  # answered already: nothing to do
        return await lane.execute("GET", "k"), await lane.execute(*read)

    (value, reply), _ = run_lane(fresh_redis.url, scenario, reply_timeout=120, drop_on_cancel=True)
    streams = list(reply.items()) if isinstance(reply, dict) else reply
    [[_stream, [[_id, fields]]]] = streams
    assert value == "v" and fields == ["type", "succeeded"]  # the next read got the entry
