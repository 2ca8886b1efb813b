"""The shape index is exact: `plan` makes the same choices as scoring every worker for every task.

`plan_reference` (scheduler/core/placement/reference.py) is the worker-by-worker scan `plan` used
before the shape index. With `max_scored_workers=0` it scores every eligible worker, and that is
what "exact" is measured against: for random fleets, backlogs and round contexts, both return
the same Plan, assignment for assignment (task, worker, GPU device, served queue, reason with the
score), with the same waits and the same `more`. The draws are small and repetitive on purpose:
identical workers, equal scores and full devices are where tie-breaking and booking go wrong.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.model import (
    GpuNeed,
    GpuView,
    PendingTask,
    QueueSpec,
    TaskClass,
    WorkerType,
    WorkerView,
)
from scheduler.core.placement import (
    PlacementContext,
    PlacementPolicy,
    ScoringWeights,
    ShapeVerdicts,
    Strategy,
    plan,
)
from scheduler.core.placement.reference import plan_reference
from scheduler.core.ratelimit import RateLimit
from scheduler.core.routing import FallbackChain

QUEUES = ("gpu", "mixed", "cpu", "batch")
QUEUE_CLASS = {"gpu": TaskClass.GPU_INTENSIVE, "mixed": TaskClass.MIXED, "cpu": TaskClass.CPU, "batch": TaskClass.CPU}
LABELS = st.sampled_from([(), (("zone", "eu"),), (("zone", "us"),), (("zone", "eu"), ("model", "big"))])
TASK_NAMES = ("gen.a", "gen.b", "thumb")
REGISTERED = st.sampled_from([frozenset(), frozenset(), frozenset({"gen.a", "thumb"}), frozenset({"gen.b"}),
                              frozenset(TASK_NAMES)])
"""What workers' Celery apps register: unknown (anything goes) most often, some of the names, all."""

gpus_st = st.lists(
    st.builds(lambda total, free, reserved, util: (total, free, reserved, util),
              st.sampled_from([16000, 24000]), st.sampled_from([0, 4000, 8000, 16000, 24000]),
              st.sampled_from([0, 0, 4000]), st.sampled_from([0, 0, 50, 100])),
    max_size=3,
)

# The strategies the composites below draw from, built once: a strategy built inside a composite
# is a new object at every draw, and Hypothesis validates each new one again (about half of these
# tests' time went there). The same strategies as before, so the same distribution of examples;
# the values they share across examples (dicts, RateLimit) are only read by placement.
MAX_FLEET, MAX_SLOTS = 12, 4
_FLEET_SIZE = st.integers(0, MAX_FLEET)
_FLEET_ORDER = [st.permutations(range(size)) for size in range(MAX_FLEET + 1)]
_SLOTS = st.integers(0, MAX_SLOTS)
_IN_FLIGHT = [st.integers(0, slots + 1) for slots in range(MAX_SLOTS + 1)]
_WORKER_TYPE = st.sampled_from(list(WorkerType))
_ACCEPTING = st.sampled_from([True, True, True, False])
_BY_QUEUE = st.sampled_from([{}, {}, {"cpu": 1}, {"gpu": 1, "batch": 2}])
_FAILURES = st.sampled_from([0, 0, 0, 1, 3])
_QUARANTINED = st.sampled_from([False, False, False, True])


@st.composite
def fleets(draw: st.DrawFn) -> list[WorkerView]:
    size = draw(_FLEET_SIZE)
    fleet = []
    for i in draw(_FLEET_ORDER[size]):
        slots = draw(_SLOTS)
        gpus = tuple(GpuView(j, total, min(free, total), reserved, util)
                     for j, (total, free, reserved, util) in enumerate(draw(gpus_st)))
        fleet.append(WorkerView(
            f"w{i:02d}", draw(_WORKER_TYPE), slots, draw(_IN_FLIGHT[slots]),
            accepting=draw(_ACCEPTING), gpus=gpus,
            labels=dict(draw(LABELS)),
            in_flight_by_queue=draw(_BY_QUEUE),
            recent_failures=draw(_FAILURES),
            quarantined=draw(_QUARANTINED),
            registered_tasks=draw(REGISTERED),
        ))
    return fleet


_BACKLOG_SIZE = st.integers(0, 30)
_QUEUE = st.sampled_from(QUEUES)
_TASK_CLASS = {queue: st.sampled_from([QUEUE_CLASS[queue], *TaskClass]) for queue in QUEUES}
_GPU_NEED = st.sampled_from([GpuNeed.NONE, GpuNeed.PREFERRED, GpuNeed.REQUIRED])
_PRIORITY = st.integers(1, 10)
_GPU_MEMORY = st.sampled_from([0, 0, 4000, 8000, 20000])
_SUBMITTED_AT = st.sampled_from([0.0, 40.0, 90.0])
_PREFERRED = st.sampled_from([(), (("zone", "us"),), (("model", "big"), ("zone", "eu"))])
_TASK_NAME = st.sampled_from(TASK_NAMES)


@st.composite
def backlogs(draw: st.DrawFn) -> list[PendingTask]:
    tasks = []
    for seq in range(draw(_BACKLOG_SIZE)):
        queue = draw(_QUEUE)
        task_class = draw(_TASK_CLASS[queue])
        tasks.append(PendingTask(
            f"t{seq:02d}", queue, draw(_PRIORITY), seq, task_class,
            draw(_GPU_NEED),
            gpu_memory_mb=draw(_GPU_MEMORY),
            labels=draw(LABELS), submitted_at=draw(_SUBMITTED_AT),
            preferred_labels=draw(_PREFERRED),
            task_name=draw(_TASK_NAME),
        ))
    return sorted(tasks, key=lambda t: t.order_key)


_WEIGHT = st.sampled_from([0.0, 0.5, 1.0, 2.0, 0.3, 1e-7, -0.5])  # configuration allows negative weights
_STRATEGY = st.sampled_from(list(Strategy))
_GPU_WAIT = st.sampled_from([0.0, 50.0])
_QUARANTINE_AFTER = st.sampled_from([0, 2, 5])
_LIMITS = st.sampled_from([{}, {"cpu": 1}, {"gpu": 1, "batch": 2}, {"cpu": 2, "mixed": 1}])
_CHAINS = st.sampled_from([(), (FallbackChain(("gpu", "mixed", "cpu", "batch"), after_seconds=30),)])
_RATE_LIMITS = st.sampled_from([(), (RateLimit("gen.*", 1.0, burst=2),)])
_PREFETCH = st.integers(0, 1)


@st.composite
def contexts(draw: st.DrawFn) -> PlacementContext:
    policy = PlacementPolicy(
        strategy=draw(_STRATEGY),
        weights=ScoringWeights(draw(_WEIGHT), draw(_WEIGHT), draw(_WEIGHT), draw(_WEIGHT), draw(_WEIGHT), draw(_WEIGHT)),
        preferred_gpu_wait_seconds=draw(_GPU_WAIT),
        quarantine_failures=draw(_QUARANTINE_AFTER),
        max_scored_workers=0,
    )
    limits = draw(_LIMITS)
    queues = {q: QueueSpec(q, QUEUE_CLASS[q], 5, max_tasks_per_worker=limits.get(q, 0)) for q in QUEUES}
    chains = draw(_CHAINS)
    rate_limits = draw(_RATE_LIMITS)
    return PlacementContext(policy=policy, prefetch=draw(_PREFETCH), now=100.0,
                            queues=draw(st.sampled_from([{}, queues])), chains=chains, rate_limits=rate_limits)


@settings(max_examples=1000, deadline=None)
@given(fleets(), backlogs(), contexts(), st.sampled_from([512, 3]), st.sampled_from([10_000, 4]),
       st.sampled_from([None, {"gen.*": 1}]))
def test_plan_equals_the_exhaustive_scan(workers, pending, ctx, max_assignments, max_examined, tokens):
    budgets = {"max_assignments": max_assignments, "max_examined": max_examined, "rate_tokens": tokens}
    expected = plan_reference(pending, workers, ctx=ctx, **budgets)
    assert plan(pending, workers, ctx=ctx, **budgets) == expected
    # plan never stops scoring early, so the reference's bound must not change what plan does.
    bounded = replace(ctx, policy=replace(ctx.policy, max_scored_workers=2))
    assert plan(pending, workers, ctx=bounded, **budgets) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(fleets(), backlogs(), st.sampled_from([90.0, 100.0, 130.0, 200.0])), min_size=2, max_size=5),
       contexts(), contexts())
def test_verdicts_kept_across_rounds_change_no_choice(rounds, ctx, other_ctx):
    """The engine keeps kinds' verdicts on shapes from round to round (ShapeVerdicts): every round,
    whatever its fleet, backlog and time (from the last submission on: waits cross the fallback and
    GPU-preference thresholds between rounds), still makes the exhaustive scan's choices, and so does
    one whose context differs in policy, queues or chains (the kept verdicts must not leak into it)."""
    kept = ShapeVerdicts()
    for number, (workers, pending, now) in enumerate(rounds):
        round_ctx = replace(other_ctx if number % 3 == 2 else ctx, now=now)
        assert plan(pending, workers, ctx=round_ctx, verdicts=kept) == plan_reference(pending, workers, ctx=round_ctx)


def test_kept_verdicts_are_dropped_when_the_context_changes():
    kept = ShapeVerdicts()
    ctx = PlacementContext(queues={"cpu": QueueSpec("cpu", TaskClass.CPU, 5)})
    verdicts = kept.for_round(ctx)
    verdicts["kind", "shape"] = None
    assert kept.for_round(replace(ctx, now=5.0)) is verdicts  # the time alone: still good
    assert kept.for_round(replace(ctx, queues=dict(ctx.queues))) == {}  # another queue mapping
    assert kept.for_round(replace(ctx, policy=PlacementPolicy(strategy=Strategy.BINPACK))) == {}


def test_ties_go_to_the_smaller_worker_id_across_shapes_and_bookings():
    # Equal scores everywhere: two shapes (labels differ, no task reads them) of identical workers.
    fleet = [WorkerView(f"w{i}", WorkerType.CPU, 1, 0, labels={"host": f"h{i % 2}"}) for i in (3, 0, 2, 1)]
    pending = [PendingTask(f"t{i}", "q", 5, i, TaskClass.CPU, GpuNeed.NONE) for i in range(5)]
    result = plan(pending, fleet)
    assert [a.worker_id for a in result.assignments] == ["w0", "w1", "w2", "w3"]
    assert result == plan_reference(pending, fleet, ctx=PlacementContext(policy=PlacementPolicy(max_scored_workers=0)))


def test_a_worker_that_reaches_a_queue_limit_serves_the_fallback_queue_next():
    queues = {"cpu": QueueSpec("cpu", TaskClass.CPU, 5, max_tasks_per_worker=1),
              "batch": QueueSpec("batch", TaskClass.CPU, 1)}
    ctx = PlacementContext(queues=queues, chains=(FallbackChain(("cpu", "batch"), after_seconds=10),), now=100.0,
                           policy=PlacementPolicy(max_scored_workers=0))
    fleet = [WorkerView("a", WorkerType.CPU, 3, 0), WorkerView("b", WorkerType.HYBRID, 3, 0)]
    pending = [PendingTask(f"t{i}", "cpu", 5, i, TaskClass.CPU, GpuNeed.NONE) for i in range(5)]
    result = plan(pending, fleet, ctx=ctx)
    assert result == plan_reference(pending, fleet, ctx=ctx)
    # a (a CPU worker) fits CPU work best: once its cpu count hits the limit it takes more as batch
    # work, which moves it to another shape mid-round; b gets a cpu task and then batch work too.
    assert [(a.worker_id, a.served_queue) for a in result.assignments] == [
        ("a", "cpu"), ("a", "batch"), ("a", "batch"), ("b", "cpu"), ("b", "batch")]


_DEVICE = st.tuples(st.sampled_from([8000, 24000, 80000]), st.integers(0, 8))
_DEVICES = {least: st.lists(_DEVICE, min_size=least, max_size=3) for least in (1, 3)}
_LEAST_DEVICES = st.sampled_from([1, 3])
_GPU_WORKER_TYPE = st.sampled_from([WorkerType.GPU, WorkerType.HYBRID])
_GPU_FLEET_SIZE = st.integers(2, 5)
_GPU_SLOTS = st.integers(1, 20)


@st.composite
def gpu_fleets(draw: st.DrawFn) -> list[WorkerView]:
    """GPU workers with devices of different sizes and plenty of slots: GPU memory decides."""
    fleet = []
    for i in range(draw(_GPU_FLEET_SIZE)):
        devices = draw(_DEVICES[draw(_LEAST_DEVICES)])
        gpus = tuple(GpuView(j, total, total * free // 8) for j, (total, free) in enumerate(devices))
        fleet.append(WorkerView(f"g{i}", draw(_GPU_WORKER_TYPE), draw(_GPU_SLOTS), 0, gpus=gpus))
    return fleet


@settings(max_examples=500, deadline=None)
@given(gpu_fleets(), st.lists(st.sampled_from([1000, 3000, 6000, 0]), min_size=2, max_size=12),
       st.sampled_from(list(Strategy)), st.sampled_from([0.01, 0.5]), st.sampled_from([0.0, 0.5, 3.0]))
def test_plan_equals_the_exhaustive_scan_when_gpu_memory_decides(workers, memories, strategy, load, headroom):
    pending = [PendingTask(f"t{seq:02d}", "gpu", 5, seq, TaskClass.GPU_INTENSIVE, GpuNeed.REQUIRED, memory)
               for seq, memory in enumerate(memories)]
    policy = PlacementPolicy(strategy=strategy, weights=ScoringWeights(load=load, memory_headroom=headroom),
                             max_scored_workers=0)
    ctx = PlacementContext(policy=policy)
    assert plan(pending, workers, ctx=ctx) == plan_reference(pending, workers, ctx=ctx)


def test_a_booking_that_makes_another_device_the_roomiest_can_raise_a_score():
    # g2's roomiest device (index 1, 80 GB) fills up; its next roomiest (index 2, 24 GB) has a far
    # larger share left, so g2's score for a 1000 MiB task goes up after the booking, not down.
    g = [(24000, 9000), (8000, 4000), (80000, 10000)], [(24000, 9000)], [(8000, 7000), (80000, 20000), (24000, 15000)]
    fleet = [WorkerView(f"g{i}", WorkerType.GPU, 20, 0, gpus=tuple(GpuView(j, t, f) for j, (t, f) in enumerate(devices)))
             for i, devices in enumerate(g)]
    pending = [PendingTask(f"t{seq}", "gpu", 5, seq, TaskClass.GPU_INTENSIVE, GpuNeed.REQUIRED, memory)
               for seq, memory in enumerate([1000, 3000, 6000, 1000])]
    ctx = PlacementContext(policy=PlacementPolicy(weights=ScoringWeights(load=0.01, memory_headroom=3.0),
                                                  max_scored_workers=0))
    result = plan(pending, fleet, ctx=ctx)
    assert result == plan_reference(pending, fleet, ctx=ctx)
    assert [(a.worker_id, a.gpu_index) for a in result.assignments] == [("g1", 0), ("g2", 1), ("g2", 1), ("g2", 2)]


def random_fleet(rng: random.Random, size: int) -> list[WorkerView]:
    """A fleet like the placement benchmark's: mixed types, 1-8 slots, GPUs of several sizes."""
    fleet = []
    for i in range(size):
        kind = rng.choice(list(WorkerType))
        slots = rng.randint(1, 8)
        gpus = () if kind is WorkerType.CPU else tuple(
            GpuView(j, total, rng.randint(total // 4, total), utilization_percent=rng.randint(0, 100))
            for j, total in enumerate(rng.choices([16384, 24576, 81920], k=rng.choice([1, 2, 4]))))
        # Equal registries as distinct objects (as agents' hellos give them before the fleet interns them).
        registered = frozenset(rng.choice([(), (), TASK_NAMES, TASK_NAMES[:2], ("thumb",)]))
        fleet.append(WorkerView(f"w{i:04d}", kind, slots, rng.randint(0, slots), accepting=rng.random() > 0.05,
                                gpus=gpus, labels={"zone": rng.choice(["eu", "us"]), "host": f"h{i}"},
                                recent_failures=rng.choice([0, 0, 0, 1, 2]), registered_tasks=registered))
    return fleet


def random_backlog(rng: random.Random, size: int) -> list[PendingTask]:
    tasks = []
    for seq in range(size):
        queue = rng.choice(QUEUES)
        tasks.append(PendingTask(
            f"t{seq:05d}", queue, rng.choice([1, 3, 5, 8, 10]), seq, QUEUE_CLASS[queue],
            GpuNeed.REQUIRED if queue == "gpu" else GpuNeed.NONE,
            gpu_memory_mb=rng.choice([0, 0, 4096, 8192, 24576]) if queue == "gpu" else 0,
            labels=(("zone", "eu"),) if rng.random() < 0.1 else (),
            preferred_labels=(("zone", "us"),) if rng.random() < 0.1 else (),
            task_name=rng.choice(TASK_NAMES),
        ))
    return sorted(tasks, key=lambda t: t.order_key)


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("seed", [1, 2])
def test_plan_equals_the_exhaustive_scan_on_a_benchmark_like_fleet(strategy, seed):
    rng = random.Random(seed)
    workers, pending = random_fleet(rng, 150), random_backlog(rng, 600)
    ctx = PlacementContext(policy=PlacementPolicy(strategy=strategy, max_scored_workers=0), now=100.0)
    result = plan(pending, workers, ctx=ctx)
    assert len(result.assignments) > 100
    assert result == plan_reference(pending, workers, ctx=ctx)


def test_a_negative_load_weight_makes_bookings_raise_scores_and_the_index_keeps_up():
    # With load weighted -1, spread prefers fuller workers, so every booking raises the booked
    # worker's score: w1, booked for the mixed task, must win the next CPU task over w0.
    idle, busy = (GpuView(0, 16000, 16000, utilization_percent=0),), (GpuView(0, 16000, 16000, utilization_percent=100),)
    fleet = [WorkerView("w0", WorkerType.HYBRID, 2, 0, gpus=busy), WorkerView("w1", WorkerType.HYBRID, 4, 0, gpus=idle),
             WorkerView("w2", WorkerType.CPU, 3, 2)]
    pending = [PendingTask(f"t{seq}", "q", 5, seq, task_class, GpuNeed.NONE)
               for seq, task_class in enumerate([TaskClass.CPU, TaskClass.MIXED, TaskClass.CPU])]
    ctx = PlacementContext(policy=PlacementPolicy(weights=ScoringWeights(load=-1.0), max_scored_workers=0))
    result = plan(pending, fleet, ctx=ctx)
    assert result == plan_reference(pending, fleet, ctx=ctx)
    assert [a.worker_id for a in result.assignments] == ["w2", "w1", "w1"]
