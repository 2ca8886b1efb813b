"""A worker's state as operators see it, with its reason and since when; ending a quarantine."""

from __future__ import annotations

from scheduler.core.model import WorkerType
from scheduler.fleet import OPERATOR_STATES, InFlight, Worker


def connected(worker_id: str = "w1") -> Worker:
    worker = Worker(worker_id, WorkerType.CPU, 2)
    worker.connected = True
    worker.last_heartbeat_wall = 100.0
    return worker


def test_ready_dates_from_when_it_was_first_seen_ready() -> None:
    worker = connected()
    assert worker.operator_status(200.0) == ("ready", "", 200.0)
    assert worker.operator_status(250.0).since == 200.0


def test_draining_dates_from_the_drain_and_drained_from_when_it_went_idle() -> None:
    worker = connected()
    worker.in_flight["t1"] = InFlight("t1", 1, "cpu_standard")
    worker.draining, worker.drained_at = True, 300.0
    status = worker.operator_status(310.0)
    assert status == ("draining", "drained by operator; 1 task(s) still running", 300.0)
    del worker.in_flight["t1"]
    assert worker.operator_status(320.0) == ("drained", "drained by operator; idle", 320.0)
    assert worker.operator_status(330.0).since == 320.0


def test_quarantine_gives_its_reason_and_start_and_ends_on_time_or_on_request() -> None:
    worker = connected()
    for index in range(3):
        tipped = worker.record_failure(400.0 + index, window_seconds=60, quarantine_after=3,
                                       quarantine_seconds=100, task_id=f"t{index}")
    assert tipped
    status = worker.operator_status(405.0)
    assert status == ("quarantined", "3 distinct tasks failed on it within 60 s", 402.0)
    # It runs out on its own: ready from the moment it ended.
    assert worker.operator_status(600.0) == ("ready", "", 502.0)
    # Or an operator ends it, and its failures are forgotten with it.
    worker.record_failure(700.0, 60, 1, 100, "t9")
    assert worker.operator_state(701.0) == "quarantined"
    assert worker.end_quarantine(702.0)
    assert (worker.failures, worker.failed_tasks, worker.operator_state(702.0)) == ([], {}, "ready")
    assert not worker.end_quarantine(703.0), "nothing to end a second time"


def test_lost_says_why_and_since_when() -> None:
    worker = connected()
    worker.connected = False
    status = worker.operator_status(500.0)
    assert (status.state, status.since) == ("lost", 100.0)  # the last sign of life
    assert "stream closed" in status.reason
    worker.lost, worker.lost_reason, worker.lost_since = True, "no heartbeat for 10s", 510.0
    assert worker.operator_status(520.0) == ("lost", "no heartbeat for 10s", 510.0)
    recovered = Worker("w2", WorkerType.GPU, 1)  # known from its ledger after a restart
    assert recovered.operator_status(5.0).reason.startswith("not connected since the scheduler started")


def test_every_state_is_an_operator_state() -> None:
    worker = connected()
    seen = {worker.operator_state(1.0)}
    worker.draining = True
    seen.add(worker.operator_state(2.0))
    worker.in_flight["t"] = InFlight("t", 1, "q")
    seen.add(worker.operator_state(3.0))
    worker.draining = False
    worker.quarantined_until = 10.0
    seen.add(worker.operator_state(4.0))
    worker.lost = True
    seen.add(worker.operator_state(5.0))
    assert seen == set(OPERATOR_STATES)
