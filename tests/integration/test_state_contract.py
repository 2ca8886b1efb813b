"""The in-memory FakeState keeps the contract of the real RedisState: each scenario runs against
both (the Redis one on a private redis-server), so the engine's unit tests, which run on the
fake, stand on the semantics of the Lua scripts.

A scenario acts as the engine (state.tasks / indexes / controls / events) and as a worker (its
Celery queue, the fenced claim, reports appended to the lifecycle stream) and checks what a user
would see: task state, attempt, worker, fence, payload, queued Celery messages, indexes and queue
statistics. A second test runs each scenario on both and compares everything they hold at the
end, field by field, the queued messages decoded as a worker's consumer decodes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from switchyard.wire import FENCE_CANCELLED, FENCE_REQUEUED, fence_started

from scheduler.core.model import TaskState, WorkerType
from scheduler.dispatch import msgpack_celery_body
from scheduler.state.interface import (
    Applied,
    CancelStatus,
    FailureAction,
    FailureOutcome,
    IdempotencyConflict,
    LifecycleEvent,
    NewTask,
    Reclaim,
    Retention,
    Started,
    SubmitGroup,
    SubmitOutcome,
)
from scheduler.state.records import TaskRecord, WorkerRecord
from tests.support.celery_queue import QueuedMessage, hand_out_request
from tests.support.redis_server import RedisServer
from tests.support.state_backends import Backend, FakeBackend, RedisBackend

RETENTION = Retention(result_ttl_seconds=3600, dead_letter_ttl_seconds=3600)
T0 = 1_000.0
"""Submission time of every task of a scenario."""
Q = "cpu_standard"


@pytest.fixture(params=["fake", "redis"])
def make_backend(request: pytest.FixtureRequest) -> Callable[[], Backend]:
    """A factory (a backend must be built inside the test's event loop)."""
    if request.param == "fake":
        return FakeBackend
    server: RedisServer = request.getfixturevalue("fresh_redis")
    return lambda: RedisBackend(server.url)


def new_task(task_id: str, *, queue: str = Q, priority: int = 5, key: str = "",
             digest: str = "d", payload: tuple[str, str] = ("[1]", "{}"), at: float = T0) -> NewTask:
    record = TaskRecord(task_id=task_id, name="t.job", queue=queue, priority=priority,
                        labels={"zone": "a"}, submitted_at=at, idempotency_key=key, payload_digest=digest,
                        payload_bytes=len(payload[0]) + len(payload[1]), retry_policy="flaky",
                        reason="classified", class_reason="classified")
    return NewTask(record, *payload)


hand_out = hand_out_request


async def submit(b: Backend, *groups: SubmitGroup) -> list[list[SubmitOutcome] | IdempotencyConflict]:
    results, handed = await b.state.tasks.submit(groups, 60)
    assert handed == []
    return results


async def submitted(b: Backend, *task_ids: str) -> None:
    (outcomes,) = await submit(b, [new_task(t) for t in task_ids])
    assert not isinstance(outcomes, IdempotencyConflict)


async def deliver(b: Backend, outcome: FailureOutcome | None = None) -> list[Applied | None]:
    """Read the reports workers appended and apply them as the engine does (which acknowledges them)."""
    events = await b.state.events.read(backlog=False, block_ms=1)
    outcomes = [outcome if e.kind == "failed" else None for e in events]
    return await b.state.tasks.apply(events, outcomes, RETENTION)


async def record(b: Backend, task_id: str) -> TaskRecord:
    stored = await b.state.tasks.get(task_id)
    assert stored is not None, task_id
    return stored


async def state_of(b: Backend, task_id: str) -> TaskState | None:
    stored = await b.state.tasks.get(task_id)
    return stored.state if stored else None


def contents(messages: list[QueuedMessage]) -> list[tuple[str, int, object, object]]:
    return [(m.task_id, m.attempt, m.args, m.kwargs) for m in messages]


# --- submissions --------------------------------------------------------------------------


async def submit_writes_pending_tasks_in_order(b: Backend) -> None:
    (outcomes,) = await submit(b, [new_task("a"), new_task("b", priority=9), new_task("c")])
    assert outcomes == [SubmitOutcome("a", False, 1), SubmitOutcome("b", False, 2), SubmitOutcome("c", False, 3)]
    assert await b.state.indexes.pending_ids() == ["a", "b", "c"]
    assert await record(b, "a") == replace(new_task("a").record, seq=1, state=TaskState.PENDING, attempt=0)
    assert await b.payload("a") == ("[1]", "{}")
    assert await b.fence("a") is None
    assert [r.task_id for r in await b.state.tasks.load(["c", "missing", "a"])] == ["c", "a"]
    assert await b.state.tasks.get("missing") is None


async def same_key_and_payload_is_deduplicated(b: Backend) -> None:
    await submit(b, [new_task("a", key="k1")])
    (again,) = await submit(b, [new_task("a2", key="k1"), new_task("b", key="k2"), new_task("b2", key="k2")])
    assert again == [SubmitOutcome("a", True), SubmitOutcome("b", False, 2), SubmitOutcome("b", True)]
    assert await b.state.tasks.get("a2") is None and await b.state.tasks.get("b2") is None
    assert await b.state.indexes.pending_ids() == ["a", "b"]


async def a_conflict_writes_nothing_of_its_group_and_other_groups_go_on(b: Backend) -> None:
    await submit(b, [new_task("a", key="k1", digest="one")])
    clash, inside, fine, later = await submit(
        b, [new_task("fresh"), new_task("a2", key="k1", digest="two")],
        [new_task("x", key="k9", digest="one"), new_task("y", key="k9", digest="two")],
        [new_task("b", key="k3")],
        [new_task("b2", key="k3"), new_task("c", key="k3", digest="other")],
    )
    assert isinstance(clash, IdempotencyConflict) and (clash.index, clash.existing_task_id) == (1, "a")
    assert isinstance(inside, IdempotencyConflict) and (inside.index, inside.existing_task_id) == (1, "")
    assert fine == [SubmitOutcome("b", False, 2)]
    # An earlier group of the same call already holds k3: a later group sees it.
    assert isinstance(later, IdempotencyConflict) and (later.index, later.existing_task_id) == (1, "b")
    assert await b.state.indexes.pending_ids() == ["a", "b"]
    assert await b.state.tasks.load(["fresh", "a2", "x", "y", "b2", "c"]) == []
    (unbound,) = await submit(b, [new_task("z", key="k9", digest="two")])  # k9 was never bound
    assert unbound == [SubmitOutcome("z", False, 3)]


# --- hand-outs ----------------------------------------------------------------------------


async def dispatch_fences_a_new_attempt_and_queues_its_message(b: Backend) -> None:
    await submitted(b, "a", "b", "c")
    handed = await b.state.tasks.dispatch(
        [hand_out("a", gpu_index=1, served_queue="gpu_fallback"), hand_out("a", "w2"), hand_out("c"),
         hand_out("b", "w2", by_reference=True)], T0 + 2)
    assert handed == [True, False, True, True]
    task = await record(b, "a")
    assert (task.state, task.attempt, task.worker_id, task.gpu_index, task.served_queue) == (
        TaskState.DISPATCHED, 1, "w1", 1, "gpu_fallback")
    assert (task.dispatched_at, task.reason, task.started_at, task.progress) == (T0 + 2, "placed on w1", 0.0, 0.0)
    assert [await b.fence(t) for t in ("a", "b", "c")] == ["1", "1", "1"]
    assert await b.state.indexes.pending_ids() == []
    assert await b.state.indexes.in_flight_ledgers() == {"w1": {"a", "c"}, "w2": {"b"}}
    # One message per hand-out, in round order; the refused one wrote nothing.
    assert contents(await b.queued("w1")) == [("a", 1, [1], {}), ("c", 1, [1], {})]
    (by_reference,) = await b.queued("w2")
    assert (by_reference.task_id, by_reference.by_reference, by_reference.args, by_reference.kwargs) == (
        "b", True, [], {})
    assert await b.payload("b") == ("[1]", "{}")  # the claim hands it over


async def msgpack_hand_outs_carry_the_body_built_at_submission(b: Backend) -> None:
    # Integers beyond 2^53 (exact in msgpack's uint64), empty objects and arrays, null, non-ASCII.
    args, kwargs = '[1, "\u00e9", [], {}]', '{"big": 18446744073709551615, "empty": {}, "none": null, "f": 1.5}'
    body = msgpack_celery_body(args, kwargs)
    inline = new_task("a", payload=(args, kwargs))
    inline = NewTask(replace(inline.record, serializer="msgpack", body_ready=True), args, kwargs, body)
    by_reference = NewTask(replace(new_task("b").record, serializer="msgpack"), "[1]", "{}")
    await submit(b, [inline, by_reference, new_task("c")])
    # Decided at submission: a built body travels inline whatever the inline limit says now.
    assert [(await record(b, t)).pending_task(0).by_reference for t in ("a", "b", "c")] == [False, True, True]
    handed = await b.state.tasks.dispatch(
        [hand_out("a", serializer="msgpack"), hand_out("b", by_reference=True, serializer="msgpack"),
         hand_out("c")], T0 + 2)
    assert handed == [True, True, True]
    first, second, third = await b.queued("w1")
    assert contents([first, second, third]) == [
        ("a", 1, [1, "\u00e9", [], {}], {"big": 2**64 - 1, "empty": {}, "none": None, "f": 1.5}),
        ("b", 1, [], {}), ("c", 1, [1], {})]
    assert [m.properties["body_encoding"] for m in (first, second, third)] == ["base64", "base64", "utf-8"]
    assert second.by_reference and not first.by_reference
    assert first.headers["argsrepr"] == args  # the repr stays readable JSON


async def dispatch_refuses_a_task_not_pending_at_the_previous_attempt(b: Backend) -> None:
    await submitted(b, "a", "b")
    assert await b.state.tasks.dispatch([hand_out("a", attempt=2), hand_out("missing"), hand_out("b", attempt=0)],
                                        T0 + 1) == [False, False, False]
    assert await b.queued("w1") == []
    assert [await state_of(b, t) for t in ("a", "b")] == [TaskState.PENDING, TaskState.PENDING]
    assert await b.state.indexes.in_flight_ledgers() == {}
    assert await b.state.tasks.dispatch([hand_out("a")], T0 + 1) == [True]
    assert await b.state.tasks.requeue("a", "w1", "lost") is not None
    assert await b.state.tasks.dispatch([hand_out("a", "w2")], T0 + 2) == [False]  # pending at attempt 1 now
    assert await b.state.tasks.dispatch([hand_out("a", "w2", attempt=2)], T0 + 2) == [True]
    assert contents(await b.queued("w1")) == [("a", 1, [1], {})]
    assert contents(await b.queued("w2")) == [("a", 2, [1], {})]


async def sync_match_hands_out_in_the_submit_round_trip(b: Backend) -> None:
    await submit(b, [new_task("a", key="k1", digest="one")])
    results, handed = await b.state.tasks.submit(
        [[new_task("b")], [new_task("c"), new_task("a2", key="k1", digest="two")]], 60,
        hand_outs=[hand_out("b"), hand_out("c", "w2")], now=T0 + 1)
    assert results[0] == [SubmitOutcome("b", False, 2)] and isinstance(results[1], IdempotencyConflict)
    assert handed == [True, False]  # c's group was refused: nothing to hand out
    task = await record(b, "b")
    assert (task.state, task.worker_id, task.attempt, task.dispatched_at) == (TaskState.DISPATCHED, "w1", 1, T0 + 1)
    assert contents(await b.queued("w1")) == [("b", 1, [1], {})]
    assert await b.queued("w2") == []
    assert await b.state.indexes.pending_ids() == ["a"]


async def a_ran_and_reported(b: Backend) -> list[LifecycleEvent]:
    """Tasks a, b and c submitted; a handed to w1, run, its success reported and read."""
    await submitted(b, "a", "b", "c")
    await b.state.tasks.dispatch([hand_out("a")], T0 + 1)
    assert await b.claim("a", 1, "w1", T0 + 2)
    await b.report("succeeded", "a", 1, "w1", T0 + 4, result_json="1")
    return await b.state.events.read(backlog=False, block_ms=1)


async def a_completion_hands_the_freed_slot_out_in_the_same_round_trip(b: Backend) -> None:
    events = await a_ran_and_reported(b)
    applied, handed = await b.state.tasks.apply_then_dispatch(
        events, [None], RETENTION, [hand_out("b"), hand_out("a", attempt=2)], T0 + 4)
    assert applied == [Applied(TaskState.SUCCEEDED, Q, "w1", 2.0, 2.0)] and handed == [True, False]
    assert contents(await b.queued("w1")) == [("a", 1, [1], {}), ("b", 1, [1], {})]
    assert await b.state.indexes.in_flight_ledgers() == {"w1": {"b"}}
    assert await b.unacked() == 0
    await b.report("progress", "b", 1, "w1", T0 + 5, progress="0.5")
    events = await b.state.events.read(backlog=False, block_ms=1)
    assert await b.state.tasks.apply_then_dispatch(events, [None], RETENTION, [], T0 + 5) == (
        [Applied(TaskState.DISPATCHED, Q, "w1")], [])
    assert await b.state.indexes.pending_ids() == ["c"]


async def the_lifecycle_round_sends_its_next_read_with_its_script(b: Backend) -> None:
    events = await a_ran_and_reported(b)
    applied, handed, next_reports = await b.state.tasks.apply_dispatch_and_read(
        events, [None], RETENTION, [hand_out("b")], T0 + 4)
    assert applied == [Applied(TaskState.SUCCEEDED, Q, "w1", 2.0, 2.0)] and handed == [True]
    assert contents(await b.queued("w1")) == [("a", 1, [1], {}), ("b", 1, [1], {})]
    assert await b.unacked() == 0
    # The read sent with the round gets the report that comes next.
    assert await b.claim("b", 1, "w1", T0 + 5)
    await b.report("succeeded", "b", 1, "w1", T0 + 6, result_json="2")
    events = await next_reports.wait()
    assert [(e.task_id, e.kind) for e in events] == [("b", "succeeded")]
    applied, handed, next_reports = await b.state.tasks.apply_dispatch_and_read(events, [None], RETENTION, [], T0 + 6)
    assert applied == [Applied(TaskState.SUCCEEDED, Q, "w1", 5.0, 1.0)] and handed == []
    # Given up, a read loses nothing: what it may have taken meanwhile is read again as backlog.
    next_reports.drop()
    await b.state.tasks.dispatch([hand_out("c")], T0 + 7)
    await b.report("progress", "c", 1, "w1", T0 + 8, progress="0.5")
    later = await b.state.events.read(backlog=True) + await b.state.events.read(backlog=False, block_ms=1)
    assert [(e.task_id, e.kind) for e in later] == [("c", "progress")]


# --- the worker's side --------------------------------------------------------------------


async def a_claimed_attempt_runs_and_succeeds(b: Backend) -> None:
    await submitted(b, "a")
    await b.state.tasks.dispatch([hand_out("a")], T0 + 1)
    assert not await b.claim("a", 2, "w1", T0 + 2)
    assert await b.claim("a", 1, "w1", T0 + 2)
    assert not await b.claim("a", 1, "w1", T0 + 2)  # a redelivered message does not run twice
    assert await b.fence("a") == fence_started(1)
    running = await record(b, "a")
    assert (running.state, running.started_at) == (TaskState.RUNNING, T0 + 2)
    await b.report("progress", "a", 1, "w1", T0 + 3, progress="0.5", message="half")
    assert await deliver(b) == [Applied(TaskState.RUNNING, Q, "w1")]
    halfway = await record(b, "a")
    assert (halfway.progress, halfway.progress_message) == (0.5, "half")
    await b.report("succeeded", "a", 1, "w1", T0 + 6, result_json='{"ok": true}')
    # Waited from submission to the claim's start, ran from there to the report.
    assert await deliver(b) == [Applied(TaskState.SUCCEEDED, Q, "w1", 2.0, 4.0)]
    done = await record(b, "a")
    assert (done.state, done.result_json, done.finished_at, done.progress, done.started_at) == (
        TaskState.SUCCEEDED, '{"ok": true}', T0 + 6, 1.0, T0 + 2)
    assert await b.fence("a") == ""
    assert await b.state.indexes.in_flight_ledgers() == {}
    assert await b.unacked() == 0
    assert await b.state.indexes.queue_stats([Q]) == {Q: {}}  # the engine keeps those counters


async def a_separate_started_report_moves_a_dispatched_task_once(b: Backend) -> None:
    await submitted(b, "a")
    await b.state.tasks.dispatch([hand_out("a")], T0 + 1)
    await b.report("started", "a", 1, "w1", T0 + 2)
    await b.report("started", "a", 1, "w1", T0 + 3)
    assert await deliver(b) == [Applied(TaskState.RUNNING, Q, "w1"), None]
    assert (await record(b, "a")).started_at == T0 + 2
    assert await b.fence("a") == fence_started(1)
    assert not await b.claim("a", 1, "w1", T0 + 4)


async def a_claim_announces_its_start(b: Backend) -> None:
    await submitted(b, "a", "quiet")
    await b.state.tasks.dispatch([hand_out("a"), hand_out("quiet")], T0 + 1)
    await b.state.tasks.watch("a")
    await b.state.tasks.watch("missing")  # no such task: nothing is created
    assert await b.state.tasks.load(["missing"]) == []
    starts = b.state.events.started()
    heard = asyncio.ensure_future(anext(starts))
    try:
        for _ in range(500):  # until the subscription is in place (pub/sub keeps nothing for later)
            if await b.subscribers():
                break
            await asyncio.sleep(0.01)
        assert not await b.claim("a", 2, "w1", T0 + 2)  # refused: announces nothing
        assert await b.claim("quiet", 1, "w1", T0 + 2)  # nobody watches it: announces nothing
        assert await b.claim("a", 1, "w1", T0 + 2)
        # Announcements arrive in order: had either claim before it announced, that came first.
        assert await asyncio.wait_for(heard, timeout=5) == Started("a", 1, "w1")
    finally:
        heard.cancel()
        await starts.aclose()  # type: ignore[attr-defined]


async def a_stale_attempt_changes_nothing(b: Backend) -> None:
    await submitted(b, "a")
    await b.state.tasks.dispatch([hand_out("a", "w1")], T0 + 1)
    assert await b.state.tasks.requeue("a", "w1", "worker lost") is not None
    await b.state.tasks.dispatch([hand_out("a", "w2", attempt=2)], T0 + 2)
    assert not await b.claim("a", 1, "w1", T0 + 3)
    await b.report("started", "a", 1, "w1", T0 + 3)
    await b.report("succeeded", "a", 1, "w1", T0 + 4, result_json="1")
    await b.report("failed", "a", 1, "w1", T0 + 4, error="boom")
    await b.report("progress", "a", 1, "w1", T0 + 4, progress="0.9")
    assert await deliver(b, FailureOutcome(FailureAction.FAIL, 0.0, "failed")) == [None, None, None, None]
    assert await b.unacked() == 0  # stale reports are acknowledged all the same
    task = await record(b, "a")
    assert (task.state, task.attempt, task.worker_id, task.progress) == (TaskState.DISPATCHED, 2, "w2", 0.0)
    assert await b.state.indexes.in_flight_ledgers() == {"w2": {"a"}}
    assert await b.state.indexes.queue_stats([Q]) == {Q: {}}


# --- failures, loss, cancellation ---------------------------------------------------------


async def failures_retry_then_dead_letter_or_fail(b: Backend) -> None:
    await submitted(b, "a", "b")
    await b.state.tasks.dispatch([hand_out("a"), hand_out("b")], T0 + 1)
    assert await b.claim("a", 1, "w1", T0 + 2)
    await b.report("failed", "a", 1, "w1", T0 + 3, error="ValueError: x", traceback="tb", error_type="ValueError")
    assert await deliver(b, FailureOutcome(FailureAction.RETRY, T0 + 60, "retry 1 of 2")) == [
        Applied(TaskState.RETRYING, Q, "w1", 2.0, 1.0)]
    retrying = await record(b, "a")
    assert (retrying.state, retrying.failures, retrying.worker_id, retrying.next_attempt_at) == (
        TaskState.RETRYING, 1, "", T0 + 60)
    assert (retrying.error, retrying.traceback, retrying.error_type, retrying.reason) == (
        "ValueError: x", "tb", "ValueError", "retry 1 of 2")
    assert await b.fence("a") == ""
    assert await b.state.indexes.due_retries(T0 + 59) == []
    assert await b.state.indexes.due_retries(T0 + 60) == ["a"]
    assert await b.state.tasks.promote("a", TaskState.DEAD_LETTERED, "wrong state") is None
    again = await b.state.tasks.promote("a", TaskState.RETRYING, "retry due")
    assert again is not None and (again.state, again.attempt, again.next_attempt_at, again.reason) == (
        TaskState.PENDING, 1, 0.0, "retry due")
    assert await b.state.indexes.due_retries(T0 + 60) == []
    assert await b.state.tasks.dispatch([hand_out("a", "w2", attempt=2)], T0 + 61) == [True]
    assert await b.fence("a") == "2"
    await b.report("failed", "a", 2, "w2", T0 + 62, error="ValueError: y")
    # Never claimed: it counts as started when it ended.
    assert await deliver(b, FailureOutcome(FailureAction.DEAD_LETTER, 0.0, "out of retries")) == [
        Applied(TaskState.DEAD_LETTERED, Q, "w2", 62.0, 0.0)]
    dead = await record(b, "a")
    assert (dead.state, dead.failures, dead.finished_at) == (TaskState.DEAD_LETTERED, 2, T0 + 62)
    assert await b.state.indexes.dead_letters() == [("a", T0 + 62)]
    await b.report("failed", "b", 1, "w1", T0 + 5, error="E")
    assert await deliver(b, None) == [Applied(TaskState.FAILED, Q, "w1", 5.0, 0.0)]
    failed = await record(b, "b")
    assert (failed.state, failed.failures, failed.reason) == (TaskState.FAILED, 1, "")


async def requeue_moves_an_attempt_back_and_fences_it(b: Backend) -> None:
    await submitted(b, "a", "b")
    await b.state.tasks.dispatch([hand_out("b"), hand_out("a", gpu_index=0)], T0 + 1)
    assert await b.claim("a", 1, "w1", T0 + 2)
    assert await b.state.tasks.requeue("a", "w2", "not there") is None
    back = await b.state.tasks.requeue("a", "w1", "re-queued: worker lost")
    assert back is not None
    assert (back.state, back.worker_id, back.attempt, back.gpu_index, back.started_at, back.reason) == (
        TaskState.PENDING, "", 1, None, 0.0, "re-queued: worker lost")
    assert await b.fence("a") == FENCE_REQUEUED
    assert not await b.claim("a", 1, "w1", T0 + 3)
    assert await b.state.tasks.requeue("a", "w1", "twice") is None
    assert await b.state.indexes.pending_ids() == ["a"]
    assert await b.state.indexes.in_flight_ledgers() == {"w1": {"b"}}


async def a_requeue_does_not_count_as_a_failure(b: Backend) -> None:
    """A lost worker is not the task's fault: the attempt moves on, the failure count does not,
    so the retry policy (which decides on failures + 1) still grants every remaining retry."""
    await submitted(b, "a")
    await b.state.tasks.dispatch([hand_out("a")], T0 + 1)
    await b.report("failed", "a", 1, "w1", T0 + 2, error="ValueError: x", error_type="ValueError")
    await deliver(b, FailureOutcome(FailureAction.RETRY, T0 + 3, "retry 1 of 2"))
    assert await b.state.tasks.promote("a", TaskState.RETRYING, "retry due") is not None
    assert await b.state.tasks.dispatch([hand_out("a", attempt=2)], T0 + 4) == [True]
    assert await b.claim("a", 2, "w1", T0 + 5)
    back = await b.state.tasks.requeue("a", "w1", "re-queued: worker w1 was lost")
    assert back is not None and (back.state, back.attempt, back.failures) == (TaskState.PENDING, 2, 1)
    assert await b.state.tasks.dispatch([hand_out("a", "w2", attempt=3)], T0 + 6) == [True]
    again = await record(b, "a")
    assert (again.state, again.worker_id, again.attempt, again.failures) == (TaskState.DISPATCHED, "w2", 3, 1)


async def a_hand_out_that_never_started_is_taken_back_or_failed(b: Backend) -> None:
    await submitted(b, "a", "b", "c")
    await b.state.tasks.dispatch([hand_out("a"), hand_out("b"), hand_out("c")], T0 + 1)
    assert await b.claim("b", 1, "w1", T0 + 2)
    reclaim = b.state.tasks.reclaim_unstarted
    assert await reclaim(Reclaim("a", "w2", 1, "not there"), 3600) is None
    assert await reclaim(Reclaim("a", "w1", 2, "another attempt"), 3600) is None
    assert await reclaim(Reclaim("b", "w1", 1, "it started"), 3600) is None
    assert await state_of(b, "b") is TaskState.RUNNING
    back = await reclaim(Reclaim("a", "w1", 1, "re-queued: not started"), 3600)
    assert back is not None
    assert (back.state, back.worker_id, back.attempt, back.start_returns, back.dispatched_at, back.reason) == (
        TaskState.PENDING, "", 1, 1, 0.0, "re-queued: not started")
    assert await b.fence("a") == FENCE_REQUEUED
    assert not await b.claim("a", 1, "w1", T0 + 3)
    assert await reclaim(Reclaim("a", "w1", 1, "twice"), 3600) is None
    # The returns add up over hand-outs.
    assert await b.state.tasks.dispatch([hand_out("a", "w2", attempt=2)], T0 + 4) == [True]
    again = await reclaim(Reclaim("a", "w2", 2, "re-queued: not started again"), 3600)
    assert again is not None and (again.state, again.attempt, again.start_returns) == (TaskState.PENDING, 2, 2)
    failed = await reclaim(Reclaim("c", "w1", 1, "not started within 60s", T0 + 70, "NotStarted"), 3600)
    assert failed is not None
    assert (failed.state, failed.worker_id, failed.finished_at, failed.error, failed.error_type, failed.reason,
            failed.start_returns) == (TaskState.FAILED, "w1", T0 + 70, "not started within 60s", "NotStarted",
                                      "not started within 60s", 0)
    assert await b.fence("c") == ""
    assert not await b.claim("c", 1, "w1", T0 + 71)
    assert await b.state.indexes.pending_ids() == ["a"]
    assert await b.state.indexes.in_flight_ledgers() == {"w1": {"b"}}


async def a_running_attempt_no_longer_reported_is_taken_back(b: Backend) -> None:
    await submitted(b, "a", "b", "c")
    await b.state.tasks.dispatch([hand_out("a"), hand_out("b"), hand_out("c")], T0 + 1)
    for task_id in ("a", "c"):
        assert await b.claim(task_id, 1, "w1", T0 + 2)
    reclaim = b.state.tasks.reclaim_unreported
    assert await reclaim("a", "w2", 1, "not there") is None
    assert await reclaim("a", "w1", 2, "another attempt") is None
    assert await reclaim("b", "w1", 1, "never started") is None
    assert await state_of(b, "b") is TaskState.DISPATCHED
    back = await reclaim("a", "w1", 1, "re-queued: its outcome never arrived")
    assert back is not None
    assert (back.state, back.worker_id, back.attempt, back.start_returns, back.started_at, back.reason) == (
        TaskState.PENDING, "", 1, 0, 0.0, "re-queued: its outcome never arrived")
    assert await b.fence("a") == FENCE_REQUEUED
    assert await reclaim("a", "w1", 1, "twice") is None
    # Its outcome, should it arrive after all, is stale: the task stays pending.
    await b.report("succeeded", "a", 1, "w1", T0 + 3, result_json="1")
    await deliver(b)
    assert await state_of(b, "a") is TaskState.PENDING
    # An outcome that arrived first wins: nothing is taken back.
    await b.report("succeeded", "c", 1, "w1", T0 + 3, result_json="2")
    await deliver(b)
    assert await reclaim("c", "w1", 1, "too late") is None
    assert await state_of(b, "c") is TaskState.SUCCEEDED
    assert await b.state.indexes.pending_ids() == ["a"]
    assert await b.state.indexes.in_flight_ledgers() == {"w1": {"b"}}


async def cancel_in_each_state(b: Backend) -> None:
    await submitted(b, "pending", "dispatched", "running", "retrying", "done")
    await b.state.tasks.dispatch([hand_out(t) for t in ("dispatched", "running", "retrying", "done")], T0 + 1)
    for task_id in ("running", "retrying", "done"):
        assert await b.claim(task_id, 1, "w1", T0 + 2)
    await b.report("failed", "retrying", 1, "w1", T0 + 3, error="E")
    await deliver(b, FailureOutcome(FailureAction.RETRY, T0 + 100, "retry"))
    await b.report("succeeded", "done", 1, "w1", T0 + 3, result_json="1")
    await deliver(b)
    for task_id in ("pending", "dispatched", "running", "retrying"):
        outcome = await b.state.tasks.cancel(task_id, T0 + 10, "cancelled by client", 3600)
        assert (outcome.status, outcome.previous_state) == (CancelStatus.OK, TaskState(task_id))
        assert outcome.task is not None
        assert (outcome.task.state, outcome.task.finished_at, outcome.task.reason) == (
            TaskState.CANCELLED, T0 + 10, "cancelled by client")
        assert await b.fence(task_id) == FENCE_CANCELLED
    terminal = await b.state.tasks.cancel("done", T0 + 10, "too late", 3600)
    assert (terminal.status, terminal.previous_state) == (CancelStatus.TERMINAL, TaskState.SUCCEEDED)
    assert terminal.task is not None and terminal.task.state is TaskState.SUCCEEDED
    missing = await b.state.tasks.cancel("nope", T0 + 10, "?", 3600)
    assert (missing.status, missing.previous_state, missing.task) == (CancelStatus.MISSING, None, None)
    assert not await b.claim("dispatched", 1, "w1", T0 + 11)
    assert await b.state.indexes.pending_ids() == []
    assert await b.state.indexes.in_flight_ledgers() == {}
    assert await b.state.indexes.due_retries(float("inf")) == []
    assert (await b.state.indexes.queue_stats([Q]))[Q]["cancelled"] == 4.0


async def dead_letters_replay_and_purge(b: Backend) -> None:
    await submitted(b, "a", "b", "c")
    await b.state.tasks.dispatch([hand_out("a"), hand_out("b"), hand_out("c")], T0 + 1)
    for n, task_id in enumerate(("a", "b")):
        await b.report("failed", task_id, 1, "w1", T0 + 10 + n, error="E", error_type="ValueError")
    await deliver(b, FailureOutcome(FailureAction.DEAD_LETTER, 0.0, "dead"))
    assert await b.state.indexes.dead_letters() == [("b", T0 + 11), ("a", T0 + 10)]
    replayed = await b.state.tasks.promote("a", TaskState.DEAD_LETTERED, "replayed from dead letters")
    assert replayed is not None
    assert (replayed.state, replayed.failures, replayed.error, replayed.error_type, replayed.finished_at) == (
        TaskState.PENDING, 0, "", "", 0.0)
    assert await b.state.indexes.pending_ids() == ["a"]
    assert await b.state.indexes.purge_dead_letters(["b", "c", "a", "nope"]) == 1
    assert await b.state.tasks.get("b") is None
    assert await b.payload("b") == (None, None) and await b.fence("b") is None  # they lived in its hash
    assert await b.state.indexes.dead_letters() == []
    assert [await state_of(b, t) for t in ("a", "c")] == [TaskState.PENDING, TaskState.DISPATCHED]


async def the_task_index_pages_newest_first_and_sweeps_gone_tasks(b: Backend) -> None:
    indexes = b.state.indexes
    await submitted(b, "a", "b", "c")
    await submitted(b, "x")
    assert await indexes.newest_tasks(0, 10) == [("x", 4), ("c", 3), ("b", 2), ("a", 1)]
    assert await indexes.newest_tasks(3, 1) == [("b", 2)]
    await b.state.tasks.dispatch([hand_out("b"), hand_out("c")], T0 + 1)
    # Dispatched tasks leave the pending index, never the index of kept tasks.
    assert await indexes.newest_tasks(0, 10, pending_only=True) == [("x", 4), ("a", 1)]
    assert [task_id for task_id, _seq in await indexes.newest_tasks(0, 10)] == ["x", "c", "b", "a"]
    await b.report("failed", "b", 1, "w1", T0 + 10, error="E", error_type="ValueError")
    await deliver(b, FailureOutcome(FailureAction.DEAD_LETTER, 0.0, "dead"))
    assert await indexes.purge_dead_letters(["b"]) == 1
    # A purged dead letter leaves the index with its hash.
    assert await indexes.newest_tasks(0, 10) == [("x", 4), ("c", 3), ("a", 1)]
    # An expired one's entry stays until a sweep finds its hash gone; a sweep reads in chunks
    # and says where the next one starts (0: the pass is over, the next starts from the oldest).
    await b.expire("c")
    assert await indexes.sweep_task_index(0, 2, T0 + 1) == (3, 1)
    assert await indexes.sweep_task_index(3, 2, T0 + 1) == (0, 0)
    assert await indexes.newest_tasks(0, 10) == [("x", 4), ("a", 1)]


async def the_sweep_reads_only_tasks_old_enough_to_have_expired(b: Backend) -> None:
    indexes = b.state.indexes
    (outcomes,) = await submit(b, [new_task("old1"), new_task("old2"), new_task("young", at=T0 + 100),
                                   new_task("later", at=T0 + 100)])
    assert not isinstance(outcomes, IdempotencyConflict)
    await b.expire("old2")
    await b.expire("later")
    # The pass ends at the first task submitted at or after the bound: nothing from there on can
    # have expired by its retention yet (a hash gone early after it waits for the next passes).
    assert await indexes.sweep_task_index(0, 10, T0 + 50) == (0, 1)
    assert [t for t, _seq in await indexes.newest_tasks(0, 10)] == ["later", "young", "old1"]
    assert await indexes.sweep_task_index(0, 2, T0 + 50) == (0, 0)  # a full chunk that reaches it ends the pass too
    assert await indexes.sweep_task_index(0, 10, T0 + 100.5) == (0, 1)
    assert [t for t, _seq in await indexes.newest_tasks(0, 10)] == ["young", "old1"]



async def the_sweep_keeps_a_task_stored_without_a_submission_time(b: Backend) -> None:
    # A field at its default is left out of the hash: no submitted_at must not read as gone.
    await submit(b, [new_task("timeless", at=0.0), new_task("gone")])
    await b.expire("gone")
    assert await b.state.indexes.sweep_task_index(0, 10, T0) == (0, 1)
    assert await b.state.indexes.newest_tasks(0, 10) == [("timeless", 1)]


# --- controls and the stream --------------------------------------------------------------


async def controls_survive_in_the_store(b: Backend) -> None:
    await b.state.controls.set_paused("gpu_priority", True)
    await b.state.controls.set_paused("cpu_standard", True)
    await b.state.controls.set_paused("cpu_standard", False)
    assert await b.state.controls.paused_queues() == {"gpu_priority"}
    gpu = WorkerRecord("g1", WorkerType.GPU, 4, {"zone": "a"})
    await b.state.controls.remember_worker(WorkerRecord("g1", WorkerType.CPU, 1))
    await b.state.controls.remember_worker(gpu)
    assert await b.state.controls.known_workers() == {"g1": gpu}


async def queue_statistics_add_up(b: Backend) -> None:
    await b.state.indexes.add_stats({Q: {"completed": 2.0, "wait_sum": 1.5, "wait_count": 2.0}})
    await b.state.indexes.add_stats({Q: {"completed": 1.0, "wait_sum": 0.25, "wait_count": 1.0},
                                     "other": {"failed": 1.0}})
    await submitted(b, "a")
    await b.state.tasks.cancel("a", T0 + 1, "by client", 60)
    assert await b.state.indexes.queue_stats([Q, "other", "none"]) == {
        Q: {"completed": 3.0, "wait_sum": 1.75, "wait_count": 3.0, "cancelled": 1.0},
        "other": {"failed": 1.0}, "none": {}}


async def a_lost_worker_s_queue_is_purged(b: Backend) -> None:
    await submitted(b, "a", "b", "c")
    await b.state.tasks.dispatch([hand_out("a"), hand_out("b"), hand_out("c", "w2")], T0 + 1)
    assert await b.state.controls.purge_worker_queue("w1") == 2
    assert await b.queued("w1") == []
    assert contents(await b.queued("w2")) == [("c", 1, [1], {})]
    assert await b.state.controls.purge_worker_queue("w1") == 0
    assert await b.state.indexes.in_flight_ledgers() == {"w1": {"a", "b"}, "w2": {"c"}}  # requeue moves them


async def reports_are_acknowledged_by_apply_or_ack_and_the_rest_come_back(b: Backend) -> None:
    await b.state.events.ensure_group()
    for n in range(3):
        await b.report("progress", "a", 1, "w1", T0 + n, progress=f"0.{n}")
    fresh = await b.state.events.read(backlog=False, block_ms=1)
    assert [(e.kind, e.task_id, e.attempt, e.worker_id, e.ts, e.fields["progress"]) for e in fresh] == [
        ("progress", "a", 1, "w1", T0 + n, f"0.{n}") for n in range(3)]
    assert await b.state.tasks.apply(fresh[:1], [None], RETENTION) == [None]  # no task "a": stale
    await b.state.events.ack([fresh[1].stream_id])
    backlog = await b.state.events.read(backlog=True)
    assert [e.stream_id for e in backlog] == [fresh[2].stream_id]
    assert await b.unacked() == 1
    await b.state.events.ack([fresh[2].stream_id])
    assert await b.state.events.read(backlog=True) == []
    assert await b.state.events.read(backlog=False, block_ms=1) == []


TASK_IDS = ("a", "a2", "b", "b2", "c", "fresh", "x", "y", "z", "missing",
            "pending", "dispatched", "running", "retrying", "done")
"""Every task id a scenario uses."""
WORKERS = ("w1", "w2")


async def snapshot(b: Backend) -> dict[str, object]:
    """Everything a backend holds that the engine or a worker can read."""
    indexes = b.state.indexes
    return {
        "tasks": {t: await b.state.tasks.get(t) for t in TASK_IDS},
        "payloads": {t: await b.payload(t) for t in TASK_IDS},
        "fences": {t: await b.fence(t) for t in TASK_IDS},
        "queued": {w: [m.key for m in await b.queued(w)] for w in WORKERS},
        "pending": await indexes.pending_ids(),
        "task_index": await indexes.newest_tasks(0, 100),
        "ledgers": await indexes.in_flight_ledgers(),
        "retries": await indexes.due_retries(float("inf")),
        "dead_letters": await indexes.dead_letters(),
        "stats": await indexes.queue_stats([Q, "other"]),
        "paused": await b.state.controls.paused_queues(),
        "workers": await b.state.controls.known_workers(),
        "unacked": await b.unacked(),
    }


SCENARIOS: list[Callable[[Backend], Awaitable[None]]] = [
    submit_writes_pending_tasks_in_order,
    same_key_and_payload_is_deduplicated,
    a_conflict_writes_nothing_of_its_group_and_other_groups_go_on,
    dispatch_fences_a_new_attempt_and_queues_its_message,
    msgpack_hand_outs_carry_the_body_built_at_submission,
    dispatch_refuses_a_task_not_pending_at_the_previous_attempt,
    sync_match_hands_out_in_the_submit_round_trip,
    a_completion_hands_the_freed_slot_out_in_the_same_round_trip,
    the_lifecycle_round_sends_its_next_read_with_its_script,
    a_claimed_attempt_runs_and_succeeds,
    a_separate_started_report_moves_a_dispatched_task_once,
    a_claim_announces_its_start,
    a_stale_attempt_changes_nothing,
    failures_retry_then_dead_letter_or_fail,
    requeue_moves_an_attempt_back_and_fences_it,
    a_requeue_does_not_count_as_a_failure,
    a_hand_out_that_never_started_is_taken_back_or_failed,
    a_running_attempt_no_longer_reported_is_taken_back,
    cancel_in_each_state,
    dead_letters_replay_and_purge,
    the_task_index_pages_newest_first_and_sweeps_gone_tasks,
    the_sweep_reads_only_tasks_old_enough_to_have_expired,
    the_sweep_keeps_a_task_stored_without_a_submission_time,
    controls_survive_in_the_store,
    queue_statistics_add_up,
    a_lost_worker_s_queue_is_purged,
    reports_are_acknowledged_by_apply_or_ack_and_the_rest_come_back,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_state_contract(make_backend: Callable[[], Backend], scenario: Callable[[Backend], Awaitable[None]]) -> None:
    async def run() -> None:
        backend = make_backend()
        try:
            await scenario(backend)
        finally:
            await backend.close()

    asyncio.run(run())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_fake_and_redis_end_in_the_same_state(
    fresh_redis: RedisServer, scenario: Callable[[Backend], Awaitable[None]]
) -> None:
    """Beyond what a scenario asserts: every field, index, queued message and counter ends up the same."""

    async def run() -> list[dict[str, object]]:
        ends = []
        for backend in (FakeBackend(), RedisBackend(fresh_redis.url)):
            try:
                await scenario(backend)
                ends.append(await snapshot(backend))
            finally:
                await backend.close()
        return ends

    fake, real = asyncio.run(run())
    assert fake == real
