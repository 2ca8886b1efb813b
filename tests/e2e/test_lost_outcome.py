"""An outcome report lost with the Redis writes a failover drops: the task must not stay running
for ever.

A Sentinel failover can promote a replica that lacks the primary's last writes; when those held
a task's outcome, the promoted store says the task still runs on a worker that has long finished
it. This test makes exactly that store: the task's record and its worker's ledger as they were
while it ran are put back, with the scheduler down, after it succeeded. The scheduler restarts
on that state, believes the task runs on w1, and w1's agent — heartbeating all the while — does
not list it among its running attempts: the scheduler takes it back and it runs again (attempt 2)
to success. The real processes: scheduler, agent, Celery worker, Redis.
"""

from __future__ import annotations

import pytest
from switchyard.wire import Keys

from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GRACE_SECONDS = 2.0
RECONNECT_GRACE_SECONDS = 60.0
"""How long the restarted scheduler waits for w1 to come back before declaring it lost (the
suite's 2 s default is shorter than the agent's reconnect backoff can be): this test is about a
worker that is there and does not list the task, not about a lost worker."""


@pytest.mark.scheduler_env(SWITCHYARD_UNREPORTED_RUNNING_SECONDS=str(GRACE_SECONDS),
                           SWITCHYARD_LOST_GRACE_SECONDS=str(RECONNECT_GRACE_SECONDS))
def test_a_running_task_whose_outcome_was_lost_runs_again_instead_of_running_for_ever(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    keys = Keys(stack.scheduler_env.get("SWITCHYARD_KEY_PREFIX", "sy"))

    task_id = stack.submit("e2e.gate", ["lost-outcome"], content_type="text").task_id
    stack.wait_state(task_id, S.TASK_STATE_RUNNING)
    while_running = stack.redis.hgetall(keys.task(task_id))
    assert while_running["state"] == "running" and stack.redis.sismember(keys.inflight("w1"), task_id)

    stack.open_gate("lost-outcome")
    stack.wait_state(task_id, S.TASK_STATE_SUCCEEDED)
    stack.stop_scheduler()
    # What a promoted replica that missed the outcome's writes holds.
    pipe = stack.redis.pipeline()
    pipe.delete(keys.task(task_id))
    pipe.hset(keys.task(task_id), mapping=while_running)
    pipe.sadd(keys.inflight("w1"), task_id)
    pipe.execute()

    stack.start_scheduler()
    stack.wait_workers_connected(["w1"])
    done = stack.wait_state(task_id, S.TASK_STATE_SUCCEEDED, timeout=60)
    assert done.attempt == 2, done
    attempts = sorted(run["attempt"] for run in stack.runs())
    assert attempts == [1, 2], stack.runs()
    requeued = stack.metric_value("switchyard_tasks_requeued_total")
    assert requeued == 1.0
    log = stack.scheduler_log_path.read_text(errors="replace")
    assert f"task {task_id} (e2e.gate) attempt 1: worker w1 has not listed it as running" in log
