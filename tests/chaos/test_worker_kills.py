"""Chaos: workers SIGKILLed under a steady load lose no acknowledged task and run none twice.

A pool of three workers runs a steady stream of short tasks while the test SIGKILLs a busy
worker (agent, Celery main process and pool children at once), again and again: 10 kills in
`make test`, 100 under `make chaos`. Every replacement joins before the next kill; half of
them come back under the dead worker's id, half under a new id. At the end every acknowledged
task succeeded exactly once (tests/chaos/ledger.py).

A worker restarted under the same id at once, inside the grace period, is recognised by its new
agent instance: the dead process's attempts go back to pending straight away
(`test_same_id_restart_inside_the_grace_period_strands_nothing`).
"""

from __future__ import annotations

import time

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.chaos.conftest import FULL, scale
from tests.chaos.ledger import Ledger, assert_balanced
from tests.chaos.load import SteadyLoad
from tests.support.redis_server import wait_until
from tests.support.stack import TEST_SCHEDULER_ENV, S, Stack

pytestmark = [pytest.mark.slow]

KILLS = scale(10, 100)
POOL = 3
SLOTS = 2
TASK_SECONDS = 0.3
SUBMITS_PER_SECOND = 8.0
"""Well under the pool's capacity (3 x 2 slots / 0.3 s), so the backlog stays short."""
HEARTBEAT_TIMEOUT = float(TEST_SCHEDULER_ENV["SWITCHYARD_HEARTBEAT_TIMEOUT_SECONDS"])
GRACE = float(TEST_SCHEDULER_ENV["SWITCHYARD_LOST_GRACE_SECONDS"])


def _busy_worker(stack: Stack, candidates: list[str]) -> str | None:
    """A connected worker among `candidates` that holds tasks right now."""
    try:
        workers = stack.list_workers()
    except Exception:
        return None
    for worker_id in candidates:
        info = workers.get(worker_id)
        if info is not None and info.status == pb.WORKER_STATUS_CONNECTED and info.task_ids:
            return worker_id
    return None


@pytest.mark.timeout(1800 if FULL else 200)
def test_worker_sigkills_under_load_lose_nothing(stack: Stack) -> None:
    ledger = Ledger()
    spawned = 0
    live: list[str] = []
    faults: dict[str, float] = {}

    def spawn(worker_id: str | None = None) -> str:
        nonlocal spawned
        spawned += 1
        worker_id = worker_id or f"k{spawned:03d}"
        stack.add_worker(worker_id, "cpu", concurrency=SLOTS)
        live.append(worker_id)
        return worker_id

    for _ in range(POOL):
        spawn()
    stack.wait_workers_connected(live)
    started = time.monotonic()
    with SteadyLoad(stack, ledger, rate=SUBMITS_PER_SECOND, seconds=TASK_SECONDS, prefix="kill"):
        for kill in range(KILLS):
            doomed = wait_until(lambda: _busy_worker(stack, live), timeout=60, interval=0.05,
                                message=f"a busy worker for kill {kill + 1}")
            stack.workers[doomed].kill()
            faults[doomed] = time.time()
            live.remove(doomed)
            if kill % 2:
                # The same id again, once the scheduler has given the dead worker's work away.
                stack.wait_worker_status(doomed, [pb.WORKER_STATUS_LOST],
                                         timeout=HEARTBEAT_TIMEOUT + GRACE + 15)
                spawn(doomed)
            else:
                spawn()
            stack.wait_workers_connected(live, timeout=60)
    kill_seconds = time.monotonic() - started

    finals = ledger.settle(stack, timeout=180 if FULL else 90)
    verdict = ledger.verify(stack, finals, faulted_workers=faults,
                            expected=lambda ack: {S.TASK_STATE_SUCCEEDED})
    assert_balanced(verdict, stack)
    moved = sum(1 for task in finals.values() if task is not None and task.attempt > 1)
    print(f"{KILLS} kills in {kill_seconds:.1f}s; {len(ledger)} tasks acknowledged, "
          f"{moved} moved to another attempt by a kill")
    assert moved, "no kill ever caught a task in flight"
    assert len(ledger) >= KILLS


@pytest.mark.timeout(90)
def test_same_id_restart_inside_the_grace_period_strands_nothing(stack: Stack) -> None:
    ledger = Ledger()
    worker = stack.add_worker("phoenix", "cpu", concurrency=1)
    stack.wait_workers_connected(["phoenix"])
    task_id = ledger.submit(stack, "e2e.sleep", [2, "stranded"], tag="stranded", content_type="text")
    assert task_id is not None
    wait_until(lambda: any(r["tag"] == "stranded" for r in stack.runs()), timeout=30,
               message="user code of the task to start")
    worker.kill()
    killed_at = time.time()
    stack.add_worker("phoenix", "cpu", concurrency=1)  # back at once, inside the grace period
    stack.wait_workers_connected(["phoenix"])
    finals = ledger.settle(stack, timeout=HEARTBEAT_TIMEOUT + GRACE + 20)
    assert_balanced(ledger.verify(stack, finals, faulted_workers={"phoenix": killed_at},
                                  expected=lambda ack: {S.TASK_STATE_SUCCEEDED}), stack)
