"""Issue 8, acceptance item 7: the scheduler killed at each step of the hot path loses nothing.

The scheduler dies (as if SIGKILLed: `SWITCHYARD_CRASH_AT`, see scheduler/crashpoints.py) the
second time it reaches a crash point: just before or just after the script that commits
submissions, hand-outs or lifecycle reports. Restarted on the same ports and Redis, every
acknowledged submission reaches exactly one success, no task's user code runs twice, and no
success is counted twice.
"""

from __future__ import annotations

import collections

import grpc
import pytest

from scheduler.crashpoints import CRASH_EXIT_STATUS, HOT_PATH_POINTS
from tests.support.redis_server import wait_until
from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = 12


@pytest.mark.parametrize("point", HOT_PATH_POINTS)
def test_a_crash_at_each_step_loses_nothing_and_runs_nothing_twice(stack: Stack, point: str) -> None:
    stack.add_worker("w1", "cpu", concurrency=2)
    stack.wait_workers_connected(["w1"])
    stack.stop_scheduler()
    stack.scheduler_env["SWITCHYARD_CRASH_AT"] = f"{point}:2"
    stack.start_scheduler()
    stack.wait_workers_connected(["w1"])

    acknowledged: dict[str, str] = {}
    for i in range(TASKS):
        try:
            reply = stack.submit("e2e.sleep", [0.05, f"before-{i}"], content_type="text")
        except grpc.RpcError:
            break  # the scheduler died under this call: its answer never came
        acknowledged[reply.task_id] = f"before-{i}"
    assert stack.scheduler_proc is not None
    wait_until(lambda: stack.scheduler_proc.poll() is not None, timeout=30,
               message=f"the scheduler to die at crash point {point}")
    assert stack.scheduler_proc.returncode == CRASH_EXIT_STATUS, stack.log_tails()

    del stack.scheduler_env["SWITCHYARD_CRASH_AT"]
    stack.start_scheduler()
    for i in range(TASKS - len(acknowledged)):
        reply = stack.submit("e2e.sleep", [0.05, f"after-{i}"], content_type="text")
        acknowledged[reply.task_id] = f"after-{i}"

    finished = stack.wait_all(list(acknowledged), timeout=60)
    assert all(task.state == S.TASK_STATE_SUCCEEDED for task in finished.values()), finished
    started = collections.Counter(run["tag"] for run in stack.runs())
    assert set(acknowledged.values()) <= set(started), "an acknowledged task never ran"
    assert [tag for tag, count in started.items() if count > 1] == [], "user code ran twice"
    # No success counted twice. (Queue counters are written about once a second, so the crash
    # may have lost the last second of them; an unacknowledged submission that was committed
    # anyway may also have run, once, and counts too.)
    assert stack.queues()["cpu_standard"].completed <= len(started)
