"""`Worker.view` hands placement the view it built last while nothing the view shows has changed:
after any sequence of the changes the engine makes to a worker, the view equals one built
afresh, and a worker that did not change gives back the very same view."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from scheduler.core.model import WorkerType, WorkerView
from scheduler.fleet import Gpu, InFlight, Ledger, Worker

WINDOW = 300.0


def gpu_worker() -> Worker:
    return Worker(
        worker_id="w1", worker_type=WorkerType.GPU, slots=4, labels={"zone": "a"}, connected=True,
        gpus=[Gpu(0, "A10", "u0", 24_000, 24_000), Gpu(1, "A10", "u1", 24_000, 20_000)],
    )


def fresh(worker: Worker, now: float) -> WorkerView:
    """The view built from scratch: a copy whose ledger is a plain dict never reuses one."""
    return replace(worker, in_flight=dict(worker.in_flight), _view=None).view(now, WINDOW)


def test_an_unchanged_worker_gives_back_the_same_view_and_a_plain_dict_never_does() -> None:
    worker = gpu_worker()
    first = worker.view(10.0, WINDOW)
    assert worker.view(11.0, WINDOW) is first
    worker.in_flight["t1"] = InFlight("t1", 1, "gpu", gpu_index=0, gpu_memory_mb=8_000)
    second = worker.view(12.0, WINDOW)
    assert second is not first and second.in_flight == 1 and second.gpus[0].reserved_mb == 8_000
    plain = replace(worker, in_flight=dict(worker.in_flight), _view=None)
    assert plain.view(13.0, WINDOW) is not plain.view(13.0, WINDOW)
    assert plain.view(13.0, WINDOW) == second


def _change(worker: Worker, rng: random.Random, now: float) -> None:
    """One change of the kinds the engine makes (agents, placement, lifecycle, liveness,
    controls), picked at random."""
    ledger = worker.in_flight
    task_id = f"t{rng.randrange(8)}"
    item = InFlight(task_id, 1, rng.choice(["gpu", "cpu", "burst"]), gpu_index=rng.choice([None, 0, 1]),
                    gpu_memory_mb=rng.choice([0, 2_000, 6_000]), served_queue=rng.choice(["", "burst"]))
    changes: list[Callable[[], object]] = [
        lambda: ledger.__setitem__(task_id, item),
        lambda: ledger.pop(task_id, None),
        lambda: ledger.setdefault(task_id, item),
        lambda: ledger.__delitem__(task_id) if task_id in ledger else None,
        lambda: ledger.clear() if rng.random() < 0.2 else None,
        lambda: ledger.update({task_id: item}),
        lambda: ledger.__ior__({task_id: item}),
        lambda: ledger.popitem() if ledger else None,
        lambda: setattr(worker.gpus[rng.randrange(2)], "memory_free_mb", rng.randrange(0, 24_000, 1_000)),
        lambda: setattr(worker.gpus[rng.randrange(2)], "utilization_percent", rng.randrange(101)),
        lambda: setattr(worker, "gpus", [replace(g) for g in worker.gpus]),
        lambda: setattr(worker, "labels", {"zone": rng.choice("ab")}),
        lambda: worker.labels.__setitem__("rack", rng.choice("xy")),  # in place: no engine path does, still seen
        lambda: setattr(worker, "slots", rng.randrange(1, 6)),
        lambda: setattr(worker, "draining", not worker.draining),
        lambda: setattr(worker, "connected", rng.random() < 0.8),
        lambda: setattr(worker, "lost", rng.random() < 0.1),
        lambda: setattr(worker, "registered_tasks", frozenset(rng.sample(["a", "b", "c"], 2))),
        lambda: worker.record_failure(now, WINDOW, 3, 60.0, task_id),
        lambda: worker.end_quarantine(now),
        lambda: None,  # nothing changes: only time moves
    ]
    rng.choice(changes)()


@pytest.mark.parametrize("seed", range(20))
def test_after_any_changes_the_view_is_the_one_built_afresh(seed: int) -> None:
    rng = random.Random(seed)
    worker = gpu_worker()
    now = 1_000.0
    reused = 0
    for _ in range(300):
        _change(worker, rng, now)
        now += rng.choice([0.0, 1.0, 45.0, 400.0])  # failures leave the window, quarantines end
        before = worker._view
        view = worker.view(now, WINDOW)
        reused += before is not None and view is before[1]
        assert view == fresh(worker, now)
        assert isinstance(worker.in_flight, Ledger)
    assert reused  # the point of it: some rounds did not build again


def test_time_alone_ends_a_quarantine_and_ages_failures_out_of_the_view() -> None:
    worker = gpu_worker()
    for i in range(3):
        worker.record_failure(1_000.0, WINDOW, 3, 60.0, f"t{i}")
    quarantined = worker.view(1_000.0, WINDOW)
    assert quarantined.quarantined and quarantined.recent_failures == 3
    released = worker.view(1_061.0, WINDOW)  # nothing changed but the clock
    assert not released.quarantined and released.recent_failures == 3
    assert worker.view(1_301.0, WINDOW).recent_failures == 0
