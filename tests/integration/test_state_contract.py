"""The in-memory FakeState keeps the contract of the real RedisState: each scenario runs against
both (the Redis one on a private redis-server), so the engine's unit tests, which run on the
fake, stand on the semantics of the Lua scripts.

A scenario acts as the engine (state.tasks / indexes / controls / events) and as a worker (the
fenced claim, reports appended to the lifecycle stream) and checks what a user would see: task
state, attempt, worker, fence, indexes, counts and queue statistics. A second test runs each
scenario on both and compares everything they hold at the end, field by field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

import pytest
import redis.asyncio as aioredis
from switchyard.wire import FENCE_CANCELLED, FENCE_REQUEUED, Keys, claim_script, fence_started

from scheduler.core.model import TaskState, WorkerType
from scheduler.state.interface import (
    CancelStatus,
    FailureAction,
    FailureOutcome,
    HandOutRequest,
    IdempotencyConflict,
    NewTask,
    Retention,
    State,
)
from scheduler.state.records import TaskRecord, WorkerRecord
from scheduler.state.store import RedisState
from tests.support.fake_state import FakeState
from tests.support.redis_server import RedisServer

RETENTION = Retention(result_ttl_seconds=3600, dead_letter_ttl_seconds=3600)
T0 = 1_000.0
"""Submission time of every task of a scenario."""


class Backend(Protocol):
    """One implementation of State, plus the worker's side of its fences and stream."""

    state: State

    async def claim(self, task_id: str, attempt: int, worker_id: str, ts: float) -> bool: ...
    async def report(self, kind: str, task_id: str, attempt: int, worker_id: str, ts: float, **fields: str) -> None: ...
    async def fence(self, task_id: str) -> str | None: ...
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

    async def close(self) -> None:
        await self.fake.close()


class RedisBackend:
    """RedisState, with a worker that claims through the shipped claim script and XADDs reports."""

    def __init__(self, url: str) -> None:
        self.state: State = RedisState(url, "sy")
        self.keys = Keys("sy")
        self.redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._claim = self.redis.register_script(claim_script())

    async def claim(self, task_id: str, attempt: int, worker_id: str, ts: float) -> bool:
        keys = [self.keys.fence(task_id), self.keys.events]
        return int(await self._claim(keys=keys, args=[str(attempt), worker_id, task_id, repr(ts)])) == 1

    async def report(self, kind: str, task_id: str, attempt: int, worker_id: str, ts: float, **fields: str) -> None:
        entry = {"type": kind, "task_id": task_id, "attempt": str(attempt), "worker_id": worker_id,
                 "ts": repr(ts), **fields}
        await self.redis.xadd(self.keys.events, entry)  # type: ignore[arg-type]

    async def fence(self, task_id: str) -> str | None:
        value = await self.redis.get(self.keys.fence(task_id))
        return None if value is None else str(value)

    async def close(self) -> None:
        await self.state.close()
        await self.redis.aclose()


@pytest.fixture(params=["fake", "redis"])
def make_backend(request: pytest.FixtureRequest) -> Callable[[], Backend]:
    """A factory (a backend must be built inside the test's event loop)."""
    if request.param == "fake":
        return FakeBackend
    server: RedisServer = request.getfixturevalue("fresh_redis")
    return lambda: RedisBackend(server.url)


def new_task(task_id: str, *, queue: str = "cpu_standard", priority: int = 5, key: str = "",
             digest: str = "d", payload: tuple[str, str] = ("[1]", "{}")) -> NewTask:
    record = TaskRecord(task_id=task_id, name="t.job", queue=queue, priority=priority,
                        labels={"zone": "a"}, submitted_at=T0, idempotency_key=key, payload_digest=digest,
                        payload_bytes=len(payload[0]) + len(payload[1]), retry_policy="flaky",
                        reason="classified", class_reason="classified")
    return NewTask(record, *payload)


def hand_out(task_id: str, worker_id: str = "w1", gpu_index: int | None = None, served_queue: str = "") -> HandOutRequest:
    return HandOutRequest(task_id, worker_id, gpu_index, served_queue, f"placed on {worker_id}")


async def deliver(b: Backend, outcome: FailureOutcome | None = None) -> list[TaskRecord | None]:
    """Read the reports workers appended, apply them (as the engine does) and acknowledge them."""
    events = await b.state.events.read(backlog=False, block_ms=0)
    outcomes = [outcome if e.kind == "failed" else None for e in events]
    after = await b.state.tasks.apply(events, outcomes, RETENTION)
    await b.state.events.ack([e.stream_id for e in events])
    return after


async def submitted(b: Backend, *task_ids: str) -> None:
    await b.state.tasks.submit([new_task(t) for t in task_ids], 60)


async def state_of(b: Backend, task_id: str) -> TaskState | None:
    record = await b.state.tasks.get(task_id)
    return record.state if record else None


# --- scenarios --------------------------------------------------------------------------------


async def submit_writes_pending_tasks_in_order(b: Backend) -> None:
    outcomes = await b.state.tasks.submit([new_task("a"), new_task("b", priority=9), new_task("c")], 60)
    assert [(o.task_id, o.deduplicated, o.seq) for o in outcomes] == [("a", False, 1), ("b", False, 2), ("c", False, 3)]
    assert await b.state.indexes.pending_ids() == ["a", "b", "c"]
    task = await b.state.tasks.get("a")
    assert task == replace(new_task("a").record, seq=1, state=TaskState.PENDING, attempt=0)
    assert await b.state.tasks.payload("a") == ("[1]", "{}")
    assert [r.task_id for r in await b.state.tasks.load(["c", "missing", "a"])] == ["c", "a"]
    assert await b.state.tasks.get("missing") is None
    assert await b.state.indexes.counts() == {"pending": 3}


async def same_key_and_payload_is_deduplicated(b: Backend) -> None:
    await b.state.tasks.submit([new_task("a", key="k1")], 60)
    again = await b.state.tasks.submit([new_task("a2", key="k1"), new_task("b", key="k2"), new_task("b2", key="k2")], 60)
    assert [(o.task_id, o.deduplicated) for o in again] == [("a", True), ("b", False), ("b", True)]
    assert await b.state.tasks.get("a2") is None and await b.state.tasks.get("b2") is None
    assert await b.state.indexes.pending_ids() == ["a", "b"]
    assert await b.state.indexes.counts() == {"pending": 2}


async def a_conflicting_key_writes_nothing_of_the_batch(b: Backend) -> None:
    await b.state.tasks.submit([new_task("a", key="k1", digest="one")], 60)
    with pytest.raises(IdempotencyConflict) as clash:
        await b.state.tasks.submit([new_task("fresh"), new_task("a2", key="k1", digest="two")], 60)
    assert (clash.value.index, clash.value.existing_task_id) == (1, "a")
    with pytest.raises(IdempotencyConflict) as inside:
        await b.state.tasks.submit([new_task("x", key="k9", digest="one"), new_task("y", key="k9", digest="two")], 60)
    assert (inside.value.index, inside.value.existing_task_id) == (1, "")
    assert await b.state.indexes.pending_ids() == ["a"]
    assert await b.state.tasks.get("fresh") is None and await b.state.tasks.get("x") is None
    assert await b.state.indexes.counts() == {"pending": 1}


async def dispatch_fences_a_new_attempt(b: Backend) -> None:
    await submitted(b, "a", "b")
    first, again = await b.state.tasks.dispatch([hand_out("a", gpu_index=1, served_queue="gpu_fallback"),
                                                 hand_out("a", "w2")], T0 + 2, 1000)
    assert first is not None and again is None
    task = first.task
    assert (task.state, task.attempt, task.worker_id, task.gpu_index, task.served_queue) == (
        TaskState.DISPATCHED, 1, "w1", 1, "gpu_fallback")
    assert (task.dispatched_at, task.published, task.reason) == (T0 + 2, False, "placed on w1")
    assert (first.args_json, first.kwargs_json) == ("[1]", "{}")
    assert await b.fence("a") == "1"
    assert await b.state.indexes.pending_ids() == ["b"]
    assert await b.state.indexes.in_flight_ledgers() == {"w1": {"a"}}
    assert await b.state.indexes.counts() == {"pending": 1, "dispatched": 1}
    (by_reference,) = await b.state.tasks.dispatch([hand_out("b", "w2")], T0 + 3, 3)
    assert by_reference is not None and by_reference.args_json is None and by_reference.kwargs_json is None
    await b.state.tasks.mark_published(["a"])
    assert [r.published for r in await b.state.tasks.load(["a", "b"])] == [True, False]


async def a_claimed_attempt_runs_and_succeeds(b: Backend) -> None:
    await submitted(b, "a")
    await b.state.tasks.dispatch([hand_out("a")], T0 + 1, 1000)
    assert not await b.claim("a", 2, "w1", T0 + 2)
    assert await b.claim("a", 1, "w1", T0 + 2)
    assert not await b.claim("a", 1, "w1", T0 + 2)  # a redelivered message does not run twice
    assert await b.fence("a") == fence_started(1)
    await b.report("progress", "a", 1, "w1", T0 + 3, progress="0.5", message="half")
    running, halfway = await deliver(b)
    assert running is not None and (running.state, running.started_at) == (TaskState.RUNNING, T0 + 2)
    assert halfway is not None and (halfway.progress, halfway.progress_message) == (0.5, "half")
    await b.report("succeeded", "a", 1, "w1", T0 + 6, result_json='{"ok": true}')
    (done,) = await deliver(b)
    assert done is not None
    assert (done.state, done.result_json, done.finished_at, done.progress) == (TaskState.SUCCEEDED, '{"ok": true}', T0 + 6, 1.0)
    assert await b.fence("a") is None
    assert await b.state.indexes.in_flight_ledgers() == {}
    assert await b.state.indexes.counts() == {"pending": 0, "dispatched": 0, "running": 0, "succeeded": 1}
    stats = (await b.state.indexes.queue_stats(["cpu_standard", "other"]))
    assert stats == {"cpu_standard": {"wait_sum": 2.0, "wait_count": 1.0, "run_sum": 4.0, "run_count": 1.0,
                                      "completed": 1.0}, "other": {}}


async def a_stale_attempt_changes_nothing(b: Backend) -> None:
    await submitted(b, "a")
    await b.state.tasks.dispatch([hand_out("a", "w1")], T0 + 1, 1000)
    assert await b.state.tasks.requeue("a", "w1", "worker lost") is not None
    await b.state.tasks.dispatch([hand_out("a", "w2")], T0 + 2, 1000)
    assert not await b.claim("a", 1, "w1", T0 + 3)
    await b.report("started", "a", 1, "w1", T0 + 3)
    await b.report("succeeded", "a", 1, "w1", T0 + 4, result_json="1")
    await b.report("failed", "a", 1, "w1", T0 + 4, error="boom")
    assert await deliver(b, FailureOutcome(FailureAction.FAIL, 0.0, "failed")) == [None, None, None]
    task = await b.state.tasks.get("a")
    assert task is not None and (task.state, task.attempt, task.worker_id) == (TaskState.DISPATCHED, 2, "w2")
    assert await b.state.indexes.in_flight_ledgers() == {"w2": {"a"}}


async def failures_retry_then_dead_letter_or_fail(b: Backend) -> None:
    await submitted(b, "a", "b")
    await b.state.tasks.dispatch([hand_out("a"), hand_out("b")], T0 + 1, 1000)
    assert await b.claim("a", 1, "w1", T0 + 2)
    await b.report("failed", "a", 1, "w1", T0 + 3, error="ValueError: x", traceback="tb", error_type="ValueError")
    _started, retrying = await deliver(b, FailureOutcome(FailureAction.RETRY, T0 + 60, "retry 1 of 2"))
    assert retrying is not None
    assert (retrying.state, retrying.failures, retrying.worker_id, retrying.next_attempt_at) == (
        TaskState.RETRYING, 1, "", T0 + 60)
    assert (retrying.error, retrying.traceback, retrying.error_type, retrying.reason) == (
        "ValueError: x", "tb", "ValueError", "retry 1 of 2")
    assert await b.fence("a") is None
    assert await b.state.indexes.due_retries(T0 + 59) == []
    assert await b.state.indexes.due_retries(T0 + 60) == ["a"]
    assert await b.state.tasks.promote("a", TaskState.DEAD_LETTERED, "wrong state") is None
    again = await b.state.tasks.promote("a", TaskState.RETRYING, "retry due")
    assert again is not None and (again.state, again.attempt, again.next_attempt_at) == (TaskState.PENDING, 1, 0.0)
    assert await b.state.indexes.due_retries(T0 + 60) == []
    (second,) = await b.state.tasks.dispatch([hand_out("a", "w2")], T0 + 61, 1000)
    assert second is not None and second.task.attempt == 2 and await b.fence("a") == "2"
    await b.report("failed", "a", 2, "w2", T0 + 62, error="ValueError: y")
    (dead,) = await deliver(b, FailureOutcome(FailureAction.DEAD_LETTER, 0.0, "out of retries"))
    assert dead is not None and (dead.state, dead.failures, dead.finished_at) == (TaskState.DEAD_LETTERED, 2, T0 + 62)
    assert await b.state.indexes.dead_letters() == [("a", T0 + 62)]
    await b.report("failed", "b", 1, "w1", T0 + 5, error="E")
    (failed,) = await deliver(b, None)
    assert failed is not None and (failed.state, failed.failures, failed.reason) == (TaskState.FAILED, 1, "")
    assert await b.state.indexes.counts() == {
        "pending": 0, "dispatched": 0, "running": 0, "retrying": 0, "dead_lettered": 1, "failed": 1}
    stats = (await b.state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]
    assert (stats["retried"], stats["failed"], stats["run_count"]) == (1.0, 2.0, 3.0)


async def requeue_moves_an_attempt_back_and_fences_it(b: Backend) -> None:
    await submitted(b, "a", "b")
    await b.state.tasks.dispatch([hand_out("b"), hand_out("a", gpu_index=0)], T0 + 1, 1000)
    assert await b.claim("a", 1, "w1", T0 + 2)
    await deliver(b)
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
    assert await b.state.indexes.counts() == {"pending": 1, "dispatched": 1, "running": 0}


async def cancel_in_each_state(b: Backend) -> None:
    await submitted(b, "pending", "dispatched", "running", "retrying", "done")
    await b.state.tasks.dispatch([hand_out(t) for t in ("dispatched", "running", "retrying", "done")], T0 + 1, 1000)
    for task_id in ("running", "retrying", "done"):
        assert await b.claim(task_id, 1, "w1", T0 + 2)
    await b.report("failed", "retrying", 1, "w1", T0 + 3, error="E")
    await deliver(b, FailureOutcome(FailureAction.RETRY, T0 + 100, "retry"))
    await b.report("succeeded", "done", 1, "w1", T0 + 3, result_json="1")
    await deliver(b)
    for task_id in ("pending", "dispatched", "running", "retrying"):
        outcome = await b.state.tasks.cancel(task_id, T0 + 10, "cancelled by client", 3600)
        assert (outcome.status, outcome.previous_state) == (CancelStatus.OK, TaskState(task_id))
        assert outcome.task is not None and (outcome.task.state, outcome.task.finished_at) == (TaskState.CANCELLED, T0 + 10)
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
    counts = await b.state.indexes.counts()
    assert {k: v for k, v in counts.items() if v} == {"cancelled": 4, "succeeded": 1}
    assert (await b.state.indexes.queue_stats(["cpu_standard"]))["cpu_standard"]["cancelled"] == 4.0


async def dead_letters_replay_and_purge(b: Backend) -> None:
    await submitted(b, "a", "b", "c")
    await b.state.tasks.dispatch([hand_out("a"), hand_out("b"), hand_out("c")], T0 + 1, 1000)
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
    assert await b.state.indexes.dead_letters() == []
    assert [await state_of(b, t) for t in ("a", "c")] == [TaskState.PENDING, TaskState.DISPATCHED]
    assert (await b.state.indexes.counts())["dead_lettered"] == 0


async def controls_survive_in_the_store(b: Backend) -> None:
    await b.state.controls.set_paused("gpu_priority", True)
    await b.state.controls.set_paused("cpu_standard", True)
    await b.state.controls.set_paused("cpu_standard", False)
    assert await b.state.controls.paused_queues() == {"gpu_priority"}
    gpu = WorkerRecord("g1", WorkerType.GPU, 4, {"zone": "a"})
    await b.state.controls.remember_worker(WorkerRecord("g1", WorkerType.CPU, 1))
    await b.state.controls.remember_worker(gpu)
    assert await b.state.controls.known_workers() == {"g1": gpu}


async def unacknowledged_reports_come_back_as_backlog(b: Backend) -> None:
    await b.state.events.ensure_group()
    await b.report("progress", "a", 1, "w1", T0, progress="0.1")
    await b.report("progress", "a", 1, "w1", T0 + 1, progress="0.2")
    fresh = await b.state.events.read(backlog=False, block_ms=0)
    assert [(e.kind, e.task_id, e.attempt, e.worker_id, e.ts, e.fields["progress"]) for e in fresh] == [
        ("progress", "a", 1, "w1", T0, "0.1"), ("progress", "a", 1, "w1", T0 + 1, "0.2")]
    await b.state.events.ack([fresh[0].stream_id])
    backlog = await b.state.events.read(backlog=True)
    assert [e.stream_id for e in backlog] == [fresh[1].stream_id]
    await b.state.events.ack([fresh[1].stream_id])
    assert await b.state.events.read(backlog=True) == []
    assert await b.state.events.read(backlog=False, block_ms=1) == []


TASK_IDS = ("a", "a2", "b", "b2", "c", "fresh", "x", "y", "pending", "dispatched", "running", "retrying", "done")
"""Every task id a scenario uses."""


async def snapshot(b: Backend) -> dict[str, object]:
    """Everything a backend holds that the engine or a worker can read (the stream aside)."""
    indexes = b.state.indexes
    return {
        "tasks": {t: await b.state.tasks.get(t) for t in TASK_IDS},
        "payloads": {t: await b.state.tasks.payload(t) for t in TASK_IDS},
        "fences": {t: await b.fence(t) for t in TASK_IDS},
        "pending": await indexes.pending_ids(),
        "ledgers": await indexes.in_flight_ledgers(),
        "retries": await indexes.due_retries(float("inf")),
        "dead_letters": await indexes.dead_letters(),
        "counts": await indexes.counts(),
        "stats": await indexes.queue_stats(["cpu_standard"]),
        "paused": await b.state.controls.paused_queues(),
        "workers": await b.state.controls.known_workers(),
    }


SCENARIOS: list[Callable[[Backend], Awaitable[None]]] = [
    submit_writes_pending_tasks_in_order,
    same_key_and_payload_is_deduplicated,
    a_conflicting_key_writes_nothing_of_the_batch,
    dispatch_fences_a_new_attempt,
    a_claimed_attempt_runs_and_succeeds,
    a_stale_attempt_changes_nothing,
    failures_retry_then_dead_letter_or_fail,
    requeue_moves_an_attempt_back_and_fences_it,
    cancel_in_each_state,
    dead_letters_replay_and_purge,
    controls_survive_in_the_store,
    unacknowledged_reports_come_back_as_backlog,
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
    """Beyond what a scenario asserts: every field, index and counter ends up the same."""

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
