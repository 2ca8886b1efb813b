"""Chaos: the leading scheduler killed, paused past its lease, or terminated under load, with a
standby on the same Redis.

Two workers (given both scheduler addresses) run a steady stream of short tasks; mid-stream the
leader is SIGKILLed, SIGSTOPped until the standby has taken over (then SIGCONTed: it must find
itself deposed and step down), or SIGTERMed. Submissions follow the leader the way clients do
(`switchyard-leader` metadata on UNAVAILABLE). At the end every acknowledged task succeeded
exactly once (tests/chaos/ledger.py). `make chaos` repeats each fault three times in a row,
leadership moving back and forth between the two schedulers.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from switchyard.v1 import scheduler_pb2_grpc
from switchyard.wire import LEADER_METADATA_KEY

from tests.chaos.conftest import FULL, scale
from tests.chaos.ledger import Ledger, assert_balanced
from tests.chaos.load import SteadyLoad
from tests.support.redis_server import wait_until
from tests.support.schedulers import NOT_SERVING, SERVING, SchedulerProc
from tests.support.stack import CHANNEL_OPTIONS, S, Stack

pytestmark = [pytest.mark.slow]

ROUNDS = scale(1, 3)
SUBMITS_PER_SECOND = 8.0
TASK_SECONDS = 0.3


class LeaderStub:
    """A Scheduler stub over several schedulers that moves to the leader on UNAVAILABLE, as the
    clients do (the ledger and the load generator call `stack.stub`)."""

    def __init__(self, addresses: list[str]) -> None:
        self._stubs = {a: scheduler_pb2_grpc.SchedulerStub(grpc.insecure_channel(a, options=CHANNEL_OPTIONS))
                       for a in addresses}
        self._current = addresses[0]
        self._lock = threading.Lock()

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(request: Any, timeout: float = 10.0) -> Any:
            last: grpc.RpcError | None = None
            tried: list[str] = []
            with self._lock:
                address = self._current
            while address not in tried:
                tried.append(address)
                try:
                    reply = getattr(self._stubs[address], method)(request, timeout=timeout)
                except grpc.RpcError as err:
                    if not isinstance(err, grpc.Call) or err.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    last = err
                    named = dict(err.trailing_metadata() or ()).get(LEADER_METADATA_KEY, "")
                    others = [a for a in self._stubs if a not in tried]
                    address = named if named in self._stubs and named not in tried else (others or tried)[0]
                    continue
                with self._lock:
                    self._current = address
                return reply
            assert last is not None
            raise last

        return call


def _fault(leader: SchedulerProc, standby: SchedulerProc, how: str) -> float:
    """Apply the fault to `leader`; return seconds until `standby` served."""
    started = time.monotonic()
    if how == "sigkill":
        leader.kill()
    elif how == "sigterm":
        leader.signal(signal.SIGTERM)
    else:
        leader.signal(signal.SIGSTOP)
    standby.wait_health(SERVING, timeout=20)
    took = time.monotonic() - started
    if how == "sigterm":
        assert leader.proc is not None and leader.proc.wait(15) == 0, leader.log_tail()
    if how == "sigstop":
        leader.signal(signal.SIGCONT)
        wait_until(lambda: "stepping down as leader" in leader.log_text(), timeout=20,
                   message=f"the paused leader to step down\n{leader.log_tail()}")
        leader.wait_health(NOT_SERVING, timeout=10)
    return took


@pytest.mark.parametrize("how", ["sigkill", "sigstop", "sigterm"])
@pytest.mark.timeout(600 if FULL else 150)
def test_leader_faults_under_load_lose_nothing(stack: Stack, how: str) -> None:
    first = SchedulerProc.adopt(stack)
    second = SchedulerProc(stack.redis_url, stack.workdir, "second").start()
    second.wait_health(NOT_SERVING)
    addresses = [first.address, second.address]
    stack._stub = LeaderStub(addresses)  # type: ignore[assignment]
    for worker_id in ("c1", "c2"):
        stack.add_worker(worker_id, "cpu", concurrency=2, scheduler_address=",".join(addresses))
    stack.wait_workers_connected(["c1", "c2"])

    ledger = Ledger()
    spawned: list[SchedulerProc] = [second]
    takeovers: list[float] = []
    leader, standby = first, second
    try:
        with SteadyLoad(stack, ledger, rate=SUBMITS_PER_SECOND, seconds=TASK_SECONDS, prefix=how):
            for _round in range(ROUNDS):
                wanted = 8 * (_round + 1)
                wait_until(lambda: len(ledger) >= wanted, timeout=30, message="load to flow")  # noqa: B023
                takeovers.append(_fault(leader, standby, how))
                if not leader.alive():
                    # Killed or terminated: bring it back as the next standby.
                    port = leader.port
                    leader = SchedulerProc(stack.redis_url, stack.workdir, f"{how}-{_round}")
                    spawned.append(leader)
                    leader.port = port
                    leader._connect()
                    leader.start()
                    leader.wait_health(NOT_SERVING, timeout=20)
                leader, standby = standby, leader
                stack.wait_workers_connected(["c1", "c2"], timeout=30)
            wait_until(lambda: len(ledger) >= 8 * (ROUNDS + 1), timeout=30, message="load after the last fault")
        finals = ledger.settle(stack, timeout=120)
        verdict = ledger.verify(stack, finals, expected=lambda ack: {S.TASK_STATE_SUCCEEDED})
        assert_balanced(verdict, stack)
        print(f"{how}: {len(ledger)} acknowledged, {ledger.refused} refused during failover "
              f"({dict(ledger.refusals)}), takeover {', '.join(f'{t:.2f}s' for t in takeovers)}")
        limit = 5.0 if how != "sigterm" else 1.0
        assert all(t < limit for t in takeovers), takeovers
    finally:
        for proc in spawned:
            proc.close()
