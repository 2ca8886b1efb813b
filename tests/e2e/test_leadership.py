"""Issue 9, item 1: several schedulers on one Redis, one leader, fenced.

The stack's scheduler leads; a second `switchyard-scheduler` on the same Redis stands by. The
standby does not serve and names the leader; the leader killed (SIGKILL), paused past its
lease (SIGSTOP) or terminated (SIGTERM) hands over to the standby, and every task submitted
before completes exactly once. Agents are given both addresses and follow the leader.
"""

from __future__ import annotations

import collections
import signal
import time

import grpc
import pytest
from switchyard.v1 import scheduler_pb2 as pb
from switchyard.wire import LEADER_METADATA_KEY

from tests.support.redis_server import wait_until
from tests.support.schedulers import NOT_SERVING, SERVING, SchedulerProc
from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

LEASE_SECONDS = 3.0
"""The default lease: a standby must take over within 5 s of the leader's death."""


def _standby(stack: Stack, name: str = "b") -> SchedulerProc:
    standby = SchedulerProc(stack.redis_url, stack.workdir, name).start()
    standby.wait_health(NOT_SERVING)
    return standby


def _lead_through(stack: Stack, scheduler: SchedulerProc) -> None:
    """Point the stack's client at `scheduler` (the new leader)."""
    stack.grpc_port = scheduler.port
    stack._reset_channel()


def _successes_by_tag(stack: Stack) -> collections.Counter[str]:
    return collections.Counter(str(run["tag"]) for run in stack.done())


def test_a_standby_does_not_serve_and_names_the_leader(stack: Stack) -> None:
    standby = _standby(stack)
    try:
        assert standby.health() == NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            standby.stub.ListQueues(pb.ListQueuesRequest(), timeout=5)
        error = caught.value
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "standby" in error.details() and stack.address in error.details()
        assert dict(error.trailing_metadata() or ())[LEADER_METADATA_KEY] == stack.address
        # The leader still serves.
        assert "cpu_standard" in stack.queues()
    finally:
        standby.close()


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_the_standby_takes_over_and_every_task_completes(stack: Stack, how: str) -> None:
    standby = _standby(stack)
    try:
        both = f"{stack.address},{standby.address}"
        stack.add_worker("w1", "cpu", concurrency=2, scheduler_address=both)
        stack.wait_workers_connected(["w1"])
        ids = [stack.submit("e2e.sleep", [0.4, f"t{i}"], content_type="text").task_id for i in range(8)]
        stack.wait_state(ids[0], S.TASK_STATE_RUNNING)

        leader = stack.scheduler_proc
        assert leader is not None
        stopped_at = time.monotonic()
        if how == "sigkill":
            stack.kill_scheduler()
        else:
            leader.send_signal(signal.SIGTERM)
        standby.wait_health(SERVING, timeout=15)
        took = time.monotonic() - stopped_at
        if how == "sigterm":
            assert leader.wait(15) == 0, stack.log_tails()
        limit = LEASE_SECONDS + 2.0 if how == "sigkill" else 1.0
        assert took < limit, f"the standby took {took:.1f}s to take over after {how}"
        print(f"takeover after {how}: {took:.2f}s")

        _lead_through(stack, standby)
        stack.wait_workers_connected(["w1"], timeout=30)
        more = [stack.submit("e2e.sleep", [0.05, f"after{i}"], content_type="text").task_id for i in range(4)]
        stack.wait_all(ids + more, S.TASK_STATE_SUCCEEDED, timeout=90)
        done = _successes_by_tag(stack)
        assert all(done[f"t{i}"] == 1 for i in range(8)), done
        assert all(done[f"after{i}"] == 1 for i in range(4)), done
    finally:
        standby.close()


def test_a_paused_leader_is_fenced_and_steps_down(stack: Stack) -> None:
    standby = _standby(stack)
    try:
        both = f"{stack.address},{standby.address}"
        stack.add_worker("w1", "cpu", concurrency=2, scheduler_address=both)
        stack.wait_workers_connected(["w1"])
        ids = [stack.submit("e2e.sleep", [0.3, f"t{i}"], content_type="text").task_id for i in range(6)]
        stack.wait_state(ids[0], S.TASK_STATE_RUNNING)

        old = SchedulerProc.adopt(stack)
        old.signal(signal.SIGSTOP)
        standby.wait_health(SERVING, timeout=15)
        _lead_through(stack, standby)
        submitted_while_paused = [stack.submit("e2e.sleep", [0.05, f"p{i}"], content_type="text").task_id
                                  for i in range(3)]

        old.signal(signal.SIGCONT)
        # Back from its pause, the old leader finds its lease gone: it stops writing and stands by.
        wait_until(lambda: "stepping down as leader" in old.log_text(), timeout=20,
                   message=f"the old leader to step down\n{old.log_tail()}")
        old.wait_health(NOT_SERVING, timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            old.stub.ListQueues(pb.ListQueuesRequest(), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert dict(caught.value.trailing_metadata() or ())[LEADER_METADATA_KEY] == standby.address

        stack.wait_all(ids + submitted_while_paused, S.TASK_STATE_SUCCEEDED, timeout=90)
        done = _successes_by_tag(stack)
        assert all(count == 1 for count in done.values()), done
        assert standby.health() == SERVING
    finally:
        standby.close()
