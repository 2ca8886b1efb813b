"""The asyncio client against the real scheduler (in-process, real Redis) and a protocol worker:
a task submitted and watched from async code runs and its result comes back; the operator's
calls change what the scheduler reports.

The test's coroutine runs on its own loop (`asyncio.run`); the worker's steps, which block, run
in threads so the loop keeps serving the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from switchyard.aio import AsyncSchedulerClient
from switchyard.exceptions import FailedPrecondition, NotFound

from tests.support.inproc import InProcessScheduler, ProtocolWorker
from tests.support.redis_server import wait_until


async def _run_one_task(client: AsyncSchedulerClient, worker: ProtocolWorker) -> list[str]:
    """Submit a task, let the worker claim it once the watcher saw its first state and finish it
    once the watcher saw it running; the states seen."""
    submitted = await client.submit("text.summarize", kwargs={"text": "one two three"}, content_type="text")
    seen_first, seen_running = asyncio.Event(), asyncio.Event()

    async def run_it() -> None:
        delivery = await asyncio.to_thread(
            wait_until, lambda: worker.deliveries and worker.deliveries[0], message="a hand-out to w1")
        assert delivery.task_id == submitted.task_id and delivery.kwargs == {"text": "one two three"}
        await seen_first.wait()  # else a loaded machine may start it before the watch's first read
        assert await asyncio.to_thread(worker.claim, delivery)
        await seen_running.wait()
        await asyncio.to_thread(worker.succeed, delivery, {"summary": "one two"})

    runner = asyncio.create_task(run_it())
    states = []
    async with contextlib.aclosing(client.watch(submitted.task_id, timeout=30)) as watch:
        async for view in watch:
            states.append(view.state)
            seen_first.set()
            if view.state == "running":
                seen_running.set()
    await runner
    done = await client.get(submitted.task_id)
    assert done.succeeded and done.result == {"summary": "one two"} and done.worker_id == "w1"
    assert (await client.wait(submitted.task_id, timeout=5)).result == {"summary": "one two"}
    return states


def test_a_task_submitted_and_watched_from_async_code(make_scheduler, make_worker, caplog) -> None:
    scheduler: InProcessScheduler = make_scheduler()
    worker: ProtocolWorker = make_worker(scheduler, "w1", slots=1)

    async def scenario() -> None:
        async with AsyncSchedulerClient(scheduler.target, failover_timeout=5) as client:
            states = await _run_one_task(client, worker)
            assert states[0] in ("pending", "dispatched") and states[-2:] == ["running", "succeeded"], states

            # The same key is the same task.
            first = await client.submit("text.summarize", kwargs={"text": "x"}, idempotency_key="order-7")
            again = await client.submit("text.summarize", kwargs={"text": "x"}, idempotency_key="order-7")
            assert again.task_id == first.task_id and again.deduplicated
            cancelled = await client.cancel(first.task_id)
            assert (cancelled.task.state, cancelled.previous_state) in {("cancelled", "pending"),
                                                                        ("cancelled", "dispatched")}
            with pytest.raises(FailedPrecondition):
                await client.cancel(first.task_id)
            with pytest.raises(NotFound):
                await client.get("no-such-task")

            listed = [task.task_id async for task in client.iter_tasks(limit=5)]
            assert listed == [first.task_id, states and listed[1]] and len(listed) == 2
            page, token = await client.list_tasks("succeeded")
            assert [task.state for task in page] == ["succeeded"] and token == ""

            queue_names = [queue.name for queue in await client.queues()]
            assert "cpu_standard" in queue_names
            assert (await client.pause("cpu_standard")).paused
            assert not (await client.resume("cpu_standard")).paused

            assert [view.worker_id for view in await client.workers()] == ["w1"]
            explanation = await client.explain("text.summarize", kwargs={"text": "y"}, content_type="text")
            assert explanation.queue == "cpu_standard" and explanation.chosen_worker_id == "w1", explanation.summary
            assert (await client.drain("w1")).state in ("draining", "drained")
            undrained = await client.undrain("w1")
            assert undrained.changed and undrained.worker.state == "ready"
            assert await client.dead_letters() == ([], 0)

    asyncio.run(asyncio.wait_for(scenario(), timeout=90))
    # Streams the client closed at the terminal state left nothing unretrieved behind.
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, errors
