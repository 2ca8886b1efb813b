"""Acceptance item 8: a scheduler crash loses nothing.

SIGKILL the scheduler while tasks are pending, dispatched and running; work keeps finishing on
the workers while it is down; restarted on the same ports, it applies those reports, hands out
what still waits, and every task succeeds exactly once.
"""

from __future__ import annotations

import json

import pytest

from tests.support.redis_server import wait_until
from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


# Prefetch 1: each busy worker also holds one dispatched, not yet started task at the kill.
@pytest.mark.scheduler_env(SWITCHYARD_DISPATCH_PREFETCH="1")
def test_scheduler_sigkill_and_restart_loses_nothing_and_runs_nothing_twice(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=2)
    stack.add_worker("w2", "cpu", concurrency=2)
    stack.wait_workers_connected(["w1", "w2"])

    # 4 slots: 4 tasks running, 2 dispatched (prefetch 1 per worker), the rest pending.
    running_ids = [
        stack.submit("e2e.sleep", [3, f"run-{i}"], content_type="text").task_id for i in range(4)
    ]
    for task_id in running_ids:
        stack.wait_state(task_id, S.TASK_STATE_RUNNING, timeout=30)
    pending_ids = [
        stack.submit("e2e.sleep", [0.5, f"pend-{i}"], content_type="text").task_id for i in range(8)
    ]

    def states_now() -> dict[str, int] | None:
        states = {tid: stack.get(tid).state for tid in running_ids + pending_ids}
        dispatched = [t for t in pending_ids if states[t] == S.TASK_STATE_DISPATCHED]
        return states if len(dispatched) == 2 else None

    states_before = wait_until(
        states_now, timeout=15, message="2 tasks dispatched behind the running ones"
    )
    assert all(states_before[tid] == S.TASK_STATE_RUNNING for tid in running_ids)
    dispatched_tags = {
        f"pend-{i}"
        for i, tid in enumerate(pending_ids)
        if states_before[tid] == S.TASK_STATE_DISPATCHED
    }
    assert sum(states_before[tid] == S.TASK_STATE_PENDING for tid in pending_ids) == 6

    stack.kill_scheduler()
    # The running tasks finish while the scheduler is down, and the workers go on to the tasks
    # already in their queues; all their reports wait in Redis.
    wait_until(
        lambda: (
            {r["tag"] for r in stack.done()} >= {f"run-{i}" for i in range(4)} | dispatched_tags
        ),
        timeout=30,
        message="the running and dispatched tasks to finish while the scheduler is down",
    )
    # No Celery message is left to start anything, and with the scheduler down none can be added.
    stack.wait_celery_drained()
    assert not {r["tag"] for r in stack.runs()} - (
        {f"run-{i}" for i in range(4)} | dispatched_tags
    ), "a task that was pending in the dead scheduler ran"

    stack.start_scheduler()
    everything = running_ids + pending_ids
    final = stack.wait_all(everything, S.TASK_STATE_SUCCEEDED, timeout=90)

    for task_id in running_ids:
        task = final[task_id]
        assert task.attempt == 1, (
            f"a task that was running on a live worker was handed out again: {task}"
        )
    done_counts: dict[str, int] = {}
    for record in stack.done():
        done_counts[record["tag"]] = done_counts.get(record["tag"], 0) + 1
    run_counts: dict[str, int] = {}
    for record in stack.runs():
        run_counts[record["tag"]] = run_counts.get(record["tag"], 0) + 1
    tags = [f"run-{i}" for i in range(4)] + [f"pend-{i}" for i in range(8)]
    assert {t: done_counts.get(t, 0) for t in tags} == dict.fromkeys(tags, 1), (
        "a task ran to its end more or less than once"
    )
    assert {t: run_counts.get(t, 0) for t in tags} == dict.fromkeys(tags, 1), (
        "a task started more than once"
    )
    for task in final.values():
        assert json.loads(task.result_json)["worker"] == task.worker_id, task

    stats = stack.queues()["cpu_standard"]
    assert stats.pending == 0 and stats.processing == 0, stats
    # Statistics may or may not survive a restart; a success counted twice shows up either way.
    assert stats.completed <= len(everything), (
        f"completed counted {stats.completed} of {len(everything)} tasks"
    )
