"""Placement policies of the pure core: preferred-GPU waits, fallback, per-queue limits, quarantine,
affinity, strategy, rate limits and explain."""

from __future__ import annotations

import pytest

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
    Strategy,
    evaluate,
    explain,
    plan,
)
from scheduler.core.ratelimit import RateLimit
from scheduler.core.routing import FallbackChain


def test_rate_limit_parsing():
    assert RateLimit.parse("x", "10/m").per_second == pytest.approx(10 / 60)
    assert RateLimit.parse("x", "100/s").burst == 100
    with pytest.raises(ValueError, match="10/s"):
        RateLimit.parse("x", "ten per minute")


def task(tid, cls=TaskClass.CPU, queue="q", submitted_at=0.0, **kw):
    gpu = {TaskClass.GPU_INTENSIVE: GpuNeed.REQUIRED, TaskClass.MIXED: GpuNeed.PREFERRED}.get(cls, GpuNeed.NONE)
    return PendingTask(tid, queue, kw.pop("priority", 5), kw.pop("seq", 0), cls, kw.pop("gpu", gpu),
                       submitted_at=submitted_at, **kw)


def test_gpu_preferred_waits_for_gpu_before_falling_back_to_cpu():
    policy = PlacementPolicy(preferred_gpu_wait_seconds=30)
    cpu = WorkerView("c", WorkerType.CPU, 1, 0)
    early = PlacementContext(policy=policy, now=10)
    late = PlacementContext(policy=policy, now=31)
    mixed = task("t", TaskClass.MIXED)
    assert evaluate(mixed, cpu, early).rejected_by == "fallback_wait"
    assert evaluate(mixed, cpu, late).eligible
    required = task("g", TaskClass.GPU_INTENSIVE)
    assert not evaluate(required, cpu, PlacementContext(policy=policy, now=10**6)).eligible


def test_fallback_chain_spills_into_the_next_queue_after_waiting():
    queues = {"gpu_fallback": QueueSpec("gpu_fallback", TaskClass.MIXED, 6),
              "cpu_standard": QueueSpec("cpu_standard", TaskClass.CPU, 5),
              "cpu_batch": QueueSpec("cpu_batch", TaskClass.CPU, 1, max_tasks_per_worker=1)}
    chain = FallbackChain(("cpu_standard", "cpu_batch"), after_seconds=60)
    worker = WorkerView("c", WorkerType.CPU, 4, 1, in_flight_by_queue={"cpu_standard": 1})
    limited = {**queues, "cpu_standard": QueueSpec("cpu_standard", TaskClass.CPU, 5, max_tasks_per_worker=1)}
    t = task("t", queue="cpu_standard")
    assert evaluate(t, worker, PlacementContext(queues=limited, chains=(chain,), now=10)).rejected_by == "queue_limit"
    verdict = evaluate(t, worker, PlacementContext(queues=limited, chains=(chain,), now=61))
    assert verdict.eligible and verdict.served_queue == "cpu_batch"
    assert chain.reachable("cpu_standard", 61) == ("cpu_standard", "cpu_batch")
    assert chain.reachable("cpu_standard", 59) == ("cpu_standard",)


def test_per_queue_limit_per_worker():
    spec = QueueSpec("training", TaskClass.CPU, 5, max_tasks_per_worker=1)
    ctx = PlacementContext(queues={"training": spec})
    busy = WorkerView("w", WorkerType.CPU, 4, 1, in_flight_by_queue={"training": 1})
    assert evaluate(task("t", queue="training"), busy, ctx).rejected_by == "queue_limit"
    pending = [task(f"t{i}", queue="training", seq=i) for i in range(3)]
    result = plan(pending, [WorkerView("w", WorkerType.CPU, 4, 0)], ctx=ctx)
    assert len(result.assignments) == 1


def test_quarantined_worker_is_skipped_and_failures_lower_the_score():
    ctx = PlacementContext()
    assert evaluate(task("t"), WorkerView("w", WorkerType.CPU, 1, 0, quarantined=True), ctx).rejected_by == "quarantine"
    clean = evaluate(task("t"), WorkerView("a", WorkerType.CPU, 1, 0), ctx)
    flaky = evaluate(task("t"), WorkerView("b", WorkerType.CPU, 1, 0, recent_failures=3), ctx)
    assert clean.score > flaky.score


def test_soft_label_affinity_prefers_but_does_not_require():
    t = task("t", preferred_labels=(("model", "whisper-large"),))
    loaded = WorkerView("loaded", WorkerType.CPU, 2, 1, labels={"model": "whisper-large"})
    empty = WorkerView("empty", WorkerType.CPU, 2, 0)
    result = plan([t], [empty, loaded])
    assert result.assignments[0].worker_id == "loaded"
    assert plan([t], [empty]).assignments[0].worker_id == "empty"


def test_spread_and_binpack_choose_differently():
    t = task("t")
    fleet = [WorkerView("busy", WorkerType.CPU, 4, 3), WorkerView("idle", WorkerType.CPU, 4, 0)]
    assert plan([t], fleet).assignments[0].worker_id == "idle"
    binpack = PlacementContext(policy=PlacementPolicy(strategy=Strategy.BINPACK))
    assert plan([t], fleet, ctx=binpack).assignments[0].worker_id == "busy"


def test_rate_limited_tasks_wait_and_others_pass():
    limit = RateLimit("gen.*", per_second=1 / 60, burst=1)
    ctx = PlacementContext(rate_limits=(limit,))
    pending = [task("g1", seq=1, task_name="gen.image"), task("g2", seq=2, task_name="gen.image"),
               task("o", seq=3, task_name="thumb")]
    result = plan(pending, [WorkerView("w", WorkerType.CPU, 4, 0)], ctx=ctx, rate_tokens={"gen.*": 1})
    assert [a.task_id for a in result.assignments] == ["g1", "o"]
    assert result.waiting["g2"].startswith("rate limited")


def test_explain_gives_a_verdict_per_worker_with_score_terms():
    t = task("t", TaskClass.GPU_INTENSIVE)
    fleet = [WorkerView("c", WorkerType.CPU, 1, 0), WorkerView("d", WorkerType.GPU, 1, 0, accepting=False)]
    verdicts, chosen = explain(t, fleet, PlacementContext())
    assert chosen is None
    assert {v.worker_id: v.rejected_by for v in verdicts} == {"c": "capability", "d": "draining"}
    fleet.append(WorkerView("g", WorkerType.GPU, 1, 0, gpus=(GpuView(0, 40960, 40960),)))
    verdicts, chosen = explain(t, fleet, PlacementContext())
    assert chosen is not None and chosen.worker_id == "g"
    assert {name for name, _v, _w in chosen.terms} == {
        "load", "gpu_utilization", "memory_headroom", "capability", "affinity", "failures"}
