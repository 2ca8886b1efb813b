"""The placement filter registry: the contract names it, and the memo key derived from it is sound."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

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
    FILTER_NAMES,
    PlacementContext,
    PlacementPolicy,
    evaluate,
    wait_reason,
)
from scheduler.core.placement.filters import memo_key
from scheduler.core.routing import FallbackChain

PROTO = Path(__file__).resolve().parents[2] / "protos" / "switchyard" / "v1" / "scheduler.proto"


def rejected_by_comment() -> str:
    """The comment block right above `WorkerVerdict.rejected_by` in the contract, as one line."""
    message = re.search(r"message WorkerVerdict \{(.*?)\n\}", PROTO.read_text(encoding="utf-8"), re.S)
    assert message, "WorkerVerdict not found in scheduler.proto"
    lines = message.group(1).splitlines()
    field = next(i for i, line in enumerate(lines) if re.match(r"\s*string rejected_by = \d+;", line))
    comment: list[str] = []
    for line in reversed(lines[:field]):
        if not line.strip().startswith("//"):
            break
        comment.insert(0, line.strip().removeprefix("//").strip())
    return " ".join(comment)


def test_the_contract_lists_exactly_the_registered_filters_in_order():
    listed = re.search(r"in the order they run: ([a-z_, ]+)\.", rejected_by_comment())
    assert listed, "the rejected_by comment must list the filters: 'in the order they run: a, b, ...'"
    assert tuple(name.strip() for name in listed.group(1).split(",")) == FILTER_NAMES


def test_filter_names_are_unique():
    assert len(set(FILTER_NAMES)) == len(FILTER_NAMES)


def test_the_memo_key_ignores_what_no_filter_reads():
    base = PendingTask("a", "q", 5, 1, TaskClass.CPU, GpuNeed.NONE, labels=(("zone", "eu"),), task_name="t.x")
    same = PendingTask("b", "q", 9, 2, TaskClass.CPU, GpuNeed.NONE, labels=(("zone", "eu"),),
                       task_name="t.x", preferred_labels=(("model", "x"),), class_reason="why", attempt=3)
    other_labels = replace(base, labels=(("zone", "us"),))
    other_name = replace(base, task_name="t.y")  # the registered filter reads it
    ctx = PlacementContext()
    assert memo_key(base, ctx) == memo_key(same, ctx)
    assert memo_key(base, ctx) != memo_key(other_labels, ctx)
    assert memo_key(base, ctx) != memo_key(other_name, ctx)


def test_a_worker_that_does_not_register_the_task_s_name_is_rejected_with_the_name():
    task = PendingTask("a", "q", 5, 1, TaskClass.CPU, GpuNeed.NONE, task_name="media.transcode")
    lacking = WorkerView("w1", WorkerType.CPU, 2, 0, registered_tasks=frozenset({"docs.parse", "docs.index"}))
    verdict = evaluate(task, lacking, PlacementContext())
    assert (verdict.rejected_by, verdict.reason) == (
        "registered", "task 'media.transcode' is not registered on this worker")
    # A worker that is also full says so by its registry first: no slot would ever help.
    full = replace(lacking, in_flight=2)
    assert evaluate(task, full, PlacementContext()).rejected_by == "registered"


def test_a_worker_that_registers_the_name_or_did_not_say_is_judged_on():
    task = PendingTask("a", "q", 5, 1, TaskClass.CPU, GpuNeed.NONE, task_name="media.transcode")
    registers = WorkerView("w1", WorkerType.CPU, 2, 0, registered_tasks=frozenset({"media.transcode"}))
    unknown = WorkerView("w2", WorkerType.CPU, 2, 0)  # the agent reported no list
    for worker in (registers, unknown):
        assert evaluate(task, worker, PlacementContext()).eligible
    assert evaluate(task, replace(unknown, in_flight=2), PlacementContext()).rejected_by == "slots"


def test_a_task_no_worker_registers_waits_for_one_that_does():
    task = PendingTask("a", "q", 5, 1, TaskClass.CPU, GpuNeed.NONE, task_name="media.transcode")
    fleet = [WorkerView(f"w{i}", WorkerType.CPU, 2, 0, registered_tasks=frozenset({"docs.parse"})) for i in range(3)]
    assert wait_reason(task, fleet) == (
        "waiting for a worker whose Celery app registers task 'media.transcode': 3 worker(s) do not")
    # A draining worker that does register it is nearer: it may come back.
    draining = WorkerView("w9", WorkerType.CPU, 2, 0, accepting=False, registered_tasks=frozenset({"media.transcode"}))
    assert wait_reason(task, [*fleet, draining]) == "waiting: not accepting work (draining, unreachable or lost)"


QUEUES = {
    "gpu": QueueSpec("gpu", TaskClass.GPU_INTENSIVE, 8, max_tasks_per_worker=1),
    "mixed": QueueSpec("mixed", TaskClass.MIXED, 6),
    "cpu": QueueSpec("cpu", TaskClass.CPU, 5, max_tasks_per_worker=2),
}
# Every combination of what the filters look at, so a fact missing from the memo key shows.
FLEET = [
    WorkerView(f"w{i}", kind, slots=2, in_flight=busy, gpus=gpus, labels=labels, in_flight_by_queue=by_queue)
    for i, (kind, busy, gpus, labels, by_queue) in enumerate(
        (kind, busy, gpus, labels, by_queue)
        for kind in WorkerType
        for busy in (0, 2)
        for gpus in ((), (GpuView(0, 24000, 8000),), (GpuView(0, 24000, 24000), GpuView(1, 24000, 0)))
        for labels in ({}, {"zone": "eu"})
        for by_queue in ({}, {"gpu": 1, "cpu": 2})
    )
] + [WorkerView("draining", WorkerType.HYBRID, 2, 0, accepting=False),
     WorkerView("quarantined", WorkerType.HYBRID, 2, 0, quarantined=True),
     WorkerView("registers-a", WorkerType.HYBRID, 2, 0, registered_tasks=frozenset({"t.a"})),
     WorkerView("registers-ab", WorkerType.CPU, 2, 0, registered_tasks=frozenset({"t.a", "t.b"}))]
tasks_st = st.builds(
    PendingTask,
    task_id=st.just("t1"),
    queue=st.sampled_from(list(QUEUES)),
    priority=st.integers(1, 10),
    seq=st.integers(0, 5),
    task_class=st.sampled_from(list(TaskClass)),
    gpu=st.sampled_from([GpuNeed.NONE, GpuNeed.PREFERRED, GpuNeed.REQUIRED]),
    gpu_memory_mb=st.sampled_from([0, 4000, 16000]),
    labels=st.sampled_from([(), (("zone", "eu"),)]),
    submitted_at=st.sampled_from([0.0, 50.0, 75.0, 90.0, 100.0]),
    task_name=st.sampled_from(["t.a", "t.b", "t.c"]),
)
# A twin differs from its task in one field: equal memo keys must then mean equal verdicts.
CHANGES = {
    "queue": st.sampled_from(list(QUEUES)),
    "priority": st.integers(1, 10),
    "task_class": st.sampled_from(list(TaskClass)),
    "gpu": st.sampled_from([GpuNeed.NONE, GpuNeed.PREFERRED, GpuNeed.REQUIRED]),
    "gpu_memory_mb": st.sampled_from([0, 4000, 16000]),
    "labels": st.sampled_from([(), (("zone", "eu"),), (("zone", "us"),)]),
    "submitted_at": st.sampled_from([0.0, 50.0, 75.0, 90.0, 100.0]),
    "preferred_labels": st.sampled_from([(), (("zone", "us"),)]),
    "task_name": st.sampled_from(["t.a", "t.b", "t.c"]),
}
CHANGED_FIELD = st.sampled_from(sorted(CHANGES))


@settings(max_examples=1000, deadline=None)
@given(tasks_st, st.data(), st.sampled_from([0.0, 20.0]), st.booleans())
def test_tasks_with_equal_memo_keys_get_equal_verdicts(task, data, preferred_wait, chained):
    """What lets a round skip a task identical to one no worker took: every filter agrees on both."""
    field = data.draw(CHANGED_FIELD)
    twin = replace(task, task_id="t2", **{field: data.draw(CHANGES[field])})
    ctx = PlacementContext(
        policy=PlacementPolicy(preferred_gpu_wait_seconds=preferred_wait), now=100.0, queues=QUEUES,
        chains=(FallbackChain(("gpu", "mixed", "cpu"), after_seconds=30),) if chained else (),
    )
    if memo_key(task, ctx) != memo_key(twin, ctx):
        return
    for worker in FLEET:
        one, two = evaluate(task, worker, ctx), evaluate(twin, worker, ctx)
        assert (one.rejected_by, one.served_queue) == (two.rejected_by, two.served_queue)
