"""The Redis state package against a real redis-server: every transition script, the indexes,
the lifecycle stream, and how outages and lost scripts look to the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from switchyard.wire import EVENTS_GROUP, FENCE_CANCELLED, FENCE_REQUEUED, Keys

from scheduler.core.model import TaskState, WorkerType
from scheduler.errors import StateUnavailable
from scheduler.state.interface import (
    CancelStatus,
    FailureAction,
    FailureOutcome,
    HandOutRequest,
    IdempotencyConflict,
    LifecycleEvent,
    NewTask,
    Retention,
)
from scheduler.state.records import TaskRecord, WorkerRecord
from scheduler.state.store import RedisState
from tests.support.redis_server import RedisServer, free_port

PREFIX = "t"
KEYS = Keys(PREFIX)
SUBMITTED_AT = 1000.0
RETENTION = Retention(result_ttl_seconds=3600, dead_letter_ttl_seconds=7200)

Scenario = Callable[[RedisState], Awaitable[Any]]


@pytest.fixture()
def run(fresh_redis: RedisServer) -> Callable[[Scenario], Any]:
    """Run an async scenario against a RedisState on the module's (flushed) Redis."""

    def run_scenario(scenario: Scenario) -> Any:
        async def main() -> Any:
            state = RedisState(fresh_redis.url, PREFIX)
            try:
                return await scenario(state)
            finally:
                await state.close()

        return asyncio.run(main())

    return run_scenario


def new_task(task_id: str, *, queue: str = "cpu_standard", idem: str = "", digest: str = "d1",
             payload_bytes: int = 12) -> NewTask:
    record = TaskRecord(task_id=task_id, name="demo.add", queue=queue, priority=5,
                        submitted_at=SUBMITTED_AT, payload_bytes=payload_bytes,
                        payload_digest=digest, idempotency_key=idem, reason="classified")
    return NewTask(record, args_json="[1, 2]", kwargs_json='{"x": 1}')


def report(kind: str, task_id: str, attempt: int, ts: float, **fields: str) -> LifecycleEvent:
    return LifecycleEvent(stream_id="0-1", kind=kind, task_id=task_id, attempt=attempt, worker_id="w1",
                          ts=ts, fields=fields)


def hand_out(task_id: str, worker_id: str = "w1", served_queue: str = "", gpu_index: int | None = None) -> HandOutRequest:
    return HandOutRequest(task_id, worker_id, gpu_index, served_queue, "placed on " + worker_id)


async def submitted_and_dispatched(state: RedisState, task_id: str, worker_id: str = "w1",
                                   served_queue: str = "") -> TaskRecord:
    await state.tasks.submit([new_task(task_id)], 60)
    [outcome] = await state.tasks.dispatch([hand_out(task_id, worker_id, served_queue)], 1002.0, 1024)
    assert outcome is not None
    return outcome.task


async def running(state: RedisState, task_id: str, served_queue: str = "") -> TaskRecord:
    await submitted_and_dispatched(state, task_id, served_queue=served_queue)
    [record] = await state.tasks.apply([report("started", task_id, 1, 1005.0)], [None], RETENTION)
    assert record is not None
    return record


# --- submissions --------------------------------------------------------------------------


def test_submit_writes_pending_tasks_with_their_payload(run):
    async def scenario(state: RedisState) -> None:
        outcomes = await state.tasks.submit([new_task("a"), new_task("b")], 60)
        assert [(o.task_id, o.deduplicated, o.seq) for o in outcomes] == [("a", False, 1), ("b", False, 2)]
        record = await state.tasks.get("a")
        assert record == TaskRecord(task_id="a", name="demo.add", queue="cpu_standard", priority=5, seq=1,
                                    submitted_at=SUBMITTED_AT, payload_bytes=12, payload_digest="d1",
                                    reason="classified")
        assert await state.tasks.payload("a") == ("[1, 2]", '{"x": 1}')
        assert [r.task_id for r in await state.tasks.load(["b", "missing", "a"])] == ["b", "a"]
        assert await state.indexes.pending_ids() == ["a", "b"]
        assert await state.indexes.counts() == {"pending": 2}
        assert await state.tasks.get("missing") is None

    run(scenario)


def test_submit_deduplicates_an_idempotency_key_with_the_same_payload(run):
    async def scenario(state: RedisState) -> None:
        await state.tasks.submit([new_task("a", idem="k1")], 60)
        [again] = await state.tasks.submit([new_task("b", idem="k1")], 60)
        assert (again.task_id, again.deduplicated, again.seq) == ("a", True, 0)
        in_batch = await state.tasks.submit([new_task("c", idem="k2"), new_task("d", idem="k2")], 60)
        assert [(o.task_id, o.deduplicated) for o in in_batch] == [("c", False), ("c", True)]
        assert await state.tasks.get("b") is None
        assert await state.indexes.pending_ids() == ["a", "c"]
        assert await state.indexes.counts() == {"pending": 2}

    run(scenario)


def test_an_idempotency_conflict_writes_nothing_of_the_batch(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await state.tasks.submit([new_task("a", idem="k1", digest="d1")], 60)
        with pytest.raises(IdempotencyConflict) as caught:
            await state.tasks.submit([new_task("x"), new_task("y", idem="k1", digest="d2")], 60)
        assert (caught.value.index, caught.value.existing_task_id) == (1, "a")
        with pytest.raises(IdempotencyConflict) as caught:
            await state.tasks.submit([new_task("p", idem="k3", digest="d1"), new_task("q", idem="k3", digest="d2")], 60)
        assert (caught.value.index, caught.value.existing_task_id) == (1, "")
        assert await state.tasks.load(["x", "y", "p", "q"]) == []
        assert await state.indexes.pending_ids() == ["a"]
        assert fresh_redis.client().get(KEYS.idempotency("k3")) is None

    run(scenario)


# --- hand-outs ----------------------------------------------------------------------------


def test_dispatch_commits_attempt_fence_ledger_and_served_queue(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await state.tasks.submit([new_task("a", queue="gpu_priority")], 60)
        [outcome] = await state.tasks.dispatch([hand_out("a", "w1", "gpu_fallback", gpu_index=0)], 1002.5, 1024)
        assert outcome is not None
        task = outcome.task
        assert (task.state, task.attempt, task.worker_id, task.gpu_index) == (TaskState.DISPATCHED, 1, "w1", 0)
        assert (task.served_queue, task.dispatched_at, task.reason) == ("gpu_fallback", 1002.5, "placed on w1")
        assert not task.published
        assert (outcome.args_json, outcome.kwargs_json) == ("[1, 2]", '{"x": 1}')
        assert fresh_redis.client().get(KEYS.fence("a")) == "1"
        assert await state.indexes.in_flight_ledgers() == {"w1": {"a"}}
        assert await state.indexes.pending_ids() == []
        assert await state.indexes.counts() == {"pending": 0, "dispatched": 1}
        assert await state.tasks.dispatch([hand_out("a", "w2")], 1003.0, 1024) == [None]
        await state.tasks.mark_published(["a"])
        published = await state.tasks.get("a")
        assert published is not None and published.published

    run(scenario)


def test_dispatch_sends_payloads_above_the_inline_limit_by_reference(run):
    async def scenario(state: RedisState) -> None:
        await state.tasks.submit([new_task("small", payload_bytes=1024), new_task("big", payload_bytes=1025)], 60)
        small, big = await state.tasks.dispatch([hand_out("small"), hand_out("big")], 1002.0, 1024)
        assert small is not None and small.args_json == "[1, 2]"
        assert big is not None and (big.args_json, big.kwargs_json) == (None, None)
        assert big.task.state is TaskState.DISPATCHED

    run(scenario)


# --- lifecycle reports --------------------------------------------------------------------


def test_started_and_progress_reports_move_a_dispatched_task(run):
    async def scenario(state: RedisState) -> None:
        await submitted_and_dispatched(state, "a")
        started, progress = await state.tasks.apply(
            [report("started", "a", 1, 1005.0), report("progress", "a", 1, 1006.0, progress="0.5", message="half")],
            [None, None], RETENTION,
        )
        assert started is not None and (started.state, started.started_at) == (TaskState.RUNNING, 1005.0)
        assert progress is not None and (progress.progress, progress.progress_message) == (0.5, "half")
        assert await state.indexes.counts() == {"pending": 0, "dispatched": 0, "running": 1}
        stats = (await state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]
        assert stats == {"wait_sum": 5.0, "wait_count": 1.0}

    run(scenario)


def test_success_finishes_the_attempt_and_keeps_the_result_for_its_ttl(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await running(state, "a", served_queue="gpu_fallback")
        [done] = await state.tasks.apply([report("succeeded", "a", 1, 1009.0, result_json="3")], [None], RETENTION)
        assert done is not None
        assert (done.state, done.result_json, done.progress, done.finished_at) == (TaskState.SUCCEEDED, "3", 1.0, 1009.0)
        assert done.served_queue == ""
        assert await state.indexes.in_flight_ledgers() == {}
        raw = fresh_redis.client()
        assert raw.get(KEYS.fence("a")) is None
        assert 0 < raw.ttl(KEYS.task("a")) <= 3600 and 0 < raw.ttl(KEYS.payload("a")) <= 3600
        assert (await state.indexes.counts())["succeeded"] == 1
        stats = (await state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]
        assert (stats["completed"], stats["run_sum"], stats["run_count"]) == (1.0, 4.0, 1.0)

    run(scenario)


def test_a_failure_retries_then_a_due_retry_is_promoted_to_pending(run):
    async def scenario(state: RedisState) -> None:
        await running(state, "a")
        retry = FailureOutcome(FailureAction.RETRY, 1100.0, "retry 1 of 3 in 90s")
        [failed] = await state.tasks.apply(
            [report("failed", "a", 1, 1010.0, error="boom", traceback="tb", error_type="ValueError")],
            [retry], RETENTION,
        )
        assert failed is not None
        assert (failed.state, failed.failures, failed.worker_id, failed.next_attempt_at) == (
            TaskState.RETRYING, 1, "", 1100.0)
        assert (failed.error, failed.traceback, failed.error_type, failed.reason) == (
            "boom", "tb", "ValueError", "retry 1 of 3 in 90s")
        assert await state.indexes.due_retries(1099.0) == []
        assert await state.indexes.due_retries(1100.0) == ["a"]
        assert (await state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]["retried"] == 1.0
        promoted = await state.tasks.promote("a", TaskState.RETRYING, "retry due")
        assert promoted is not None and (promoted.state, promoted.next_attempt_at) == (TaskState.PENDING, 0.0)
        assert await state.indexes.pending_ids() == ["a"]
        assert await state.indexes.due_retries(2000.0) == []
        assert await state.tasks.promote("a", TaskState.RETRYING, "again") is None

    run(scenario)


def test_a_dead_letter_is_listed_and_a_replay_makes_it_pending_for_good(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await running(state, "a")
        dead = FailureOutcome(FailureAction.DEAD_LETTER, 0.0, "retries exhausted")
        [failed] = await state.tasks.apply([report("failed", "a", 1, 1010.0, error="boom")], [dead], RETENTION)
        assert failed is not None and failed.state is TaskState.DEAD_LETTERED
        assert await state.indexes.dead_letters() == [("a", 1010.0)]
        assert 3600 < fresh_redis.client().ttl(KEYS.task("a")) <= 7200
        assert (await state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]["failed"] == 1.0
        replayed = await state.tasks.promote("a", TaskState.DEAD_LETTERED, "replayed")
        assert replayed is not None
        assert (replayed.state, replayed.failures, replayed.error, replayed.finished_at) == (
            TaskState.PENDING, 0, "", 0.0)
        assert fresh_redis.client().ttl(KEYS.task("a")) == -1
        assert await state.indexes.dead_letters() == []
        assert (await state.indexes.counts())["dead_lettered"] == 0

    run(scenario)


def test_a_failure_without_an_outcome_fails_the_task(run):
    async def scenario(state: RedisState) -> None:
        await running(state, "a")
        [failed] = await state.tasks.apply([report("failed", "a", 1, 1010.0, error="boom")], [None], RETENTION)
        assert failed is not None and (failed.state, failed.failures) == (TaskState.FAILED, 1)
        assert (await state.indexes.counts())["failed"] == 1

    run(scenario)


def test_a_stale_attempt_changes_nothing(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await running(state, "a")
        raw = fresh_redis.client()
        before = (raw.hgetall(KEYS.task("a")), raw.hgetall(KEYS.counts), raw.hgetall(KEYS.stats("cpu_standard")))
        replies = await state.tasks.apply(
            [report("succeeded", "a", 2, 1009.0, result_json="1"), report("failed", "a", 0, 1009.0),
             report("started", "a", 1, 1009.0), report("succeeded", "nope", 1, 1009.0)],
            [None, FailureOutcome(FailureAction.RETRY, 1.0, "x"), None, None], RETENTION,
        )
        assert replies == [None, None, None, None]
        after = (raw.hgetall(KEYS.task("a")), raw.hgetall(KEYS.counts), raw.hgetall(KEYS.stats("cpu_standard")))
        assert after == before

    run(scenario)


# --- worker loss and cancellation ---------------------------------------------------------


def test_requeue_fences_the_lost_attempt_and_frees_its_queue_slot(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted_and_dispatched(state, "a", "w1", served_queue="gpu_fallback")
        assert await state.tasks.requeue("a", "w2", "worker lost") is None
        back = await state.tasks.requeue("a", "w1", "re-queued: worker lost")
        assert back is not None
        assert (back.state, back.worker_id, back.served_queue, back.gpu_index, back.attempt) == (
            TaskState.PENDING, "", "", None, 1)
        assert fresh_redis.client().get(KEYS.fence("a")) == FENCE_REQUEUED
        assert await state.indexes.pending_ids() == ["a"]
        assert await state.indexes.in_flight_ledgers() == {}
        assert await state.tasks.requeue("a", "w1", "again") is None
        [late] = await state.tasks.apply([report("started", "a", 1, 1004.0)], [None], RETENTION)
        assert late is None

    run(scenario)


def test_cancel_in_each_state(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        raw = fresh_redis.client()
        missing = await state.tasks.cancel("nope", 1020.0, "by client", 3600)
        assert (missing.status, missing.previous_state, missing.task) == (CancelStatus.MISSING, None, None)

        await state.tasks.submit([new_task("pending")], 60)
        await submitted_and_dispatched(state, "dispatched")
        await running(state, "running")
        await running(state, "retrying")
        await state.tasks.apply([report("failed", "retrying", 1, 1010.0)],
                                [FailureOutcome(FailureAction.RETRY, 1100.0, "retry")], RETENTION)
        for task_id, previous in [("pending", TaskState.PENDING), ("dispatched", TaskState.DISPATCHED),
                                  ("running", TaskState.RUNNING), ("retrying", TaskState.RETRYING)]:
            outcome = await state.tasks.cancel(task_id, 1020.0, "by client", 3600)
            assert (outcome.status, outcome.previous_state) == (CancelStatus.OK, previous), task_id
            assert outcome.task is not None
            assert (outcome.task.state, outcome.task.finished_at, outcome.task.served_queue) == (
                TaskState.CANCELLED, 1020.0, "")
            assert raw.get(KEYS.fence(task_id)) == FENCE_CANCELLED
            assert raw.ttl(KEYS.fence(task_id)) > 3600 and 0 < raw.ttl(KEYS.task(task_id)) <= 3600
        assert await state.indexes.pending_ids() == []
        assert await state.indexes.in_flight_ledgers() == {}
        assert await state.indexes.due_retries(5000.0) == []
        assert (await state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]["cancelled"] == 4.0
        counts = await state.indexes.counts()
        assert counts["cancelled"] == 4
        assert all(counts[s] == 0 for s in ("pending", "dispatched", "running", "retrying"))

        again = await state.tasks.cancel("running", 1030.0, "twice", 3600)
        assert (again.status, again.previous_state) == (CancelStatus.TERMINAL, TaskState.CANCELLED)
        assert again.task is not None and again.task.finished_at == 1020.0

    run(scenario)


# --- dead letters, ledgers, controls ------------------------------------------------------


def test_dead_letters_newest_first_and_purge_only_dead_ones(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        dead = FailureOutcome(FailureAction.DEAD_LETTER, 0.0, "exhausted")
        for task_id, ts in [("old", 2000.0), ("new", 3000.0), ("replayed", 2500.0)]:
            await running(state, task_id)
            await state.tasks.apply([report("failed", task_id, 1, ts)], [dead], RETENTION)
        assert await state.indexes.dead_letters() == [("new", 3000.0), ("replayed", 2500.0), ("old", 2000.0)]
        await state.tasks.promote("replayed", TaskState.DEAD_LETTERED, "replayed")
        assert await state.indexes.purge_dead_letters(["old", "new", "replayed", "unknown"]) == 2
        assert await state.indexes.dead_letters() == []
        assert await state.tasks.get("old") is None and await state.tasks.get("new") is None
        assert fresh_redis.client().exists(KEYS.payload("old"), KEYS.payload("new")) == 0
        replayed = await state.tasks.get("replayed")
        assert replayed is not None and replayed.state is TaskState.PENDING
        assert (await state.indexes.counts())["dead_lettered"] == 0

    run(scenario)


def test_in_flight_ledgers_group_tasks_by_worker(run):
    async def scenario(state: RedisState) -> None:
        await state.tasks.submit([new_task(t) for t in ("a", "b", "c")], 60)
        await state.tasks.dispatch([hand_out("a", "w1"), hand_out("b", "w1"), hand_out("c", "gpu-2.x")], 1002.0, 1024)
        assert await state.indexes.in_flight_ledgers() == {"w1": {"a", "b"}, "gpu-2.x": {"c"}}

    run(scenario)


def test_paused_queues_and_worker_registrations_survive(run):
    async def scenario(state: RedisState) -> None:
        await state.controls.set_paused("gpu_priority", True)
        await state.controls.set_paused("cpu_batch", True)
        await state.controls.set_paused("cpu_batch", False)
        assert await state.controls.paused_queues() == {"gpu_priority"}
        first = WorkerRecord("w1", WorkerType.GPU, 4, {"zone": "a"})
        await state.controls.remember_worker(first)
        await state.controls.remember_worker(WorkerRecord("w2", WorkerType.CPU, 2))
        await state.controls.remember_worker(WorkerRecord("w1", WorkerType.HYBRID, 8))
        assert await state.controls.known_workers() == {
            "w1": WorkerRecord("w1", WorkerType.HYBRID, 8), "w2": WorkerRecord("w2", WorkerType.CPU, 2)}

    run(scenario)


# --- lifecycle stream ---------------------------------------------------------------------


def test_events_are_read_parsed_acknowledged_and_the_backlog_reread(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        raw = fresh_redis.client()
        await state.events.ensure_group()
        await state.events.ensure_group()
        raw.xadd(KEYS.events, {"type": "started", "task_id": "a", "attempt": "3", "worker_id": "w1", "ts": "12.5"})
        raw.xadd(KEYS.events, {"type": "failed", "task_id": "b", "attempt": "x", "worker_id": "w2", "ts": "soon",
                               "error": "boom"})
        first, second = await state.events.read(backlog=False, block_ms=100)
        assert (first.kind, first.task_id, first.attempt, first.worker_id, first.ts) == ("started", "a", 3, "w1", 12.5)
        assert (second.attempt, second.ts, second.fields["error"]) == (0, 0.0, "boom")
        assert await state.events.read(backlog=False, block_ms=10) == []
        assert [e.stream_id for e in await state.events.read(backlog=True)] == [first.stream_id, second.stream_id]
        await state.events.ack([first.stream_id, second.stream_id])
        assert await state.events.read(backlog=True) == []
        assert raw.xinfo_groups(KEYS.events)[0]["pending"] == 0

    run(scenario)


def test_a_malformed_attempt_is_dropped_as_stale(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await state.tasks.submit([new_task("a")], 60)  # pending: attempt 0 in the hash
        await state.events.ensure_group()
        fresh_redis.client().xadd(KEYS.events, {"type": "started", "task_id": "a", "attempt": "one", "ts": "1"})
        events = await state.events.read(backlog=False, block_ms=100)
        assert await state.tasks.apply(events, [None], RETENTION) == [None]
        record = await state.tasks.get("a")
        assert record is not None and record.state is TaskState.PENDING

    run(scenario)


def test_a_lost_consumer_group_is_recreated_by_the_reader(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        raw = fresh_redis.client()
        await state.events.ensure_group()
        raw.delete(KEYS.events)  # what a Redis that restarted empty looks like
        assert await state.events.read(backlog=True) == []
        raw.xadd(KEYS.events, {"type": "started", "task_id": "a", "attempt": "1", "ts": "1"})
        [event] = await state.events.read(backlog=False, block_ms=100)
        assert event.task_id == "a"
        assert [g["name"] for g in raw.xinfo_groups(KEYS.events)] == [EVENTS_GROUP]

    run(scenario)


# --- lost scripts and outages -------------------------------------------------------------


def test_scripts_heal_after_script_flush(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        raw = fresh_redis.client()
        raw.script_flush()
        await state.tasks.submit([new_task("a"), new_task("b"), new_task("c")], 60)
        raw.script_flush()
        assert all(await state.tasks.dispatch([hand_out("a"), hand_out("b")], 1002.0, 1024))
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
        await state.tasks.submit([new_task("a")], 60)
        fresh_redis.kill()
        try:
            with pytest.raises(StateUnavailable, match=r"can be retried"):
                await state.tasks.dispatch([hand_out("a")], 1002.0, 1024)
        finally:
            fresh_redis.start()
        # Same client, new server process (data back from the AOF, no scripts loaded).
        [outcome] = await state.tasks.dispatch([hand_out("a")], 1003.0, 1024)
        assert outcome is not None and outcome.task.attempt == 1

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
