"""The Redis store against a real redis-server, part one: submissions (groups, idempotency, sync
match), the hand-out script and the Celery messages it queues (as kombu's transport delivers
them), the claim, the round trips each transition costs, and how outages and lost scripts look
to the engine. Part two (test_store_lifecycle.py): reports, loss, cancellation, indexes, stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import kombu
import pytest
import redis.asyncio as aioredis
from switchyard.wire import (
    HEADER_ATTEMPT,
    HEADER_PAYLOAD_REF,
    HEADER_TASK_ID,
    HEADER_WORKER_ID,
    claim_script,
    worker_queue,
)

from scheduler.core.model import TaskState
from scheduler.dispatch import BODY_EMBED, msgpack_celery_body
from scheduler.errors import StateUnavailable
from scheduler.state.connection import RoundTrips
from scheduler.state.interface import (
    Applied,
    CancelStatus,
    IdempotencyConflict,
    NewTask,
    Started,
    SubmitOutcome,
)
from scheduler.state.records import TaskRecord
from scheduler.state.store import RedisState
from tests.support.celery_queue import decode_message, hand_out_request
from tests.support.redis_server import RedisServer, free_port
from tests.support.store_kit import (
    KEYS,
    PREFIX,
    RETENTION,
    SUBMITTED_AT,
    Scenario,
    hand_out,
    new_task,
    report,
    run_scenario,
    submitted,
)


@pytest.fixture()
def run(fresh_redis: RedisServer) -> Callable[[Scenario], Any]:
    """Run an async scenario against a RedisState on the module's (flushed) Redis."""
    return lambda scenario: run_scenario(fresh_redis.url, scenario)


# --- submissions --------------------------------------------------------------------------


def test_submit_writes_pending_tasks_with_their_payload_in_the_task_hash(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        outcomes = await submitted(state, new_task("a"), new_task("b"))
        assert [(o.task_id, o.deduplicated, o.seq) for o in outcomes] == [("a", False, 1), ("b", False, 2)]
        record = await state.tasks.get("a")
        assert record == TaskRecord(task_id="a", name="demo.add", queue="cpu_standard", priority=5, seq=1,
                                    submitted_at=SUBMITTED_AT, payload_bytes=12, payload_digest="d1",
                                    reason="classified")
        raw = fresh_redis.client()
        assert raw.hmget(KEYS.task("a"), ["args_json", "kwargs_json"]) == ["[1, 2]", '{"x": 1}']
        assert raw.hget(KEYS.task("a"), "fence") is None
        assert [r.task_id for r in await state.tasks.load(["b", "missing", "a"])] == ["b", "a"]
        assert await state.indexes.pending_ids() == ["a", "b"]
        assert await state.tasks.get("missing") is None

    run(scenario)


def test_submit_deduplicates_an_idempotency_key_with_the_same_payload(run):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a", idem="k1"))
        [again] = await submitted(state, new_task("b", idem="k1"))
        assert (again.task_id, again.deduplicated, again.seq) == ("a", True, 0)
        in_batch = await submitted(state, new_task("c", idem="k2"), new_task("d", idem="k2"))
        assert [(o.task_id, o.deduplicated) for o in in_batch] == [("c", False), ("c", True)]
        assert await state.tasks.get("b") is None
        assert await state.indexes.pending_ids() == ["a", "c"]

    run(scenario)


def test_an_idempotency_conflict_writes_nothing_of_its_group(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a", idem="k1", digest="d1"))
        (caught,), _ = await state.tasks.submit([[new_task("x"), new_task("y", idem="k1", digest="d2")]], 60)
        assert isinstance(caught, IdempotencyConflict) and (caught.index, caught.existing_task_id) == (1, "a")
        (caught,), _ = await state.tasks.submit(
            [[new_task("p", idem="k3", digest="d1"), new_task("q", idem="k3", digest="d2")]], 60)
        assert isinstance(caught, IdempotencyConflict) and (caught.index, caught.existing_task_id) == (1, "")
        assert await state.tasks.load(["x", "y", "p", "q"]) == []
        assert await state.indexes.pending_ids() == ["a"]
        assert fresh_redis.client().get(KEYS.idempotency("k3")) is None

    run(scenario)


def test_submit_groups_are_independent_of_each_other(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a", idem="k1", digest="d1"))
        results, handed = await state.tasks.submit([
            [new_task("b")],
            [new_task("x"), new_task("y", idem="k1", digest="d2"), new_task("z", idem="k4")],
            [new_task("c", idem="k5"), new_task("d")],
        ], 60)
        assert handed == []
        first, clash, last = results
        assert first == [SubmitOutcome("b", False, 2)]
        assert isinstance(clash, IdempotencyConflict) and (clash.index, clash.existing_task_id) == (1, "a")
        assert last == [SubmitOutcome("c", False, 3), SubmitOutcome("d", False, 4)]
        assert await state.indexes.pending_ids() == ["a", "b", "c", "d"]
        assert await state.tasks.load(["x", "y", "z"]) == []
        raw = fresh_redis.client()
        assert raw.get(KEYS.idempotency("k4")) is None and raw.get(KEYS.idempotency("k5")) == "c"

    run(scenario)


def test_submit_hands_out_in_the_same_round_trip_when_asked(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        results, handed = await state.tasks.submit([[new_task("a")], [new_task("b")]], 60,
                                                   hand_outs=[hand_out("a"), hand_out("ghost")], now=1001.0)
        assert results == [[SubmitOutcome("a", False, 1)], [SubmitOutcome("b", False, 2)]]
        assert handed == [True, False]
        record = await state.tasks.get("a")
        assert record is not None and (record.state, record.worker_id, record.dispatched_at) == (
            TaskState.DISPATCHED, "w1", 1001.0)
        assert await state.indexes.pending_ids() == ["b"]
        assert [decode_message(m).task_id for m in fresh_redis.client().lrange(worker_queue("w1"), 0, -1)] == ["a"]

    run(scenario)


# --- hand-outs: the commit and the Celery message in one script ---------------------------


def test_dispatch_commits_attempt_fence_ledger_and_served_queue(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a", queue="gpu_priority"))
        assert await state.tasks.dispatch([hand_out("a", "w1", "gpu_fallback", gpu_index=0)], 1002.5) == [True]
        task = await state.tasks.get("a")
        assert task is not None
        assert (task.state, task.attempt, task.worker_id, task.gpu_index) == (TaskState.DISPATCHED, 1, "w1", 0)
        assert (task.served_queue, task.dispatched_at, task.reason) == ("gpu_fallback", 1002.5, "placed on w1")
        assert fresh_redis.client().hget(KEYS.task("a"), "fence") == "1"
        assert await state.indexes.in_flight_ledgers() == {"w1": {"a"}}
        assert await state.indexes.pending_ids() == []
        assert await state.tasks.dispatch([hand_out("a", "w2")], 1003.0) == [False]
        assert await state.tasks.dispatch([hand_out("a", "w2", attempt=2)], 1003.0) == [False]  # not pending

    run(scenario)


def test_dispatch_queues_exactly_one_celery_message_per_hand_out_in_round_order(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a"), new_task("b", payload_bytes=5000), new_task("c"), new_task("d"),
                        new_task("e", args_json="[]", kwargs_json="{}"))
        handed = await state.tasks.dispatch(
            [hand_out("c"), hand_out("a"), hand_out("b", by_reference=True), hand_out("missing"),
             hand_out("d", "w2"), hand_out("a", "w2"), hand_out("e")], 1002.0)
        assert handed == [True, True, True, False, True, False, True]
        raw = fresh_redis.client()
        assert raw.llen(worker_queue("w1")) == 4 and raw.llen(worker_queue("w2")) == 1
        # kombu's consumer pops from the right: what it fetches first is what the round placed first.
        fetched = [decode_message(raw.rpop(worker_queue("w1"))) for _ in range(4)]
        assert [m.task_id for m in fetched] == ["c", "a", "b", "e"]
        assert [(m.args, m.kwargs, m.by_reference) for m in fetched] == [
            ([1, 2], {"x": 1}, False), ([1, 2], {"x": 1}, False), ([], {}, True), ([], {}, False)]
        for message in fetched:
            headers, properties = message.headers, message.properties
            assert (headers[HEADER_TASK_ID], headers[HEADER_ATTEMPT], headers[HEADER_WORKER_ID]) == (
                message.task_id, 1, "w1")
            assert headers[HEADER_PAYLOAD_REF] == ("1" if message.task_id == "b" else "0")
            assert (headers["id"], headers["task"], properties["correlation_id"]) == (
                f"{message.task_id}-1", "demo.add", f"{message.task_id}-1")
            assert properties["body_encoding"] == "utf-8"
            assert properties["delivery_info"]["routing_key"] == worker_queue("w1")
            assert (headers["argsrepr"], headers["kwargsrepr"]) == (json.dumps(message.args),
                                                                    json.dumps(message.kwargs))
        (other,) = [decode_message(m) for m in raw.lrange(worker_queue("w2"), 0, -1)]
        assert (other.task_id, other.worker_id, other.celery_id) == ("d", "w2", "d-1")

    run(scenario)


def test_a_refused_hand_out_queues_no_message(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a"))
        assert await state.tasks.dispatch([hand_out("a", attempt=2), hand_out("gone")], 1002.0) == [False, False]
        await state.tasks.cancel("a", 1003.0, "by client", 60)
        assert await state.tasks.dispatch([hand_out("a")], 1004.0) == [False]
        assert fresh_redis.client().exists(worker_queue("w1")) == 0

    run(scenario)


def test_long_args_are_clipped_in_their_repr_but_travel_whole(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        big = json.dumps(["é" * 1500])  # 2 bytes a character: the cut must not split one
        await submitted(state, new_task("a", args_json=big, payload_bytes=len(big)))
        await state.tasks.dispatch([hand_out("a")], 1002.0)
        (message,) = [decode_message(m) for m in fresh_redis.client().lrange(worker_queue("w1"), 0, -1)]
        assert message.args == ["é" * 1500]
        argsrepr = message.headers["argsrepr"]
        assert argsrepr.endswith("...") and len(argsrepr[:-3].encode()) <= 1024
        assert big.startswith(argsrepr[:-3])

    run(scenario)


def test_kombus_redis_transport_delivers_the_queued_message_as_sent(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a"))
        await state.tasks.dispatch([hand_out("a")], 1002.0)

    run(scenario)
    with kombu.Connection(fresh_redis.url) as connection:
        queue = connection.SimpleQueue(worker_queue("w1"), no_ack=True)
        try:
            message = queue.get(timeout=5)
            assert message.decode() == [[1, 2], {"x": 1}, json.loads(BODY_EMBED)]
            assert (message.headers["id"], message.headers["task"], message.headers[HEADER_TASK_ID]) == (
                "a-1", "demo.add", "a")
            assert message.content_type == "application/json"
        finally:
            queue.close()


def test_kombus_redis_transport_decodes_a_msgpack_hand_out(run, fresh_redis):
    args, kwargs = '[1, [], {}]', '{"big": 18446744073709551615, "s": "\u00e9"}'

    async def scenario(state: RedisState) -> None:
        task = new_task("m", args_json=args, kwargs_json=kwargs)
        await submitted(state, NewTask(replace(task.record, serializer="msgpack", body_ready=True), args, kwargs,
                                       msgpack_celery_body(args, kwargs)))
        request = hand_out_request("m", "w1", 1, task_name="demo.add", serializer="msgpack")
        assert await state.tasks.dispatch([request], 1002.0) == [True]

    run(scenario)
    with kombu.Connection(fresh_redis.url) as connection:
        # A consumer that accepts msgpack, as the agent makes every worker's Celery app do.
        queue = connection.SimpleQueue(worker_queue("w1"), no_ack=True, accept=["json", "msgpack"])
        try:
            message = queue.get(timeout=5)
            # kombu undoes the base64 body_encoding and unpacks by content type, as a worker does.
            assert (message.content_type, message.content_encoding) == ("application/x-msgpack", "binary")
            assert message.decode() == [[1, [], {}], {"big": 2**64 - 1, "s": "\u00e9"}, json.loads(BODY_EMBED)]
        finally:
            queue.close()


# --- the claim ----------------------------------------------------------------------------


def test_the_claim_records_the_start_and_announces_it(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a"), new_task("b"))
        await state.tasks.dispatch([hand_out("a"), hand_out("b", by_reference=True)], 1002.0)
        await state.tasks.watch("a")  # as WatchTask does: only a watched task's claim is announced
        worker = aioredis.Redis.from_url(fresh_redis.url, decode_responses=True)
        claim = worker.register_script(claim_script())
        starts = state.events.started()
        heard = asyncio.ensure_future(anext(starts))
        try:
            while not (await worker.pubsub_numsub(KEYS.notify))[0][1]:
                await asyncio.sleep(0.01)  # until subscribed: pub/sub keeps nothing for later
            assert await claim(keys=[KEYS.task("a"), KEYS.notify], args=[2, "w1", "a", "1004.0", "0"]) == 0
            assert await claim(keys=[KEYS.task("a"), KEYS.notify], args=[1, "w1", "a", "1005.0", "0"]) == 1
            assert await asyncio.wait_for(heard, timeout=5) == Started("a", 1, "w1")
            assert await claim(keys=[KEYS.task("a"), KEYS.notify], args=[1, "w1", "a", "1006.0", "0"]) == 0
            by_reference = await claim(keys=[KEYS.task("b"), KEYS.notify], args=[1, "w1", "b", "1007.0", "1"])
            assert by_reference == [1, ["[1, 2]", '{"x": 1}']]
        finally:
            heard.cancel()
            await starts.aclose()  # type: ignore[attr-defined]
            await worker.aclose()
        record = await state.tasks.get("a")
        assert record is not None and (record.state, record.started_at) == (TaskState.RUNNING, 1005.0)
        assert fresh_redis.client().hget(KEYS.task("a"), "fence") == "1:started"
        [done] = await state.tasks.apply([report("succeeded", "a", 1, 1009.0, result_json="3")], [None], RETENTION)
        assert done == Applied(TaskState.SUCCEEDED, "cpu_standard", "w1", 5.0, 4.0)  # from the claim's start

    run(scenario)


# --- round trips: what each transition costs ----------------------------------------------

async def round_trips(call: Awaitable[Any]) -> int:
    """Requests this process wrote to Redis while `call` ran (nothing else runs meanwhile)."""
    before = RoundTrips.count
    await call
    return RoundTrips.count - before


async def warmed(state: RedisState) -> None:
    """Connected, and every script the hot path uses loaded (a first call also loads its script)."""
    await submitted(state, new_task("warm"), new_task("warm2"))
    await state.tasks.submit([[new_task("warm3")]], 60, hand_outs=[hand_out("warm3")], now=1001.0)
    await state.tasks.dispatch([hand_out("warm")], 1001.0)
    await state.tasks.apply_then_dispatch([report("succeeded", "warm", 1, 1002.0, result_json="1")], [None],
                                          RETENTION, [hand_out("warm2")], 1002.0)
    await state.tasks.requeue("warm3", "w1", "warm")
    await state.tasks.cancel("warm3", 1003.0, "warm", 60)
    await state.tasks.promote("warm3", TaskState.RETRYING, "warm")


def test_a_round_of_hand_outs_and_a_batch_of_reports_cost_one_round_trip_each(run):
    async def scenario(state: RedisState) -> None:
        await warmed(state)
        await submitted(state, *(new_task(t) for t in "abc"))
        assert await round_trips(state.tasks.dispatch([hand_out(t) for t in "abc"], 1002.0)) == 1
        reports = [report("succeeded", t, 1, 1003.0, result_json="1") for t in "abc"]
        assert await round_trips(state.tasks.apply(reports, [None] * 3, RETENTION)) == 1
        assert await round_trips(state.tasks.load(["a", "b", "c"])) == 1

    run(scenario)


def test_a_submit_with_its_sync_match_costs_one_round_trip(run):
    async def scenario(state: RedisState) -> None:
        await warmed(state)
        trips = await round_trips(state.tasks.submit([[new_task("a")], [new_task("b")]], 60,
                                                     hand_outs=[hand_out("a")], now=1002.0))
        assert trips == 1

    run(scenario)


def test_reports_and_the_hand_outs_of_the_slots_they_free_cost_one_round_trip(run):
    async def scenario(state: RedisState) -> None:
        await warmed(state)
        await submitted(state, new_task("a"), new_task("b"))
        await state.tasks.dispatch([hand_out("a")], 1002.0)
        trips = await round_trips(state.tasks.apply_then_dispatch(
            [report("succeeded", "a", 1, 1003.0, result_json="1")], [None], RETENTION, [hand_out("b")], 1003.0))
        assert trips == 1

    run(scenario)


def test_the_lifecycle_round_with_its_next_read_costs_one_round_trip(run):
    async def scenario(state: RedisState) -> None:
        await warmed(state)
        await state.events.ensure_group()
        await submitted(state, new_task("a"), new_task("b"))
        await state.tasks.dispatch([hand_out("a")], 1002.0)
        before = RoundTrips.count
        _applied, handed, next_reports = await state.tasks.apply_dispatch_and_read(
            [report("succeeded", "a", 1, 1003.0, result_json="1")], [None], RETENTION, [hand_out("b")], 1003.0)
        assert handed == [True] and RoundTrips.count - before == 1  # the read went out in the same write
        next_reports.drop()

    run(scenario)


def test_requeue_cancel_and_promote_read_their_record_in_the_same_round_trip(run):
    async def scenario(state: RedisState) -> None:
        await warmed(state)
        await submitted(state, new_task("a"), new_task("b"))
        await state.tasks.dispatch([hand_out("a")], 1002.0)
        trips = [await round_trips(state.tasks.requeue("a", "w1", "lost")),
                 await round_trips(state.tasks.cancel("b", 1003.0, "by client", 60)),
                 await round_trips(state.tasks.promote("a", TaskState.RETRYING, "not retrying"))]
        assert trips == [1, 1, 1]

    run(scenario)


# --- lost scripts and outages -------------------------------------------------------------


def test_scripts_heal_after_script_flush(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        raw = fresh_redis.client()
        raw.script_flush()
        await submitted(state, new_task("a"), new_task("b"), new_task("c"))
        raw.script_flush()
        assert all(await state.tasks.dispatch([hand_out("a"), hand_out("b")], 1002.0))
        raw.script_flush()
        results, handed = await state.tasks.submit([[new_task("d")]], 60, hand_outs=[hand_out("d")], now=1003.0)
        assert results == [[SubmitOutcome("d", False, 4)]] and handed == [True]
        raw.script_flush()
        [started] = await state.tasks.apply([report("started", "a", 1, 1005.0)], [None], RETENTION)
        assert started is not None and started.state is TaskState.RUNNING
        raw.script_flush()
        assert await state.tasks.requeue("b", "w1", "lost") is not None
        raw.script_flush()
        assert (await state.tasks.cancel("c", 1010.0, "by client", 60)).status is CancelStatus.OK
        raw.script_flush()
        assert await state.indexes.purge_dead_letters(["a"]) == 0

    run(scenario)


def test_a_redis_restart_is_unavailable_then_heals(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a"))
        fresh_redis.kill()
        try:
            with pytest.raises(StateUnavailable, match=r"can be retried"):
                await state.tasks.dispatch([hand_out("a")], 1002.0)
        finally:
            fresh_redis.start()
        # Same client, new server process (data back from the AOF, no scripts loaded).
        assert await state.tasks.dispatch([hand_out("a")], 1003.0) == [True]
        record = await state.tasks.get("a")
        assert record is not None and record.attempt == 1

    run(scenario)


def test_an_unreachable_store_names_the_server_but_never_the_password():
    port = free_port()

    async def scenario() -> str:
        state = RedisState(f"redis://admin:s3cret-pw@127.0.0.1:{port}/0?password=s3cret-pw", PREFIX)
        try:
            with pytest.raises(StateUnavailable) as caught:
                await state.tasks.get("a")
            return str(caught.value)
        finally:
            await state.close()

    message = asyncio.run(scenario())
    assert message == (f"cannot reach the state store at redis://127.0.0.1:{port}/0 (Connection refused); "
                       "check that Redis is running and reachable — the request can be retried")


def test_a_password_protected_store_that_dies_or_turns_replica_is_unavailable():
    server = RedisServer(appendonly=False).start()
    try:
        server.client().config_set("requirepass", "s3cret-pw")
        url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"

        async def scenario() -> list[str]:
            state = RedisState(url, PREFIX)
            messages = []
            try:
                assert await state.ping()
                await state.controls.set_paused("q", True)
                admin = aioredis.Redis.from_url(url)
                await admin.replicaof("127.0.0.1", free_port())  # a replica refuses writes
                with pytest.raises(StateUnavailable) as caught:
                    await state.controls.set_paused("q", False)
                messages.append(str(caught.value))
                await admin.replicaof("NO", "ONE")
                await admin.aclose()
                server.kill()
                with pytest.raises(StateUnavailable) as caught:
                    await state.ping()
                messages.append(str(caught.value))
            finally:
                await state.close()
            return messages

        read_only, dead = asyncio.run(scenario())
    finally:
        server.stop()
    location = f"redis://127.0.0.1:{server.port}/0"
    assert read_only.startswith(f"the state store at {location} is a read-only replica (")
    assert "point redis_url at the primary" in read_only
    assert dead.startswith(f"cannot reach the state store at {location} (")
    assert all("s3cret" not in m for m in (read_only, dead))
