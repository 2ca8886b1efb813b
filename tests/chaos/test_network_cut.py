"""Chaos: an agent's network cut off silently is declared lost, its work moves, its return is fenced.

One worker ("cut") reaches everything through loopback TCP proxies (tests/chaos/proxy.py): its
agent's stream to the scheduler, and its Celery worker's broker and state Redis. While it runs
two tasks the proxies stop forwarding without closing anything, as a pulled cable would: no
error reaches either side, the heartbeats simply stop arriving. The scheduler must declare the
worker lost within its heartbeat timeout and hand the two tasks to the other worker as attempt
2. When the network heals, the cut worker's attempts finish and their reports arrive late:
they must be dropped as stale (the tasks keep their attempt-2 results), the agent rejoins with
no tasks, and it can take new work. The ledger check ends the test (tests/chaos/ledger.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.chaos.ledger import Ledger, assert_balanced
from tests.chaos.proxy import BlackholeProxy
from tests.support.redis_server import wait_until
from tests.support.stack import TEST_SCHEDULER_ENV, S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

HEARTBEAT_TIMEOUT = float(TEST_SCHEDULER_ENV["SWITCHYARD_HEARTBEAT_TIMEOUT_SECONDS"])
GRACE = float(TEST_SCHEDULER_ENV["SWITCHYARD_LOST_GRACE_SECONDS"])
VICTIM_GATE = "victims"
"""The victims hold their slots until the test opens this gate (`e2e.gate`), so they are
mid-run at the cut however slowly the rescuer starts."""
STALE_REPORTS = "switchyard_stale_reports_total"
CUT_LABELS = {"net": "cut"}


@pytest.fixture()
def proxies(stack: Stack) -> Iterator[tuple[BlackholeProxy, BlackholeProxy]]:
    """(gRPC proxy to the scheduler, Redis proxy), both forwarding."""
    to_scheduler = BlackholeProxy(stack.grpc_port).start()
    to_redis = BlackholeProxy(stack.redis_server.port).start()
    try:
        yield to_scheduler, to_redis
    finally:
        to_scheduler.close()
        to_redis.close()


def test_a_silently_cut_agent_is_lost_its_work_moves_and_its_return_is_fenced(
    stack: Stack, proxies: tuple[BlackholeProxy, BlackholeProxy],
    record_figures: Callable[[str, dict[str, Any]], Path],
) -> None:
    to_scheduler, to_redis = proxies
    ledger = Ledger()
    stack.add_worker("cut", "cpu", concurrency=2, labels=CUT_LABELS,
                     scheduler_address=to_scheduler.address, redis_url=to_redis.redis_url())
    stack.wait_workers_connected(["cut"])
    victims = {}
    for i in range(2):
        task_id = ledger.submit(stack, "e2e.gate", [VICTIM_GATE, 60.0, f"victim-{i}"], tag=f"victim-{i}",
                                content_type="text")
        assert task_id is not None
        victims[task_id] = f"victim-{i}"
    wait_until(lambda: {r["tag"] for r in stack.runs() if r["worker"] == "cut"} >= set(victims.values()),
               timeout=30, message="both victims to run on the worker about to be cut off")
    stack.add_worker("rescuer", "cpu", concurrency=2)
    stack.wait_workers_connected(["rescuer"])

    cut_at = time.monotonic()
    to_scheduler.cut()
    to_redis.cut()
    stack.wait_worker_status("cut", [pb.WORKER_STATUS_LOST], timeout=HEARTBEAT_TIMEOUT + GRACE + 15)
    lost_after = time.monotonic() - cut_at

    def moved() -> bool:
        tasks = [stack.get(task_id) for task_id in victims]
        return all(t.worker_id == "rescuer" and t.attempt == 2 and t.state == S.TASK_STATE_RUNNING
                   for t in tasks)

    wait_until(moved, timeout=30, message="both victims to run again on the rescuer as attempt 2")
    redispatched_after = time.monotonic() - cut_at
    # Attempt 2 ends on the rescuer; attempt 1 waits for the gate through the dead link.
    stack.open_gate(VICTIM_GATE)
    during = [ledger.submit(stack, "e2e.sleep", [0.05, f"during-{i}"], tag=f"during-{i}",
                            content_type="text") for i in range(4)]
    finished = stack.wait_all([*victims, *[t for t in during if t]], S.TASK_STATE_SUCCEEDED, timeout=60)
    snapshot = {t: (finished[t].state, finished[t].attempt, finished[t].worker_id, finished[t].result_json)
                for t in victims}
    assert all(attempt == 2 and worker == "rescuer" for _s, attempt, worker, _r in snapshot.values()), snapshot
    assert to_scheduler.is_cut and to_redis.is_cut, "the cut must last until the work has moved on"

    stale_before = stack.metric_value(STALE_REPORTS)
    healed_at = time.monotonic()
    to_scheduler.heal()
    to_redis.heal()
    # The cut-off attempts see the open gate, finish, and their succeeded reports arrive late:
    # both are dropped.
    wait_until(lambda: {r["tag"] for r in stack.done() if r["worker"] == "cut"} >= set(victims.values()),
               timeout=30, message="the cut-off attempts to finish once the network heals")
    late_runs_ended = time.time()
    wait_until(lambda: stack.metric_value(STALE_REPORTS) >= stale_before + len(victims), timeout=30,
               message="the cut-off attempts' late reports to be dropped as stale")
    stack.wait_reports_applied()
    for task_id, before in snapshot.items():
        task = stack.get(task_id)
        assert (task.state, task.attempt, task.worker_id, task.result_json) == before, (
            f"{victims[task_id]} changed after the cut-off worker came back: {before} -> {task}")

    # The agent comes back (its stream resumes or reconnects), empty-handed, and takes new work.
    stack.wait_workers_connected(["cut"], timeout=60)
    rejoined_after = time.monotonic() - healed_at
    assert not stack.list_workers()["cut"].task_ids
    after = [ledger.submit(stack, "e2e.sleep", [0.05, f"after-{i}"], tag=f"after-{i}",
                           content_type="text", labels=CUT_LABELS) for i in range(2)]
    finals = ledger.settle(stack, timeout=60)
    for task_id in after:
        assert task_id is not None, "a submission to the returned worker was refused"
        final = finals[task_id]
        assert final is not None and final.worker_id == "cut", final

    verdict = ledger.verify(stack, finals, faulted_workers={"cut": late_runs_ended},
                            expected=lambda ack: {S.TASK_STATE_SUCCEEDED})
    assert_balanced(verdict, stack)
    assert verdict.reruns_after_worker_fault == len(victims)
    record_figures("network_cut", {
        "heartbeat_timeout_seconds": HEARTBEAT_TIMEOUT,
        "lost_grace_seconds": GRACE,
        "declared_lost_after_cut_seconds": round(lost_after, 2),
        "redispatched_after_cut_seconds": round(redispatched_after, 2),
        "agent_back_after_heal_seconds": round(rejoined_after, 2),
        "late_reports_dropped_as_stale": int(stack.metric_value(STALE_REPORTS) - stale_before),
    })
    assert lost_after <= HEARTBEAT_TIMEOUT + GRACE, (
        f"declared lost {lost_after:.1f}s after the cut; the heartbeat timeout is {HEARTBEAT_TIMEOUT:g}s")
