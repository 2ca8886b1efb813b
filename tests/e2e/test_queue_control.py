"""Acceptance item 3: pausing queues and draining workers.

A paused queue's tasks wait (and say why) while other queues flow; resumed, they run. A drained
worker finishes what it has and gets nothing new.
"""

from __future__ import annotations

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_paused_queue_waits_while_others_flow_and_runs_after_resume(stack: Stack) -> None:
    stack.add_worker("gpu1", "gpu", concurrency=1)
    stack.add_worker("cpu1", "cpu", concurrency=1)
    stack.wait_workers_connected(["gpu1", "cpu1"])

    paused = stack.pause("gpu_priority").queue
    assert paused.name == "gpu_priority" and paused.paused
    assert stack.queues()["gpu_priority"].paused

    gpu_ids = [
        stack.submit("e2e.sleep", [0.1, f"gpu-{i}"], content_type="audio").task_id for i in range(3)
    ]
    rounds = stack.placement_rounds()
    cpu_ids = [
        stack.submit("e2e.sleep", [0.1, f"cpu-{i}"], content_type="document").task_id
        for i in range(3)
    ]

    stack.wait_all(cpu_ids, timeout=30)
    # Every CPU submission and completion woke placement with the GPU tasks pending and gpu1
    # idle: whole rounds have passed them over.
    stack.wait_placement_rounds(since=rounds, rounds=2)
    for task_id in gpu_ids:
        task = stack.get(task_id)
        assert task.state == S.TASK_STATE_PENDING, task
        assert "paus" in task.reason.lower(), (
            f"pending reason does not mention the pause: {task.reason!r}"
        )
    assert not any(r["tag"].startswith("gpu-") for r in stack.runs()), (
        "a task of a paused queue ran"
    )
    stats = stack.queues()["gpu_priority"]
    assert stats.pending == 3 and stats.paused, stats

    resumed = stack.resume("gpu_priority").queue
    assert not resumed.paused
    done = stack.wait_all(gpu_ids, timeout=30)
    assert {t.worker_id for t in done.values()} == {"gpu1"}
    assert not stack.queues()["gpu_priority"].paused


def test_drained_worker_finishes_its_task_and_gets_nothing_new(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=2)
    # gpu1 runs GPU probes only (a GPU worker takes no CPU work): each one's hand-out proves a
    # placement round passed over the waiting CPU work while w1 had a free slot.
    stack.add_worker("gpu1", "gpu", concurrency=1)
    stack.wait_workers_connected(["w1", "gpu1"])
    running = stack.submit(
        "e2e.gate", ["drain"], {"tag": "running-on-w1"}, content_type="text"
    ).task_id
    assert stack.wait_state(running, S.TASK_STATE_RUNNING, timeout=30).worker_id == "w1"

    reply = stack.drain("w1")
    assert reply.worker.worker_id == "w1"
    assert stack.list_workers()["w1"].status == pb.WORKER_STATUS_DRAINING

    # w1 still has a free slot, but is draining: new work waits.
    waiting = [
        stack.submit("e2e.sleep", [0.1, f"after-drain-{i}"], content_type="text").task_id
        for i in range(2)
    ]
    assert stack.run_probe(content_type="audio", tag="probe-1").worker_id == "gpu1"
    for task_id in waiting:
        assert stack.get(task_id).state == S.TASK_STATE_PENDING, stack.get(task_id)

    # The running task still finishes on the drained worker.
    stack.open_gate("drain")
    assert stack.wait_state(running, S.TASK_STATE_SUCCEEDED, timeout=30).worker_id == "w1"
    assert stack.run_probe(content_type="audio", tag="probe-2").worker_id == "gpu1"
    for task_id in waiting:
        assert stack.get(task_id).state == S.TASK_STATE_PENDING, (
            "a drained worker was given new work"
        )

    # New capacity arrives: the waiting work goes there, never to w1.
    stack.add_worker("w2", "cpu", concurrency=2)
    done = stack.wait_all(waiting, timeout=45)
    assert {t.worker_id for t in done.values()} == {"w2"}
    ran_on = {r["tag"]: r["worker"] for r in stack.runs()}
    assert ran_on["running-on-w1"] == "w1"
    assert ran_on["after-drain-0"] == ran_on["after-drain-1"] == "w2"
    w1 = stack.list_workers().get("w1")
    assert w1 is None or w1.status != pb.WORKER_STATUS_CONNECTED, (
        "drained worker went back to taking work"
    )
