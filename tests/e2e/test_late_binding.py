"""Acceptance item 2: late binding.

The scheduler keeps pending work itself and hands a worker only what its free slots can take,
so an urgent task submitted last overtakes everything still pending, equal priorities run
first-in first-out, and a worker's own Celery queue never holds more than free slots + prefetch.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

PENDING_COUNT = 100


def test_urgent_task_overtakes_100_pending_and_equal_priorities_run_fifo(stack: Stack) -> None:
    slots, prefetch = 1, 0  # SWITCHYARD_DISPATCH_PREFETCH defaults to 0
    stack.add_worker("w1", "cpu", concurrency=slots)
    stack.wait_workers_connected(["w1"])

    # Sample the worker's Celery queue for the whole test, from the first submission on.
    samples: list[int] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            samples.append(stack.celery_queue_len("w1"))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        blocker = stack.submit(
            "e2e.gate", ["late-binding"], {"tag": "blocker"}, content_type="text"
        )
        assert stack.wait_state(blocker.task_id, S.TASK_STATE_RUNNING, timeout=30).worker_id == "w1"

        normal_ids = []
        for i in range(PENDING_COUNT):
            reply = stack.submit("e2e.sleep", [0, f"p5-{i:03d}"], content_type="text", priority=5)
            assert reply.priority == 5
            normal_ids.append(reply.task_id)
        urgent = stack.submit("e2e.sleep", [0, "p10-urgent"], content_type="text", priority=10)
        assert urgent.priority == 10

        # Everything submitted waits in the scheduler, not in the worker's Celery queue.
        assert stack.get(urgent.task_id).state == S.TASK_STATE_PENDING
        queue_stats = stack.queues()["cpu_standard"]
        assert queue_stats.pending == PENDING_COUNT + 1, queue_stats
        assert stack.celery_queue_len("w1") <= prefetch, (
            "worker queue holds work beyond its free slots"
        )

        stack.open_gate("late-binding")
        stack.wait_all([urgent.task_id, *normal_ids], timeout=100)
    finally:
        stop_sampling.set()
        sampler.join(5)

    order = [r["tag"] for r in stack.runs() if r["tag"] != "blocker"]
    assert order[0] == "p10-urgent", f"first to start after the busy slot freed: {order[:5]}"
    assert order[1:] == [f"p5-{i:03d}" for i in range(PENDING_COUNT)], (
        "equal priorities did not run FIFO"
    )

    assert samples, "no samples of the worker queue were taken"
    assert max(samples) <= slots + prefetch, (
        f"worker queue sy.w.w1 held {max(samples)} messages; it has {slots} slot(s) and prefetch {prefetch}"
    )
    # And every task ran once.
    done_tags = [r["tag"] for r in stack.done() if r["tag"] != "blocker"]
    assert sorted(done_tags) == sorted(order) and len(done_tags) == PENDING_COUNT + 1
