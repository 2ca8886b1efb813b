"""Retry, aging, rate-limit, fallback and explain decisions of the pure core."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.model import GpuNeed, PendingTask, QueueSpec, TaskClass, WorkerType, WorkerView
from scheduler.core.placement import PlacementContext, evaluate, explain, plan
from scheduler.core.policy import (
    AgingPolicy,
    Backoff,
    FallbackChain,
    PlacementPolicy,
    RateLimit,
    RetryAction,
    RetryPolicy,
    Strategy,
    decide_retry,
)

AUTEUR_DEFAULT = RetryPolicy("default", max_retries=5, base_delay_seconds=60, multiplier=2, max_delay_seconds=3600)
AUTEUR_CRITICAL = RetryPolicy("critical", max_retries=5, base_delay_seconds=30, multiplier=1.5, max_delay_seconds=1800)
AUTEUR_BATCH = RetryPolicy("batch", max_retries=3, backoff=Backoff.LINEAR, base_delay_seconds=300, jitter=0)


def test_backoff_schedules_match_the_auteur_policies():
    assert [AUTEUR_DEFAULT.nominal_delay(n) for n in range(1, 8)] == [60, 120, 240, 480, 960, 1920, 3600]
    assert [AUTEUR_CRITICAL.nominal_delay(n) for n in (1, 2, 3)] == [30, 45, 67.5]
    assert AUTEUR_CRITICAL.nominal_delay(20) == 1800
    assert [AUTEUR_BATCH.nominal_delay(n) for n in (1, 2, 3)] == [300, 600, 900]


@given(st.integers(1, 30), st.floats(0, 0.999999))
def test_jittered_delay_stays_inside_its_bounds(retry, unit):
    low, high = AUTEUR_DEFAULT.delay_bounds(retry)
    assert low <= AUTEUR_DEFAULT.delay(retry, unit) <= high
    assert high <= AUTEUR_DEFAULT.max_delay_seconds * (1 + AUTEUR_DEFAULT.jitter)


def test_retry_budget_then_dead_letter_or_fail():
    batch = AUTEUR_BATCH
    assert [decide_retry(batch, n, "ValueError", 0.5).action for n in (1, 2, 3, 4)] == [
        RetryAction.RETRY, RetryAction.RETRY, RetryAction.RETRY, RetryAction.DEAD_LETTER]
    no_dlq = RetryPolicy("x", max_retries=0, dead_letter=False)
    assert decide_retry(no_dlq, 1, "ValueError", 0.5).action is RetryAction.FAIL


def test_non_retryable_errors_skip_retries():
    policy = RetryPolicy("p", max_retries=5, non_retryable=frozenset({"PermissionError"}))
    decision = decide_retry(policy, 1, "PermissionError", 0.5)
    assert decision.action is RetryAction.DEAD_LETTER and "not retryable" in decision.reason


def test_aging_moves_one_level_per_level_wait_and_caps_at_ten():
    aging = AgingPolicy(default_max_wait_seconds=60, max_wait_seconds={1: 600})
    assert aging.effective_priority(5, 59) == 5
    assert aging.effective_priority(5, 60) == 6
    assert aging.effective_priority(5, 185) == 8
    assert aging.effective_priority(1, 599) == 1
    assert aging.effective_priority(1, 600) == 2
    assert aging.effective_priority(3, 10**9) == 10
    assert AgingPolicy(enabled=False).effective_priority(3, 10**9) == 3


@given(st.integers(1, 10), st.floats(0, 10_000), st.floats(0, 10_000))
def test_aging_is_monotone_in_waiting_time(base, a, b):
    aging = AgingPolicy(default_max_wait_seconds=30)
    low, high = sorted((a, b))
    assert aging.effective_priority(base, low) <= aging.effective_priority(base, high)


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
    from scheduler.core.model import GpuView
    fleet.append(WorkerView("g", WorkerType.GPU, 1, 0, gpus=(GpuView(0, 40960, 40960),)))
    verdicts, chosen = explain(t, fleet, PlacementContext())
    assert chosen is not None and chosen.worker_id == "g"
    assert {name for name, _v, _w in chosen.terms} == {
        "load", "gpu_utilization", "memory_headroom", "capability", "affinity", "failures"}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 10), min_size=1, max_size=30), st.integers(1, 5))
def test_no_starvation_under_aging(priorities, slots):
    """A steady stream of urgent work cannot starve an old low-priority task: with aging it is
    eventually placed, within a bound set by the per-level waits."""
    aging = AgingPolicy(default_max_wait_seconds=10)
    victim = task("victim", priority=1, seq=0, submitted_at=0.0)
    now, seq = 0.0, 1
    backlog = [victim]
    for _round in range(200):
        fresh = [task(f"u{seq + i}", priority=p, seq=seq + i, submitted_at=now) for i, p in enumerate(priorities)]
        seq += len(fresh)
        backlog += fresh
        order = sorted(backlog, key=lambda t: (-aging.effective_priority(t.priority, now - t.submitted_at), t.seq))
        result = plan(order, [WorkerView("w", WorkerType.CPU, slots, 0)], ctx=PlacementContext(now=now))
        placed = {a.task_id for a in result.assignments}
        if "victim" in placed:
            # 9 levels of 10 s each, then FIFO at level 10 against tasks that are all younger.
            assert now <= 9 * 10 + 10
            return
        backlog = [t for t in backlog if t.task_id not in placed]
        now += 1.0
    raise AssertionError("the low-priority task starved")
