"""Issue 9, items 3 and 5: the scheduler through Redis outages.

While Redis is down the scheduler says so (health NOT_SERVING within 5 s, RPCs UNAVAILABLE
naming the Redis address) and stays up; when Redis returns with its data everything resumes
within 10 s; when it returns empty, the scheduler says once that state was lost and runs new
work. A scheduler started before its Redis waits for it, logging each attempt.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.redis_server import RedisServer, env_without_switchyard, free_port, wait_until
from tests.support.schedulers import NOT_SERVING, SERVING, SchedulerProc
from tests.support.stack import REPO_ROOT, VENV_BIN, S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def _redis_address(stack: Stack) -> str:
    return f"127.0.0.1:{stack.redis_server.port}"


def _wipe(server: RedisServer) -> None:
    """Remove Redis's data files: the next start comes back empty (its data lost)."""
    for item in server.dir.iterdir():
        if item.name == "redis.log":
            continue
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()


def test_redis_down_then_back_with_its_data(stack: Stack) -> None:
    me = SchedulerProc.adopt(stack)
    stack.add_worker("w1", "cpu", concurrency=2)
    stack.wait_workers_connected(["w1"])
    before = [stack.submit("e2e.sleep", [0.05, f"b{i}"], content_type="text").task_id for i in range(3)]
    stack.wait_all(before)

    stack.redis_server.kill()
    took = me.wait_health(NOT_SERVING, timeout=10)
    assert took < 5.0, f"health said NOT_SERVING only {took:.1f}s after Redis died"
    print(f"NOT_SERVING {took:.2f}s after Redis died")
    with pytest.raises(grpc.RpcError) as caught:
        stack.stub.SubmitTask(stack.submit_request("e2e.sleep", [0.05, "down"]), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert _redis_address(stack) in caught.value.details(), caught.value.details()

    stack.redis_server.start()  # same data directory: its AOF comes back
    back_at = time.monotonic()
    me.wait_health(SERVING, timeout=15)
    assert time.monotonic() - back_at < 10.0
    print(f"SERVING {time.monotonic() - back_at:.2f}s after Redis returned")
    stack.wait_workers_connected(["w1"], timeout=30)
    after = [stack.submit("e2e.sleep", [0.05, f"a{i}"], content_type="text").task_id for i in range(3)]
    stack.wait_all(after)
    assert {stack.get(t).state for t in before} == {S.TASK_STATE_SUCCEEDED}


def test_redis_back_empty_is_reported_once_and_new_work_runs(stack: Stack) -> None:
    me = SchedulerProc.adopt(stack)
    stack.add_worker("w1", "cpu", concurrency=2)
    stack.wait_workers_connected(["w1"])
    running = stack.submit("e2e.sleep", [3.0, "during"], content_type="text").task_id
    stack.wait_state(running, S.TASK_STATE_RUNNING)
    # RUNNING is the claim; user code records its start in Redis a moment later. Kill Redis only
    # once it has, or that first write of the task itself meets the dead Redis.
    wait_until(lambda: any(run["tag"] == "during" for run in stack.runs()), timeout=20,
               message="the task's user code to start")

    stack.redis_server.kill()
    _wipe(stack.redis_server)
    stack.redis_server.start()
    wait_until(lambda: "STATE LOST" in me.log_text(), timeout=20, message=f"the state-lost error\n{me.log_tail()}")
    me.wait_health(SERVING, timeout=20)
    assert me.log_text().count("STATE LOST") == 1
    stack.wait_workers_connected(["w1"], timeout=30)
    fresh = [stack.submit("e2e.sleep", [0.05, f"new{i}"], content_type="text").task_id for i in range(3)]
    stack.wait_all(fresh)
    # The task that ran through the loss finished on its worker; its report went nowhere harmful.
    wait_until(lambda: any(run["tag"] == "during" for run in stack.done()), timeout=20,
               message="the task running through the loss to finish")
    assert me.alive() and stack.workers["w1"].alive()


def test_a_scheduler_started_before_its_redis_waits_for_it(tmp_path: Path) -> None:
    server = RedisServer()
    port = free_port()
    log_path = tmp_path / "early.log"
    env = env_without_switchyard()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "switchyard-scheduler"), "--redis-url", server.url, "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", ""],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
        )
    probe = SchedulerProc(server.url, tmp_path, "probe")
    probe.port, probe.proc, probe.log_path = port, proc, log_path
    probe._connect()
    try:
        wait_until(lambda: log_path.read_text().count("cannot reach the state store") >= 2, timeout=20,
                   message="a log line per attempt")
        assert proc.poll() is None, "the scheduler stays up while Redis is unreachable"
        assert probe.health() == NOT_SERVING
        assert "Traceback" not in log_path.read_text()
        server.start()
        probe.wait_health(SERVING, timeout=15)
        assert probe.stub.ListQueues(pb.ListQueuesRequest(), timeout=5).queues
    finally:
        probe.close()
        server.stop()
