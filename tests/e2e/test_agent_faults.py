"""The worker side under faults: a task its app does not run, a broker that is not the scheduler's
Redis, a Redis restart while a task runs, and a hand-out whose task record Redis lost.

Real scheduler, real agents, real Celery workers (`tests.support.stack`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from switchyard.wire import Keys

from tests.support.e2e_app import GHOST_TASKS_ENV
from tests.support.redis_server import RedisServer, wait_until
from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def test_task_the_worker_does_not_register_fails_at_once_and_frees_the_slot(stack: Stack) -> None:
    # The scheduler only places a task on a worker that reported its name, so this worker reports
    # e2e.ghost and then drops it from its registry: its Celery consumer turns the message away.
    stack.add_worker("w1", "cpu", concurrency=1, env={GHOST_TASKS_ENV: "e2e.ghost"})
    stack.wait_workers_connected(["w1"])

    task_id = stack.submit("e2e.ghost", content_type="text").task_id
    task = stack.wait_state(task_id, {S.TASK_STATE_FAILED, S.TASK_STATE_DEAD_LETTERED}, timeout=15)
    assert task.state == S.TASK_STATE_FAILED, task
    assert task.attempt == 1, f"an unregistered task was retried: {task}"
    assert "task 'e2e.ghost' is not registered on worker w1" in task.error, task.error
    assert "its Celery app registers: e2e." in task.error, task.error

    # The slot the hand-out held is free again: the next task runs on that one-slot worker.
    probe = stack.run_probe()
    assert probe.worker_id == "w1"
    assert stack.list_workers()["w1"].free_slots == 1


def test_agent_refuses_a_celery_broker_that_is_not_the_schedulers_redis(stack: Stack) -> None:
    other_db = stack.redis_url.rsplit("/", 1)[0] + "/5"
    worker = stack.add_worker("w-bad", "cpu", env={"CELERY_BROKER_URL": other_db})
    code = worker.proc.wait(timeout=40)

    log = worker.log_path.read_text(errors="replace")
    assert code == 2, log
    refusals = [line for line in log.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1, log
    assert f"the Celery app's broker {other_db} is not the Redis the scheduler dispatches to " \
           f"({stack.redis_url})" in refusals[0]
    assert "Traceback" not in log, log
    # The Celery worker never started consuming: its worker never announced itself ready.
    assert "ready." not in log


def test_success_report_written_while_redis_was_down_reaches_the_scheduler(
    stack: Stack, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    gate = tmp_path / "gate"
    task_id = stack.submit("e2e.wait_file", [str(gate)], content_type="text").task_id
    stack.wait_state(task_id, S.TASK_STATE_RUNNING, timeout=20)

    # Redis crashes (its AOF keeps every write); the task ends while it is down, so its report
    # can only wait in the worker's memory.
    fresh_redis.kill()
    gate.touch()
    log_path = stack.workers["w1"].log_path
    wait_until(lambda: "keeping lifecycle reports in memory" in log_path.read_text(errors="replace"),
               timeout=15, message="the worker to buffer the success report")

    fresh_redis.start()
    wait_until(lambda: "wrote 1 buffered report(s)" in log_path.read_text(errors="replace"),
               timeout=15, message="the worker to write the buffered report")
    task = stack.wait_state(task_id, S.TASK_STATE_SUCCEEDED, timeout=30)
    assert task.attempt == 1
    assert task.worker_id == "w1"

    # The Celery worker rode out the lost broker connection: it is still w1 and takes new work.
    assert stack.run_probe().worker_id == "w1"
    assert stack.workers["w1"].alive()
    assert "Unrecoverable error" not in log_path.read_text(errors="replace")


@pytest.mark.scheduler_env(SWITCHYARD_DISPATCH_PREFETCH="1")
def test_a_hand_out_whose_task_record_is_gone_is_acknowledged_without_running(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    busy = stack.submit("e2e.gate", ["busy"], content_type="text").task_id
    stack.wait_state(busy, S.TASK_STATE_RUNNING, timeout=20)
    # Prefetch 1: the next task is handed out (its message waits in w1's queue) behind the busy one.
    orphan = stack.submit("e2e.sleep", [0.01, "orphan"], content_type="text").task_id
    stack.wait_state(orphan, S.TASK_STATE_DISPATCHED, timeout=20)

    # Redis loses that task's record (what a Redis that comes back empty looks like to a worker
    # still holding the message), then the worker gets to the message.
    stack.redis.delete(Keys().task(orphan))
    stack.open_gate("busy")
    log_path = stack.workers["w1"].log_path
    wait_until(lambda: f"task {orphan} attempt 1 is unknown to the state Redis"
               in log_path.read_text(errors="replace"), timeout=15, message="the refused claim")

    stack.wait_celery_drained()
    assert "orphan" not in {run["tag"] for run in stack.runs()}, "a task without a record ran"
    assert stack.workers["w1"].alive()
