"""Chaos: the scheduler killed at 50 injected crash points loses nothing and runs nothing twice.

Each case arms one crash point (scheduler/crashpoints.py, `SWITCHYARD_CRASH_AT=<point>:<n>`):
the scheduler exits as if SIGKILLed the n-th time it gets there. A workload that walks through
every step the points sit on runs until the scheduler dies:

    submit     single submissions and an atomic batch (admission, sync hand-outs, reports)
    retry      failing tasks under a fast retry policy: retried, then dead-lettered
    replay     one dead letter replayed (it fails again), another purged
    cancel     a running task cancelled, then a finished one (refused, but it reaches the store)
    lost       only for the liveness points: a busy worker SIGKILLed and declared lost

For the recovery points the scheduler is SIGKILLed with work running and waiting, and the
restart crashes while it rebuilds its memory. Either way the scheduler is then started
unarmed on the same ports and Redis, the waiting tasks are let go, a few more tasks are
submitted, and the ledger check runs
(tests/chaos/ledger.py): every acknowledged task ends in exactly one terminal state, the one its
kind allows, with at most one success.

50 cases under `make chaos`; `make test` runs one per kind of step. The cases share one stack
(one Redis, two workers) to save start-up time; each keeps its own ledger.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from switchyard.v1 import scheduler_pb2 as pb

from scheduler.crashpoints import CRASH_EXIT_STATUS, POINTS
from tests.chaos.conftest import FULL
from tests.chaos.ledger import Ack, Ledger, assert_balanced
from tests.support.redis_server import RedisServer, wait_until
from tests.support.stack import TEST_SCHEDULER_ENV, S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HEARTBEAT_TIMEOUT = float(TEST_SCHEDULER_ENV["SWITCHYARD_HEARTBEAT_TIMEOUT_SECONDS"])
GRACE = float(TEST_SCHEDULER_ENV["SWITCHYARD_LOST_GRACE_SECONDS"])
WORKERS = ("w1", "w2")
SLOTS = 2
RETRY_POLICY = "chaos"
CONFIG = f"""\
retry_policies:
  {RETRY_POLICY}:
    max_retries: 1
    backoff: linear
    base_delay_seconds: 0.05
    max_delay_seconds: 0.05
    jitter: 0
    dead_letter: true
"""
"""A retry policy fast enough to walk a task through failed -> retrying -> pending -> dead letter."""

# (point, n): the scheduler dies the n-th time it reaches the point. Every n here is reached by
# the workload (a case fails if its scheduler never dies).
FULL_CASES = [
    *[(point, n) for point in ("submit:before", "submit:after", "dispatch:after", "apply:before",
                               "apply:after") for n in (1, 2, 3)],
    *[("dispatch:before", n) for n in (1, 2, 3, 4)],
    *[(point, n) for point in ("submit:answered", "handout:followed", "report:read", "report:followed")
      for n in (1, 2, 3)],
    *[(point, n) for point in ("retry:promote:before", "retry:promote:after") for n in (1, 2)],
    ("deadletter:replay:before", 1), ("deadletter:replay:after", 1), ("deadletter:purge:before", 1),
    *[(point, n) for point in ("cancel:before", "cancel:after") for n in (1, 2)],
    ("lost:marked", 1), ("lost:requeued", 1), ("lost:requeued", 2),
    ("lost:purge:before", 1), ("lost:purge:after", 1),
    ("recover:start", 1), ("recover:pending", 1), ("recover:ledgers", 1),
]
CI_CASES = [
    ("submit:before", 2), ("dispatch:after", 2), ("apply:before", 2), ("report:followed", 1),
    ("retry:promote:after", 1), ("deadletter:replay:before", 1), ("cancel:after", 1),
    ("lost:requeued", 1), ("recover:pending", 1),
]
CASES = FULL_CASES if FULL else CI_CASES


def test_the_cases_cover_every_point_and_number_fifty() -> None:
    assert len(FULL_CASES) == 50 == len(set(FULL_CASES))
    assert {point for point, _n in FULL_CASES} == set(POINTS), "a crash point without a case"
    assert set(CI_CASES) <= set(FULL_CASES)


class Workload:
    """One case's walk through the steps, stopping as soon as the scheduler is dead."""

    def __init__(self, stack: Stack, ledger: Ledger, case: str) -> None:
        self.stack = stack
        self.ledger = ledger
        self.case = case
        self.gates: list[str] = []
        self.faults: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers

    def alive(self) -> bool:
        proc = self.stack.scheduler_proc
        return proc is not None and proc.poll() is None

    def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> bool:
        """Wait for `predicate` while the scheduler lives; False if it died first."""
        deadline = time.monotonic() + timeout
        while self.alive():
            try:
                if predicate():
                    return True
            except grpc.RpcError:
                pass  # died under the call: the loop condition sees it
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.case}: timed out after {timeout}s waiting for {what}\n"
                                     f"{self.stack.log_tails()}")
            time.sleep(0.05)
        return False

    def died_under(self, err: grpc.RpcError) -> bool:
        """Whether a failed call failed because the scheduler was dying (it exits within seconds)."""
        proc = self.stack.scheduler_proc
        if proc is None or not isinstance(err, grpc.Call) or err.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            return False
        return True

    def call(self, rpc: Callable[[], object]) -> bool:
        """Make a control call; False when the scheduler died under it (its answer never came)."""
        try:
            rpc()
        except grpc.RpcError as err:
            if self.died_under(err):
                return False
            raise
        return True

    def state_of(self, task_id: str) -> int:
        return int(self.stack.get(task_id).state)

    def sleep_task(self, tag: str) -> str | None:
        return self.ledger.submit(self.stack, "e2e.sleep", [0.05, tag], tag=f"sleep:{tag}",
                                  content_type="text")

    def gate_task(self, tag: str) -> str | None:
        gate = f"{self.case}:{tag}"
        self.gates.append(gate)
        return self.ledger.submit(self.stack, "e2e.gate", [gate, 60.0], tag=f"gate:{tag}",
                                  content_type="text")

    # ------------------------------------------------------------------ steps

    def submit(self) -> list[str]:
        ids: list[str] = []
        for i in range(6):
            task_id = self.sleep_task(f"{self.case}:single-{i}")
            if task_id is None:
                return ids
            ids.append(task_id)
        tags = [f"{self.case}:batch-{i}" for i in range(3)]
        batch = self.ledger.submit_batch(
            self.stack,
            [self.stack.submit_request("e2e.sleep", [0.05, tag], content_type="text") for tag in tags],
            [f"sleep:{tag}" for tag in tags],
        )
        ids += batch or []
        self.until(lambda: all(self.state_of(t) == S.TASK_STATE_SUCCEEDED for t in ids), 30,
                   "the submitted tasks to succeed")
        return ids

    def retry_and_replay(self) -> None:
        failing = []
        for i in range(2):
            task_id = self.ledger.submit(self.stack, "e2e.fail", [f"{self.case}:fail-{i}"],
                                         tag=f"fail:{i}", content_type="text",
                                         retry_policy=RETRY_POLICY)
            if task_id is None:
                return
            failing.append(task_id)
        if not self.until(lambda: all(self.state_of(t) == S.TASK_STATE_DEAD_LETTERED for t in failing),
                          30, "the failing tasks to be dead-lettered"):
            return
        replayed, purged = failing
        stub = self.stack.stub
        if not self.call(lambda: stub.RetryDeadLetter(pb.RetryDeadLetterRequest(task_id=replayed), timeout=10)):
            return
        if not self.call(lambda: stub.PurgeDeadLetters(pb.PurgeDeadLettersRequest(task_ids=[purged]), timeout=10)):
            return
        self.ledger.forget(purged)  # deleted on request: nothing owed
        self.until(lambda: self.state_of(replayed) == S.TASK_STATE_DEAD_LETTERED, 30,
                   "the replayed dead letter to fail again")

    def cancel(self, finished: str | None) -> None:
        target = self.gate_task("cancelled")
        if target is None:
            return
        if not self.until(lambda: self.state_of(target) == S.TASK_STATE_RUNNING, 30,
                          "the task to cancel to run"):
            return
        if not self.call(lambda: self.stack.cancel(target)) or finished is None:
            return
        try:
            self.stack.cancel(finished)
        except grpc.RpcError as refused:
            assert self.died_under(refused) or refused.code() == grpc.StatusCode.FAILED_PRECONDITION, refused
        else:
            raise AssertionError(f"{self.case}: cancelling finished task {finished} was accepted")

    def lose_a_worker(self) -> None:
        """Fill every slot with waiting tasks, then SIGKILL w2 while it holds two of them."""
        held = [self.gate_task(f"held-{i}") for i in range(len(WORKERS) * SLOTS)]
        if None in held:
            return

        def w2_full() -> bool:
            return len(self.stack.list_workers()["w2"].task_ids) == SLOTS

        if not self.until(w2_full, 30, "w2 to hold two tasks"):
            return
        self.stack.workers["w2"].kill()
        self.faults["w2"] = time.time()
        self.until(lambda: self.stack.list_workers()["w2"].status == pb.WORKER_STATUS_LOST,
                   HEARTBEAT_TIMEOUT + GRACE + 15, "w2 to be declared lost")

    def in_flight_at_a_kill(self) -> None:
        """Work running and waiting (two slots held, more pending behind them), then SIGKILL."""
        held = [self.gate_task(f"running-{i}") for i in range(len(WORKERS) * SLOTS)]
        for i in range(3):
            self.sleep_task(f"{self.case}:queued-{i}")
        assert None not in held, self.stack.log_tails()
        wait_until(lambda: all(self.state_of(t) == S.TASK_STATE_RUNNING for t in held if t),
                   timeout=30, message="the held tasks to run")
        self.stack.kill_scheduler()

    def open_gates(self) -> None:
        for gate in self.gates:
            self.stack.open_gate(gate)


@pytest.fixture(scope="module")
def crash_stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for every case: a Redis, a scheduler (restarted by each case) and two workers."""
    redis_server.client().flushall()
    workdir = tmp_path_factory.mktemp("chaos-crash-points")
    config = Path(workdir) / "chaos.yaml"
    config.write_text(CONFIG)
    # A short leader lease: a restart after a crash waits for the dead leader's lease to expire.
    stack = Stack(redis_server, workdir, scheduler_env={
        "SWITCHYARD_CONFIG_FILE": str(config), "SWITCHYARD_LEADER_LEASE_SECONDS": "1.5"})
    try:
        stack.start_scheduler()
        for worker_id in WORKERS:
            stack.add_worker(worker_id, "cpu", concurrency=SLOTS)
        stack.wait_workers_connected(WORKERS)
        yield stack
    finally:
        stack.close()


def _start_expecting_the_crash(stack: Stack) -> None:
    """Start the armed scheduler; a recovery point kills it before it serves."""
    with contextlib.suppress(AssertionError):  # it exited while starting: checked by the caller
        stack.start_scheduler()


def _expected(ack: Ack) -> set[int]:
    kind = ack.tag.split(":", 1)[0]
    if kind == "fail":
        return {S.TASK_STATE_DEAD_LETTERED}
    if ack.tag == "gate:cancelled":
        # CANCELLED, or SUCCEEDED when the crash came before the cancel reached the store.
        return {S.TASK_STATE_CANCELLED, S.TASK_STATE_SUCCEEDED}
    return {S.TASK_STATE_SUCCEEDED}


@pytest.mark.parametrize(("point", "count"), CASES, ids=[f"{p}:{n}" for p, n in CASES])
def test_a_crash_at_each_point_loses_nothing(crash_stack: Stack, point: str, count: int) -> None:
    stack = crash_stack
    case = f"{point}:{count}"
    ledger = Ledger()
    work = Workload(stack, ledger, case)
    if not work.alive():  # an earlier case failed with its scheduler down
        stack.start_scheduler()
    for worker_id in WORKERS:
        if not stack.workers[worker_id].alive():
            stack.add_worker(worker_id, "cpu", concurrency=SLOTS)
    stack.wait_workers_connected(WORKERS)
    stack.stop_scheduler()
    stack.scheduler_env["SWITCHYARD_CRASH_AT"] = case
    try:
        if point.startswith("recover:"):
            del stack.scheduler_env["SWITCHYARD_CRASH_AT"]
            stack.start_scheduler()
            stack.wait_workers_connected(WORKERS)
            work.submit()
            work.in_flight_at_a_kill()
            stack.scheduler_env["SWITCHYARD_CRASH_AT"] = case
            _start_expecting_the_crash(stack)
        else:
            stack.start_scheduler()
            stack.wait_workers_connected(WORKERS)
            finished = work.submit()
            if work.alive():
                work.retry_and_replay()
            if work.alive():
                work.cancel(finished[0] if finished else None)
            if point.startswith("lost:") and work.alive():
                work.lose_a_worker()
        assert stack.scheduler_proc is not None
        wait_until(lambda: stack.scheduler_proc.poll() is not None, timeout=15,
                   message=f"the scheduler to die at crash point {case} (is it reached by the workload?)")
        assert stack.scheduler_proc.returncode == CRASH_EXIT_STATUS, stack.log_tails()
    finally:
        stack.scheduler_env.pop("SWITCHYARD_CRASH_AT", None)

    stack.start_scheduler()
    for worker_id in WORKERS:
        if not stack.workers[worker_id].alive():
            # Back under its id only once the restarted scheduler has given the dead worker's
            # work away: a same-id restart inside the grace period strands it (a known bug, see
            # tests/chaos/test_worker_kills.py).
            stack.wait_worker_status(worker_id, [pb.WORKER_STATUS_LOST], timeout=HEARTBEAT_TIMEOUT + GRACE + 15)
            stack.add_worker(worker_id, "cpu", concurrency=SLOTS)
    work.open_gates()
    # The restarted scheduler takes new work too (and the ledger is never empty).
    assert None not in [work.sleep_task(f"{case}:after-{i}") for i in range(3)]
    finals = ledger.settle(stack, timeout=60)
    verdict = ledger.verify(stack, finals, faulted_workers=work.faults, expected=_expected)
    assert_balanced(verdict, stack)
