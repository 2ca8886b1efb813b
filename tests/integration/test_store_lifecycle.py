"""The Redis store against a real redis-server, part two: lifecycle reports applied and
acknowledged in batches, worker loss and cancellation, dead letters, ledgers, controls and the
lifecycle stream. Part one (test_store.py): submissions, hand-outs, the claim, round trips, outages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from switchyard.wire import (
    EVENTS_GROUP,
    FENCE_CANCELLED,
    FENCE_REQUEUED,
    worker_queue,
)

from scheduler.core.model import TaskState, WorkerType
from scheduler.state.connection import RoundTrips
from scheduler.state.interface import (
    Applied,
    CancelStatus,
    FailureAction,
    FailureOutcome,
    NewTask,
)
from scheduler.state.records import TaskRecord, WorkerRecord
from scheduler.state.store import RedisState
from tests.support.redis_server import RedisServer
from tests.support.store_kit import (
    KEYS,
    RETENTION,
    Scenario,
    hand_out,
    new_task,
    report,
    run_scenario,
    running,
    submitted,
    submitted_and_dispatched,
)


@pytest.fixture()
def run(fresh_redis: RedisServer) -> Callable[[Scenario], Any]:
    """Run an async scenario against a RedisState on the module's (flushed) Redis."""
    return lambda scenario: run_scenario(fresh_redis.url, scenario)


# --- lifecycle reports --------------------------------------------------------------------


def test_started_and_progress_reports_move_a_dispatched_task(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted_and_dispatched(state, "a")
        started, progress = await state.tasks.apply(
            [report("started", "a", 1, 1005.0), report("progress", "a", 1, 1006.0, progress="0.5", message="half")],
            [None, None], RETENTION,
        )
        assert started is not None and (started.state, started.queue, started.worker_id) == (
            TaskState.RUNNING, "cpu_standard", "w1")
        assert progress is not None and progress.state is TaskState.RUNNING
        record = await state.tasks.get("a")
        assert record is not None
        assert (record.started_at, record.progress, record.progress_message) == (1005.0, 0.5, "half")
        assert fresh_redis.client().hget(KEYS.task("a"), "fence") == "1:started"
        assert (await state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"] == {}

    run(scenario)


def test_success_finishes_the_attempt_and_keeps_the_result_for_its_ttl(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await running(state, "a", served_queue="gpu_fallback")
        [applied] = await state.tasks.apply([report("succeeded", "a", 1, 1009.0, result_json="3")], [None], RETENTION)
        # How long it waited (submitted -> started) and ran, for the engine's queue statistics.
        assert applied == Applied(TaskState.SUCCEEDED, "cpu_standard", "w1", 5.0, 4.0)
        done = await state.tasks.get("a")
        assert done is not None
        assert (done.state, done.result_json, done.progress, done.finished_at) == (TaskState.SUCCEEDED, "3", 1.0, 1009.0)
        assert done.served_queue == ""
        assert await state.indexes.in_flight_ledgers() == {}
        raw = fresh_redis.client()
        assert raw.hget(KEYS.task("a"), "fence") == ""
        assert 0 < raw.ttl(KEYS.task("a")) <= 3600  # the payload lives in it and goes with it
        assert (await state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"] == {}  # the engine counts

    run(scenario)


def test_a_failure_retries_then_a_due_retry_is_promoted_to_pending(run):
    async def scenario(state: RedisState) -> None:
        await running(state, "a")
        retry = FailureOutcome(FailureAction.RETRY, 1100.0, "retry 1 of 3 in 90s")
        [applied] = await state.tasks.apply(
            [report("failed", "a", 1, 1010.0, error="boom", traceback="tb", error_type="ValueError")],
            [retry], RETENTION,
        )
        assert applied == Applied(TaskState.RETRYING, "cpu_standard", "w1", 5.0, 5.0)
        failed = await state.tasks.get("a")
        assert failed is not None
        assert (failed.state, failed.failures, failed.worker_id, failed.next_attempt_at) == (
            TaskState.RETRYING, 1, "", 1100.0)
        assert (failed.error, failed.traceback, failed.error_type, failed.reason) == (
            "boom", "tb", "ValueError", "retry 1 of 3 in 90s")
        assert await state.indexes.due_retries(1099.0) == []
        assert await state.indexes.due_retries(1100.0) == ["a"]
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
        [applied] = await state.tasks.apply([report("failed", "a", 1, 1010.0, error="boom")], [dead], RETENTION)
        assert applied == Applied(TaskState.DEAD_LETTERED, "cpu_standard", "w1", 5.0, 5.0)
        assert await state.indexes.dead_letters() == [("a", 1010.0)]
        assert 3600 < fresh_redis.client().ttl(KEYS.task("a")) <= 7200
        replayed = await state.tasks.promote("a", TaskState.DEAD_LETTERED, "replayed")
        assert replayed is not None
        assert (replayed.state, replayed.failures, replayed.error, replayed.finished_at) == (
            TaskState.PENDING, 0, "", 0.0)
        assert fresh_redis.client().ttl(KEYS.task("a")) == -1
        assert await state.indexes.dead_letters() == []

    run(scenario)


def test_a_failure_without_an_outcome_fails_the_task(run):
    async def scenario(state: RedisState) -> None:
        await running(state, "a")
        [applied] = await state.tasks.apply([report("failed", "a", 1, 1010.0, error="boom")], [None], RETENTION)
        assert applied == Applied(TaskState.FAILED, "cpu_standard", "w1", 5.0, 5.0)
        failed = await state.tasks.get("a")
        assert failed is not None and (failed.state, failed.failures) == (TaskState.FAILED, 1)

    run(scenario)


def test_a_stale_attempt_changes_nothing(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await running(state, "a")
        raw = fresh_redis.client()
        before = (raw.hgetall(KEYS.task("a")), raw.hgetall(KEYS.stats("cpu_standard")), raw.smembers(KEYS.inflight("w1")))
        replies = await state.tasks.apply(
            [report("succeeded", "a", 2, 1009.0, result_json="1"), report("failed", "a", 0, 1009.0),
             report("started", "a", 1, 1009.0), report("succeeded", "nope", 1, 1009.0)],
            [None, FailureOutcome(FailureAction.RETRY, 1.0, "x"), None, None], RETENTION,
        )
        assert replies == [None, None, None, None]
        after = (raw.hgetall(KEYS.task("a")), raw.hgetall(KEYS.stats("cpu_standard")), raw.smembers(KEYS.inflight("w1")))
        assert after == before

    run(scenario)


def test_apply_acknowledges_the_whole_batch_it_applied(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted_and_dispatched(state, "a")
        await state.events.ensure_group()
        raw = fresh_redis.client()
        for kind, attempt in (("progress", 1), ("succeeded", 1), ("succeeded", 7)):  # the last one is stale
            raw.xadd(KEYS.events, {"type": kind, "task_id": "a", "attempt": str(attempt), "worker_id": "w1",
                                   "ts": "1009.0", "progress": "0.5", "result_json": "1"})
        events = await state.events.read(backlog=False, block_ms=100)
        assert raw.xpending(KEYS.events, EVENTS_GROUP)["pending"] == 3
        applied = await state.tasks.apply(events, [None, None, None], RETENTION)
        assert [a.state if a else None for a in applied] == [TaskState.DISPATCHED, TaskState.SUCCEEDED, None]
        assert raw.xpending(KEYS.events, EVENTS_GROUP)["pending"] == 0
        assert await state.events.read(backlog=True) == []

    run(scenario)


def test_a_report_of_a_task_without_a_submission_time_does_not_poison_its_batch(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("ok"))
        timeless = new_task("timeless")
        await state.tasks.submit([[NewTask(TaskRecord(task_id="timeless", name="demo.add", queue="cpu_standard"),
                                           timeless.args_json, timeless.kwargs_json)]], 60)
        await state.tasks.dispatch([hand_out("ok"), hand_out("timeless")], 1002.0)
        applied = await state.tasks.apply([report("succeeded", "ok", 1, 1009.0, result_json="1"),
                                           report("succeeded", "timeless", 1, 1009.0, result_json="2")],
                                          [None, None], RETENTION)
        assert [a.state if a else None for a in applied] == [TaskState.SUCCEEDED, TaskState.SUCCEEDED]

    run(scenario)


def test_queue_statistics_add_up_in_one_round_trip(run):
    async def scenario(state: RedisState) -> None:
        await state.indexes.queue_stats(["warm"])
        deltas = {"cpu_standard": {"completed": 2.0, "wait_sum": 1.5, "run_sum": 0.25, "run_count": 2.0},
                  "gpu_priority": {"failed": 1.0}}
        before = RoundTrips.count
        await state.indexes.add_stats(deltas)
        assert RoundTrips.count - before == 1
        await state.indexes.add_stats({"cpu_standard": {"completed": 1.0, "wait_sum": 0.5}})
        assert await state.indexes.queue_stats(["cpu_standard", "gpu_priority"]) == {
            "cpu_standard": {"completed": 3.0, "wait_sum": 2.0, "run_sum": 0.25, "run_count": 2.0},
            "gpu_priority": {"failed": 1.0}}

    run(scenario)


# --- worker loss and cancellation ---------------------------------------------------------


def test_requeue_fences_the_lost_attempt_and_frees_its_queue_slot(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted_and_dispatched(state, "a", "w1", served_queue="gpu_fallback")
        assert await state.tasks.requeue("a", "w2", "worker lost") is None
        back = await state.tasks.requeue("a", "w1", "re-queued: worker lost")
        assert back is not None
        assert (back.state, back.worker_id, back.served_queue, back.gpu_index, back.attempt, back.reason) == (
            TaskState.PENDING, "", "", None, 1, "re-queued: worker lost")
        assert fresh_redis.client().hget(KEYS.task("a"), "fence") == FENCE_REQUEUED
        assert await state.indexes.pending_ids() == ["a"]
        assert await state.indexes.in_flight_ledgers() == {}
        assert await state.tasks.requeue("a", "w1", "again") is None
        [late] = await state.tasks.apply([report("started", "a", 1, 1004.0)], [None], RETENTION)
        assert late is None
        assert await state.tasks.dispatch([hand_out("a", "w2", attempt=2)], 1005.0) == [True]

    run(scenario)


def test_cancel_in_each_state(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        raw = fresh_redis.client()
        missing = await state.tasks.cancel("nope", 1020.0, "by client", 3600)
        assert (missing.status, missing.previous_state, missing.task) == (CancelStatus.MISSING, None, None)

        await submitted(state, new_task("pending"))
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
            assert raw.hget(KEYS.task(task_id), "fence") == FENCE_CANCELLED
            assert 0 < raw.ttl(KEYS.task(task_id)) <= 3600
        assert await state.indexes.pending_ids() == []
        assert await state.indexes.in_flight_ledgers() == {}
        assert await state.indexes.due_retries(5000.0) == []
        assert (await state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]["cancelled"] == 4.0

        again = await state.tasks.cancel("running", 1030.0, "twice", 3600)
        assert (again.status, again.previous_state) == (CancelStatus.TERMINAL, TaskState.CANCELLED)
        assert again.task is not None and again.task.finished_at == 1020.0

    run(scenario)


def test_a_lost_worker_s_celery_queue_is_purged(run, fresh_redis):
    async def scenario(state: RedisState) -> None:
        await submitted(state, new_task("a"), new_task("b"), new_task("c"))
        await state.tasks.dispatch([hand_out("a"), hand_out("b"), hand_out("c", "w2")], 1002.0)
        assert await state.controls.purge_worker_queue("w1") == 2
        assert await state.controls.purge_worker_queue("w1") == 0
        raw = fresh_redis.client()
        assert raw.exists(worker_queue("w1")) == 0 and raw.llen(worker_queue("w2")) == 1

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
        assert fresh_redis.client().exists(KEYS.task("old"), KEYS.task("new")) == 0  # payload and fence with them
        replayed = await state.tasks.get("replayed")
        assert replayed is not None and replayed.state is TaskState.PENDING

    run(scenario)


def test_in_flight_ledgers_group_tasks_by_worker(run):
    async def scenario(state: RedisState) -> None:
        await submitted(state, *(new_task(t) for t in ("a", "b", "c")))
        await state.tasks.dispatch([hand_out("a", "w1"), hand_out("b", "w1"), hand_out("c", "gpu-2.x")], 1002.0)
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
        await submitted(state, new_task("a"))  # pending: attempt 0 in the hash
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
