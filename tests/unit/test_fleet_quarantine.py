"""Quarantine counts distinct failed tasks: a poison task retried by its policy on the same
worker does not take a healthy worker out, many different tasks failing there do."""

from __future__ import annotations

from scheduler.core.model import WorkerType
from scheduler.fleet import Worker

WINDOW, AFTER, FOR = 300.0, 5, 300.0


def worker() -> Worker:
    return Worker(worker_id="w1", worker_type=WorkerType.CPU, slots=1)


def test_one_task_failing_again_and_again_does_not_quarantine() -> None:
    w = worker()
    tipped = [w.record_failure(100.0 + i, WINDOW, AFTER, FOR, "poison") for i in range(10)]
    assert not any(tipped)
    assert w.quarantined_until == 0.0
    assert w.view(110.0, WINDOW).recent_failures == 10  # scoring still sees every failure


def test_distinct_tasks_failing_quarantine_at_the_threshold() -> None:
    w = worker()
    tipped = [w.record_failure(100.0 + i, WINDOW, AFTER, FOR, f"t{i}") for i in range(AFTER)]
    assert tipped == [False] * (AFTER - 1) + [True]
    assert w.quarantined_until == 100.0 + AFTER - 1 + FOR


def test_failures_older_than_the_window_are_forgotten() -> None:
    w = worker()
    for i in range(AFTER - 1):
        w.record_failure(float(i), WINDOW, AFTER, FOR, f"old{i}")
    assert not w.record_failure(WINDOW + 10.0, WINDOW, AFTER, FOR, "new")
