"""Acceptance item 4: cancelling a pending task means it never runs; cancelling a running task
revokes it and it ends `cancelled`."""

from __future__ import annotations

import pytest

from tests.support.redis_server import wait_until
from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_cancelled_pending_task_never_runs(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    blocker = stack.submit(
        "e2e.gate", ["cancel-pending"], {"tag": "blocker"}, content_type="text"
    ).task_id
    stack.wait_state(blocker, S.TASK_STATE_RUNNING, timeout=30)

    doomed = stack.submit("e2e.sleep", [0.1, "doomed"], content_type="text").task_id
    after = stack.submit("e2e.sleep", [0.1, "after"], content_type="text").task_id
    assert stack.get(doomed).state == S.TASK_STATE_PENDING

    reply = stack.cancel(doomed)
    assert reply.previous_state == S.TASK_STATE_PENDING
    assert reply.task.state == S.TASK_STATE_CANCELLED
    assert stack.get(doomed).state == S.TASK_STATE_CANCELLED

    stack.open_gate("cancel-pending")
    stack.wait_all([blocker, after], timeout=30)  # `after` was queued behind `doomed`
    # One more task through w1's single slot: had `doomed` been handed out at any point before,
    # it would have started ahead of this one.
    stack.run_probe(content_type="text")
    assert "doomed" not in [r["tag"] for r in stack.runs()], "a cancelled pending task ran"
    task = stack.get(doomed)
    assert task.state == S.TASK_STATE_CANCELLED and task.result_json == ""
    assert stack.queues()["cpu_standard"].cancelled >= 1


def test_cancelled_running_task_is_revoked_and_ends_cancelled(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    long_task = stack.submit("e2e.sleep", [30, "long"], content_type="text").task_id
    stack.wait_state(long_task, S.TASK_STATE_RUNNING, timeout=30)
    # RUNNING is recorded at the claim, just before user code starts: wait for user code itself.
    wait_until(
        lambda: "long" in [r["tag"] for r in stack.runs()], timeout=10, message="user code to start"
    )

    reply = stack.cancel(long_task)
    assert reply.previous_state == S.TASK_STATE_RUNNING
    stack.wait_state(long_task, S.TASK_STATE_CANCELLED, timeout=10)

    # The slot comes back well before the 30 s sleep would have ended, and the sleep never finished.
    follow_up = stack.submit("e2e.sleep", [0.1, "follow-up"], content_type="text").task_id
    assert stack.wait_state(follow_up, S.TASK_STATE_SUCCEEDED, timeout=20).worker_id == "w1"
    # w1 has one pool process and it ran the follow-up, so the long sleep is no longer running;
    # whatever its attempt reported on the way out has been read by the scheduler now.
    stack.wait_reports_applied()
    assert "long" not in [r["tag"] for r in stack.done()], "the revoked task ran to its end"
    assert stack.get(long_task).state == S.TASK_STATE_CANCELLED, (
        "a late report overwrote the cancel"
    )
