"""Admission: a submission is accepted whole or not at all, an idempotency key names one task,
concurrent submissions share one commit (each still all-or-none), and a submission that finds an
idle worker and nothing waiting is handed out in its own commit (sync match)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from scheduler.core.classify import LARGE_BATCH_PENALTY, LARGE_BATCH_SIZE
from scheduler.core.model import Submission, TaskState
from scheduler.core.validate import TaskInput
from scheduler.engine.admission import CLASSIFICATIONS_KEPT
from scheduler.errors import AlreadyExists, InvalidArgument
from scheduler.settings import Settings
from scheduler.state.interface import HandOutRequest, SubmitGroup
from tests.support.fakes import make_engine
from tests.unit.engine.drive import connect, place, report, start, state_of, submit, task, until


def item(args_json: str = "[1]", key: str = "", name: str = "t.job") -> TaskInput:
    return TaskInput(Submission(name), args_json, "{}", key)


async def test_the_same_key_and_payload_return_the_first_task() -> None:
    rig = make_engine()
    first = await submit(rig, idempotency_key="order-7")
    (again,) = await rig.engine.admission.submit([item(key="order-7")])
    assert (again.task_id, again.deduplicated) == (first, True)
    assert await rig.state.indexes.pending_ids() == [first]
    await connect(rig, "w1", slots=2)
    assert [h.task_id for h in await place(rig, "w1")] == [first]


async def test_a_key_reused_for_another_payload_is_refused_with_nothing_accepted() -> None:
    rig = make_engine()
    first = await submit(rig, idempotency_key="order-7")
    with pytest.raises(AlreadyExists, match=rf"tasks\[1\]: idempotency_key is already used \(task {first}\)"):
        await rig.engine.admission.submit([item(), item(args_json="[2]", key="order-7")])
    with pytest.raises(InvalidArgument, match=r"tasks\[1\]"):
        await rig.engine.admission.submit([item(), item(args_json="not json")])
    assert await rig.state.indexes.pending_ids() == [first]
    assert len(rig.engine.shared.pending) == 1


async def test_a_batch_is_accepted_whole_and_placed_in_submission_order() -> None:
    rig = make_engine()
    accepted = await rig.engine.admission.submit([item(args_json=f"[{n}]") for n in range(3)])
    assert [a.deduplicated for a in accepted] == [False, False, False]
    await connect(rig, "w1", slots=3)
    hand_outs = await place(rig, "w1")
    assert [h.task_id for h in hand_outs] == [a.task_id for a in accepted]
    assert [h.args for h in hand_outs] == [[0], [1], [2]]


async def test_a_watcher_sees_every_state_until_the_end() -> None:
    rig = make_engine()
    task_id = await submit(rig)
    seen: list[TaskState] = []

    async def watch() -> None:
        async for view in rig.engine.queries.watch(task_id):
            seen.append(view.record.state)

    # The claim announces the start on the notify channel; the engine's starts loop relays it.
    starts = asyncio.create_task(rig.engine.lifecycle.watch_starts())
    watcher = asyncio.create_task(watch())
    try:
        await until(lambda: bool(seen) and bool(rig.state.tables.subscribers))
        await connect(rig, "w1")
        (hand_out,) = await place(rig, "w1")
        assert await start(rig, hand_out)
        await until(lambda: seen[-1] is TaskState.RUNNING)
        await report(rig, "succeeded", hand_out, result_json='"done"')
        await asyncio.wait_for(watcher, timeout=5)
    finally:
        starts.cancel()
    assert seen == [TaskState.PENDING, TaskState.DISPATCHED, TaskState.RUNNING, TaskState.SUCCEEDED]


# --- group commit -------------------------------------------------------------------------


async def test_concurrent_submissions_share_one_commit_and_a_conflict_refuses_only_its_own() -> None:
    rig = make_engine()
    first = await submit(rig, idempotency_key="order-7")
    before = len(rig.state.tables.submits)
    single, clash, duplicate, pair = await asyncio.gather(
        rig.engine.admission.submit([item("[1]")]),
        rig.engine.admission.submit([item("[2]"), item("[3]", key="order-7")]),
        rig.engine.admission.submit([item("[1]", key="order-7")]),
        rig.engine.admission.submit([item("[4]"), item("[5]")]),
        return_exceptions=True,
    )
    (call,) = rig.state.tables.submits[before:]
    assert [len(group) for group in call.groups] == [1, 2, 1, 2]
    assert isinstance(clash, AlreadyExists)
    assert str(clash).startswith(f"tasks[1]: idempotency_key is already used (task {first})")
    assert not isinstance(single, BaseException) and not isinstance(pair, BaseException)
    assert not isinstance(duplicate, BaseException)
    assert [(a.task_id, a.deduplicated) for a in duplicate] == [(first, True)]
    accepted = [single[0].task_id, pair[0].task_id, pair[1].task_id]
    assert await rig.state.indexes.pending_ids() == [first, *accepted]
    assert await rig.state.tasks.load(call.groups[1]) == []  # nothing of the refused submission
    assert len(rig.engine.shared.pending) == 4


async def test_submissions_that_arrive_during_a_commit_go_together_in_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = make_engine()
    store = rig.state.tasks
    real_submit = store.submit
    gate = asyncio.Event()

    async def held_submit(groups: Sequence[SubmitGroup], ttl: int, hand_outs: Sequence[HandOutRequest] = (),
                          now: float = 0.0) -> Any:
        result = await real_submit(groups, ttl, hand_outs, now)
        await gate.wait()  # the reply of the first commit is slow to come back
        return result

    monkeypatch.setattr(store, "submit", held_submit)
    first = asyncio.create_task(rig.engine.admission.submit([item("[1]")]))
    await until(lambda: len(rig.state.tables.submits) == 1)
    later = [asyncio.create_task(rig.engine.admission.submit([item(f"[{n}]")])) for n in (2, 3, 4)]
    await until(lambda: all(not t.done() for t in later) and len(rig.engine.admission._waiting) == 3)
    gate.set()
    accepted = [await t for t in (first, *later)]
    assert [[len(g) for g in call.groups] for call in rig.state.tables.submits] == [[1], [1, 1, 1]]
    assert await rig.state.indexes.pending_ids() == [a[0].task_id for a in accepted]


async def _three_together(rig: Any) -> None:
    """Three callers with a submission outstanding at once: what lingering learns from."""
    await asyncio.gather(*(rig.engine.admission.submit([item(f"[{n}]")]) for n in range(3)))


async def _busy(rig: Any) -> None:
    """A stream of submissions, three callers at a time: often enough for commits to linger."""
    for _ in range(30):
        await _three_together(rig)


async def test_a_commit_waits_for_as_many_callers_as_were_lately_outstanding_at_once() -> None:
    rig = make_engine(Settings(commit_linger_seconds=60.0))  # only the callers can end the wait
    admission = rig.engine.admission
    await _three_together(rig)
    before = len(rig.state.tables.submits)
    calls = []
    for n in (4, 5, 6):
        calls.append(asyncio.create_task(admission.submit([item(f"[{n}]")])))
        # Each arrives on its own turn of the loop, as gRPC hands calls over: the commit lingers.
        await until(lambda: len(admission._waiting) == len(calls) and admission._enough is not None)
    accepted = [await asyncio.wait_for(call, 10) for call in calls]
    (call,) = rig.state.tables.submits[before:]
    assert call.groups == [[a[0].task_id] for a in accepted]


async def test_a_lone_caller_never_waits_for_others() -> None:
    rig = make_engine(Settings(commit_linger_seconds=60.0))
    for n in range(5):  # one outstanding at a time: a linger would hold each for a minute
        await asyncio.wait_for(rig.engine.admission.submit([item(f"[{n}]")]), 10)
    assert [[len(g) for g in call.groups] for call in rig.state.tables.submits] == [[1]] * 5


async def test_a_linger_ends_at_its_bound_when_the_others_do_not_come() -> None:
    rig = make_engine(Settings(commit_linger_seconds=0.01))
    admission = rig.engine.admission
    await _busy(rig)
    alone = asyncio.create_task(admission.submit([item("[9]")]))
    await until(lambda: admission._enough is not None)  # it waits for two more that never come
    (accepted,) = await asyncio.wait_for(alone, 10)
    assert rig.state.tables.submits[-1].groups == [[accepted.task_id]]


async def test_commits_linger_only_while_submissions_come_often() -> None:
    rig = make_engine(Settings(commit_linger_seconds=0.5))
    admission = rig.engine.admission
    await _three_together(rig)  # three callers at once, but after a quiet start: no linger yet
    before = len(rig.state.tables.submits)
    alone = asyncio.create_task(admission.submit([item("[4]")]))
    await until(lambda: len(rig.state.tables.submits) == before + 1)
    assert admission._enough is None
    await alone
    await _busy(rig)
    before = len(rig.state.tables.submits)
    calls = [asyncio.create_task(admission.submit([item("[5]")]))]
    await until(lambda: admission._enough is not None)  # now the commit waits for the others
    calls += [asyncio.create_task(admission.submit([item(f"[{n}]")])) for n in (6, 7)]
    accepted = [await asyncio.wait_for(call, 10) for call in calls]
    (call,) = rig.state.tables.submits[before:]
    assert call.groups == [[a[0].task_id] for a in accepted]


async def test_a_linger_of_zero_commits_each_arrival_at_once() -> None:
    rig = make_engine(Settings(commit_linger_seconds=0.0))
    admission = rig.engine.admission
    await _busy(rig)  # what would make a linger wait
    before = len(rig.state.tables.submits)
    first = asyncio.create_task(admission.submit([item("[4]")]))
    await until(lambda: len(rig.state.tables.submits) == before + 1)  # committed alone, not held
    assert admission._enough is None
    await first
    assert [[len(g) for g in call.groups] for call in rig.state.tables.submits[before:]] == [[1]]


# --- sync match ---------------------------------------------------------------------------


async def test_an_idle_worker_gets_a_submission_in_the_submit_round_trip_itself() -> None:
    rig = make_engine()
    worker = await connect(rig, "w1")
    task_id = await submit(rig, args_json="[7]")
    (call,) = rig.state.tables.submits
    assert call.hand_outs == [task_id]
    assert len(rig.engine.shared.pending) == 0 and worker.in_flight.keys() == {task_id}
    (hand_out,) = rig.state.take("w1")  # on the worker's queue without any placement round
    assert (hand_out.task_id, hand_out.attempt, hand_out.worker_id, hand_out.args) == (task_id, 1, "w1", [7])
    stored = await task(rig, task_id)
    assert (stored.state, stored.worker_id, stored.attempt) == (TaskState.DISPATCHED, "w1", 1)
    assert rig.state.fence(task_id) == "1"
    assert await start(rig, hand_out)
    await report(rig, "succeeded", hand_out, result_json="1")
    assert await state_of(rig, task_id) is TaskState.SUCCEEDED


async def test_a_batch_is_sync_matched_as_far_as_free_slots_go_in_submission_order() -> None:
    rig = make_engine()
    await connect(rig, "w1", slots=2)
    accepted = await rig.engine.admission.submit([item(f"[{n}]") for n in range(3)])
    (call,) = rig.state.tables.submits
    assert call.hand_outs == [a.task_id for a in accepted[:2]]
    assert [h.args for h in rig.state.take("w1")] == [[0], [1]]
    assert await rig.state.indexes.pending_ids() == [accepted[2].task_id]


async def test_a_batch_is_sync_matched_most_urgent_first_when_slots_run_short() -> None:
    """Found by bench/bench_fleet.py: more tasks than free slots in one call must not hand out the
    first ones submitted ahead of more urgent ones of the same call."""
    rig = make_engine()
    await connect(rig, "w1", slots=2)
    batch = [TaskInput(Submission("t.job", priority=p), f"[{p}]", "{}") for p in (2, 9, 5, 7)]
    accepted = await rig.engine.admission.submit(batch)
    assert [h.args for h in rig.state.take("w1")] == [[9], [7]]
    assert sorted(await rig.state.indexes.pending_ids()) == sorted([accepted[0].task_id, accepted[2].task_id])


async def test_with_a_backlog_a_submission_is_not_sync_matched_and_waits_its_turn() -> None:
    rig = make_engine()
    older = await submit(rig)  # no worker yet: it waits
    await connect(rig, "w1")
    newer = await submit(rig)
    assert [call.hand_outs for call in rig.state.tables.submits] == [[], []]
    assert rig.state.take("w1") == []
    assert [h.task_id for h in await place(rig, "w1")] == [older]
    assert await state_of(rig, newer) is TaskState.PENDING


async def test_a_fresh_task_of_a_paused_queue_is_never_sync_matched() -> None:
    rig = make_engine()
    await connect(rig, "w1")
    await rig.engine.controls.set_paused("cpu_standard", True)
    held = await submit(rig, content_type="text")
    assert rig.state.tables.submits[-1].hand_outs == []
    assert rig.state.take("w1") == []
    assert await state_of(rig, held) is TaskState.PENDING
    assert await rig.state.indexes.pending_ids() == [held]


async def test_a_keyed_task_is_sync_matched_and_its_duplicate_hands_out_nothing() -> None:
    rig = make_engine()
    await connect(rig, "w1", slots=2)
    keyed = await submit(rig, idempotency_key="order-9")
    assert [h.task_id for h in rig.state.take("w1")] == [keyed]
    # The same key again, a slot still free: the answer is the first task; the fresh id chosen for
    # the slot was never written, so nothing is handed out and nothing phantom waits in memory.
    (again,) = await rig.engine.admission.submit([item(args_json="[1]", key="order-9")])
    assert (again.task_id, again.deduplicated) == (keyed, True)
    assert rig.state.take("w1") == []
    assert len(rig.engine.shared.pending) == 0
    assert rig.engine.shared.fleet.get("w1").in_flight.keys() == {keyed}  # type: ignore[union-attr]
    after = await submit(rig)
    assert [h.task_id for h in rig.state.take("w1")] == [after]


async def test_a_sync_match_of_a_refused_submission_is_not_handed_out_and_frees_the_slot() -> None:
    rig = make_engine()
    first = await submit(rig, idempotency_key="order-7")
    worker = await connect(rig, "w1")
    await place(rig, "w1")
    assert rig.engine.shared.fleet.get("w1").in_flight.keys() == {first}  # type: ignore[union-attr]
    await connect(rig, "w2")
    with pytest.raises(AlreadyExists):
        await rig.engine.admission.submit([item("[2]"), item("[3]", key="order-7")])
    doomed = rig.state.tables.submits[-1]
    assert len(doomed.hand_outs) == 1  # chosen for w2 before the store refused the group
    assert rig.state.take("w2") == [] and await rig.state.tasks.load(doomed.hand_outs) == []
    assert rig.engine.shared.fleet.get("w2").in_flight == {}  # type: ignore[union-attr]
    assert worker.in_flight.keys() == {first}
    after = await submit(rig)
    assert [h.task_id for h in rig.state.take("w2")] == [after]


async def test_a_big_batch_lets_the_event_loop_run_other_work_while_it_is_admitted() -> None:
    # A SubmitBatch of thousands of tasks is Python work without a natural await: unless it
    # yields, lease renewals, heartbeats and other calls wait for all of it (a 10,000-task
    # batch held the loop for most of a second, near the lease renewal's limit).
    from scheduler.cooperative import YIELD_EVERY

    rig = make_engine()
    count = YIELD_EVERY * 8
    ticks = 0
    done = asyncio.Event()

    async def other_work() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = ticks
    accepted = await rig.engine.admission.submit([item(args_json=f"[{n}]") for n in range(count)])
    during = ticks - before
    done.set()
    await ticker
    assert len(accepted) == count
    # At least one turn of the other work per YIELD_EVERY items validated and admitted.
    assert during >= count // YIELD_EVERY, during


async def test_a_batch_of_equal_submissions_holds_one_kind_equal_to_the_stored_records_view() -> None:
    rig = make_engine()
    big = "[" + ",".join(["1"] * 150_000) + "]"  # over the 256 KiB inline limit: travels by reference
    items = [item(args_json=f"[{n}]") for n in range(4)] + [item(args_json=big), item(name="t.other")]
    accepted = await rig.engine.admission.submit(items)
    shared = rig.engine.shared
    held = [shared.pending.get(a.task_id) for a in accepted]
    for one in held:
        assert one is not None
        record = await rig.state.tasks.get(one.task_id)
        assert record is not None and one == shared.pending_task(record, seq=one.seq)
    kinds = {id(one.kind) for one in held if one is not None}
    assert len(kinds) == 3  # the four equal ones share one; by reference and another name differ
    assert held[4] is not None and held[4].by_reference and held[5] is not None and held[5].task_name == "t.other"


async def test_a_remembered_classification_still_depends_on_the_batch_it_came_in() -> None:
    rig = make_engine()
    (alone,) = await rig.engine.admission.submit([item()])
    batch = await rig.engine.admission.submit([item(args_json=f"[{n}]") for n in range(LARGE_BATCH_SIZE + 1)])
    (alone_again,) = await rig.engine.admission.submit([item(args_json="[2]")])
    assert alone.priority == alone_again.priority == 5
    assert {a.priority for a in batch} == {5 - LARGE_BATCH_PENALTY}
    assert "batch of 11" in batch[0].reason and "batch" not in alone_again.reason


async def test_the_memory_of_classifications_stays_bounded() -> None:
    rig = make_engine()
    admission = rig.engine.admission
    for n in range(CLASSIFICATIONS_KEPT + 5):
        admission._classify(item(name=f"t.job{n}"), 0)
        assert len(admission._decisions) <= CLASSIFICATIONS_KEPT
    (accepted,) = await admission.submit([item(name="t.job1")])  # classified afresh, the same way
    assert (accepted.queue, accepted.priority) == ("cpu_standard", 5)
