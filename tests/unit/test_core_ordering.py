"""Priority aging of the pure core: one level per level's wait, monotone, and no starvation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.model import GpuNeed, PendingTask, TaskClass, WorkerType, WorkerView
from scheduler.core.ordering import AgingPolicy, clamp_priority
from scheduler.core.placement import PlacementContext, plan


def task(tid, priority, seq, submitted_at):
    return PendingTask(tid, "q", priority, seq, TaskClass.CPU, GpuNeed.NONE, submitted_at=submitted_at)


def test_aging_moves_one_level_per_level_wait_and_caps_at_ten():
    aging = AgingPolicy(default_max_wait_seconds=60, max_wait_seconds={1: 600})
    assert aging.effective_priority(5, 59) == 5
    assert aging.effective_priority(5, 60) == 6
    assert aging.effective_priority(5, 185) == 8
    assert aging.effective_priority(1, 599) == 1
    assert aging.effective_priority(1, 600) == 2
    assert aging.effective_priority(3, 10**9) == 10
    assert AgingPolicy(enabled=False).effective_priority(3, 10**9) == 3


def test_priorities_are_clamped_to_one_through_ten():
    assert [clamp_priority(p) for p in (-3, 0, 1, 5, 10, 12)] == [1, 1, 1, 5, 10, 10]


@given(st.integers(1, 10), st.floats(0, 10_000), st.floats(0, 10_000))
def test_aging_is_monotone_in_waiting_time(base, a, b):
    aging = AgingPolicy(default_max_wait_seconds=30)
    low, high = sorted((a, b))
    assert aging.effective_priority(base, low) <= aging.effective_priority(base, high)


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
