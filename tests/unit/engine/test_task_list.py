"""ListTasks over the engine (engine/task_list.py): newest first, filters, pages, the active view
from the fleet's ledgers, the scan budget, and the sweep of the index."""

from __future__ import annotations

import pytest

from scheduler.core.model import TaskState
from scheduler.engine import task_list
from scheduler.engine.task_list import TaskQuery, page_token, states_from_names
from scheduler.errors import InvalidArgument, NotFound
from scheduler.settings import Settings
from tests.support.fakes import EngineRig, make_engine
from tests.unit.engine.drive import connect, place, report, start, submit


async def ids(rig: EngineRig, **query: object) -> tuple[list[str], str]:
    page = await rig.engine.task_list.page(TaskQuery(**query))  # type: ignore[arg-type]
    return [view.record.task_id for view in page.tasks], page.next_page_token


async def test_tasks_come_newest_first_a_page_at_a_time() -> None:
    rig = make_engine()
    submitted = [await submit(rig, "text.summarize", content_type="text") for _ in range(5)]
    newest_first = submitted[::-1]
    first, token = await ids(rig, page_size=2)
    assert first == newest_first[:2] and token
    second, token = await ids(rig, page_size=2, page_token=token)
    assert second == newest_first[2:4] and token
    third, token = await ids(rig, page_size=2, page_token=token)
    assert (third, token) == (newest_first[4:], "")
    assert await ids(rig) == (newest_first, "")


async def test_filters_by_state_queue_worker_and_name() -> None:
    rig = make_engine()
    await connect(rig, "w1", slots=2)
    text = await submit(rig, "text.summarize", content_type="text")
    other = await submit(rig, "text.translate", content_type="text")
    video = await submit(rig, "media.transcode", content_type="video")
    (first, second) = await place(rig, "w1")
    assert await start(rig, first)
    await report(rig, "succeeded", second, result_json="1")
    assert {first.task_id, second.task_id} == {text, other}
    assert await ids(rig, states=frozenset({TaskState.PENDING})) == ([video], "")
    assert await ids(rig, states=frozenset({TaskState.RUNNING})) == ([first.task_id], "")
    assert await ids(rig, states=frozenset({TaskState.SUCCEEDED, TaskState.RUNNING})) == ([other, text], "")
    assert await ids(rig, queue="cpu_standard") == ([other, text], "")
    assert await ids(rig, worker_id="w1") == ([other, text], "")
    assert await ids(rig, task_name="media.transcode") == ([video], "")
    assert await ids(rig, worker_id="w1", states=frozenset({TaskState.RUNNING})) == ([first.task_id], "")
    assert await ids(rig, worker_id="nobody", states=frozenset({TaskState.RUNNING})) == ([], "")


async def test_the_active_view_pages_through_the_fleets_ledgers() -> None:
    rig = make_engine()
    await connect(rig, "w1", slots=3)
    await connect(rig, "w2", slots=3)
    for _ in range(5):
        await submit(rig, "text.summarize", content_type="text")
    for worker in ("w1", "w2"):
        for hand_out in await place(rig, worker):
            assert await start(rig, hand_out)
    running = frozenset({TaskState.RUNNING, TaskState.DISPATCHED})
    every, token = await ids(rig, states=running)
    assert len(every) == 5 and token == ""
    first, token = await ids(rig, states=running, page_size=3)
    rest, last = await ids(rig, states=running, page_size=3, page_token=token)
    assert first + rest == every and last == ""
    views = (await rig.engine.task_list.page(TaskQuery(states=running))).tasks
    assert all(view.record.state is TaskState.RUNNING and view.record.worker_id for view in views)


async def test_a_rare_match_among_many_tasks_comes_over_several_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_list, "SCAN_BUDGET", 4)
    monkeypatch.setattr(task_list, "SCAN_CHUNK", 2)
    rig = make_engine()
    wanted = await submit(rig, "media.transcode", content_type="video")
    for _ in range(9):
        await submit(rig, "text.summarize", content_type="text")
    found: list[str] = []
    pages, token = 0, ""
    while True:
        page, token = await ids(rig, task_name="media.transcode", page_token=token)
        found += page
        pages += 1
        if not token:
            break
    assert found == [wanted] and pages == 3  # 10 tasks, 4 examined per call


async def test_bad_requests_say_what_to_fix() -> None:
    rig = make_engine()
    with pytest.raises(InvalidArgument, match="page_size 501 is over the maximum of 500"):
        await ids(rig, page_size=501)
    with pytest.raises(InvalidArgument, match="is not one ListTasks returned"):
        await ids(rig, page_token="not-a-token")
    with pytest.raises(NotFound, match="queue 'nope' does not exist; known queues: gpu_priority"):
        await ids(rig, queue="nope")
    with pytest.raises(InvalidArgument, match="unknown task state 'runing'; valid states: pending"):
        states_from_names(["runing"])
    assert states_from_names([" Running", "pending"]) == {TaskState.RUNNING, TaskState.PENDING}
    assert await ids(rig, page_token=page_token(7)) == ([], "")


async def test_the_sweep_drops_tasks_that_are_gone_and_listing_skips_them() -> None:
    rig = make_engine()
    await connect(rig, "w1")
    doomed = await submit(rig, "text.summarize", content_type="text")
    kept = await submit(rig, "text.summarize", content_type="text")
    (hand_out,) = await place(rig, "w1")
    assert hand_out.task_id == doomed
    del rig.state.tables.hashes[doomed]  # what Redis does when a finished task's result expires
    assert await ids(rig) == ([kept], "")
    assert await rig.engine.task_list.sweep_once() == (0, 1)
    assert list(rig.state.tables.tasks) == [kept]


async def test_the_sweep_reads_only_tasks_older_than_the_shorter_retention() -> None:
    rig = make_engine(Settings(result_ttl_seconds=60, dead_letter_ttl_seconds=3600))
    await connect(rig, "w1")
    kept = await submit(rig, "text.summarize", content_type="text")
    rig.clock.advance(30)
    gone = await submit(rig, "text.summarize", content_type="text")
    del rig.state.tables.hashes[gone]  # a hash gone before its retention: nothing a sweep expects
    # Younger than a minute (the shorter retention): the pass ends at `kept`, `gone` is not read.
    assert await rig.engine.task_list.sweep_once() == (0, 0)
    assert set(rig.state.tables.tasks) == {kept, gone}
    rig.clock.advance(31)  # `kept` is past the minute now
    assert await rig.engine.task_list.sweep_once() == (0, 1)
    assert list(rig.state.tables.tasks) == [kept]
