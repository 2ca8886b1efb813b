"""Acceptance item 1: work goes to the kind of worker it needs.

GPU-intensive work (audio/video/image, gpu=required) runs only on GPU/hybrid workers; CPU work
(document/web/text) on CPU/hybrid workers; mixed work (youtube, gpu=preferred) on a free GPU
worker when there is one, else on a CPU worker. GPU work outranks CPU work.
"""

from __future__ import annotations

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GPU_CASES = [
    ("audio", pb.GPU_REQUIREMENT_UNSPECIFIED),
    ("video", pb.GPU_REQUIREMENT_UNSPECIFIED),
    ("image", pb.GPU_REQUIREMENT_UNSPECIFIED),
    ("", pb.GPU_REQUIREMENT_REQUIRED),
]
CPU_CASES = ["document", "web", "text"]
MIXED_CASES = [
    ("youtube", pb.GPU_REQUIREMENT_UNSPECIFIED),
    ("", pb.GPU_REQUIREMENT_PREFERRED),
]


def test_each_class_runs_on_a_capable_worker_and_mixed_work_falls_back_to_cpu(stack: Stack) -> None:
    stack.add_worker("gpu1", "gpu", concurrency=2, simulate_gpu="1xA100:40960")
    stack.add_worker("cpu1", "cpu", concurrency=2)
    stack.wait_workers_connected(["gpu1", "cpu1"])

    submitted: dict[str, tuple[str, str]] = {}  # task_id -> (tag, expected worker)
    for content_type, gpu in GPU_CASES:
        tag = f"gpu-{content_type or 'required'}"
        reply = stack.submit("e2e.sleep", [0.2, tag], content_type=content_type, gpu=gpu)
        assert reply.queue == "gpu_priority", (tag, reply)
        assert reply.task_class == pb.TASK_CLASS_GPU_INTENSIVE, (tag, reply)
        submitted[reply.task_id] = (tag, "gpu1")
    for content_type in CPU_CASES:
        tag = f"cpu-{content_type}"
        reply = stack.submit("e2e.sleep", [0.2, tag], content_type=content_type)
        assert reply.queue == "cpu_standard", (tag, reply)
        assert reply.task_class == pb.TASK_CLASS_CPU, (tag, reply)
        submitted[reply.task_id] = (tag, "cpu1")

    finished = stack.wait_all(submitted, timeout=60)
    for task_id, (tag, expected_worker) in submitted.items():
        assert finished[task_id].worker_id == expected_worker, (tag, finished[task_id])
    ran_on = {r["tag"]: r["worker"] for r in stack.runs()}
    for tag, expected_worker in submitted.values():
        assert ran_on.get(tag) == expected_worker, (
            f"{tag} ran on {ran_on.get(tag)!r}, expected {expected_worker}"
        )

    # Mixed work, GPU worker idle: it gets the GPU worker. One at a time so the GPU stays free.
    for content_type, gpu in MIXED_CASES:
        tag = f"mixed-idle-{content_type or 'preferred'}"
        reply = stack.submit("e2e.sleep", [0.1, tag], content_type=content_type, gpu=gpu)
        assert reply.queue == "gpu_fallback", (tag, reply)
        assert reply.task_class == pb.TASK_CLASS_MIXED, (tag, reply)
        task = stack.wait_state(reply.task_id, S.TASK_STATE_SUCCEEDED, timeout=30)
        assert task.worker_id == "gpu1", (
            f"{tag} went to {task.worker_id} while the GPU worker was idle"
        )

    # Fill both GPU slots, then mixed work falls back to the CPU worker.
    blockers = [
        stack.submit(
            "e2e.gate", ["gpu-busy"], {"tag": f"gpu-blocker-{i}"}, content_type="video"
        ).task_id
        for i in range(2)
    ]
    for task_id in blockers:
        task = stack.wait_state(task_id, S.TASK_STATE_RUNNING, timeout=30)
        assert task.worker_id == "gpu1"
    fallback_ids = []
    for content_type, gpu in MIXED_CASES:
        tag = f"mixed-busy-{content_type or 'preferred'}"
        fallback_ids.append(
            stack.submit("e2e.sleep", [0.1, tag], content_type=content_type, gpu=gpu).task_id
        )
    for task_id in fallback_ids:
        task = stack.wait_state(task_id, S.TASK_STATE_SUCCEEDED, timeout=30)
        assert task.worker_id == "cpu1", (
            f"mixed task went to {task.worker_id} while the GPU worker was full"
        )

    # GPU-intensive work never falls back, even with the GPU worker full and the CPU worker idle.
    waiting_gpu = stack.submit("e2e.sleep", [0.1, "gpu-waits"], content_type="audio").task_id
    cpu_probe = stack.submit("e2e.sleep", [0.1, "cpu-probe"], content_type="text").task_id
    stack.wait_state(cpu_probe, S.TASK_STATE_SUCCEEDED, timeout=30)
    assert stack.get(waiting_gpu).state == S.TASK_STATE_PENDING
    stack.open_gate("gpu-busy")
    task = stack.wait_state(waiting_gpu, S.TASK_STATE_SUCCEEDED, timeout=30)
    assert task.worker_id == "gpu1"
    stack.wait_all(blockers, timeout=30)


def test_gpu_work_outranks_cpu_work_on_a_hybrid_worker(stack: Stack) -> None:
    stack.add_worker("hyb1", "hybrid", concurrency=1, simulate_gpu="1xA100:40960")
    stack.wait_workers_connected(["hyb1"])

    blocker = stack.submit(
        "e2e.gate", ["hybrid-busy"], {"tag": "blocker"}, content_type="text"
    ).task_id
    assert stack.wait_state(blocker, S.TASK_STATE_RUNNING, timeout=30).worker_id == "hyb1"

    # CPU work is submitted first; GPU work second. Both pending on the one busy slot.
    cpu_task = stack.submit("e2e.sleep", [0.1, "cpu-first-submitted"], content_type="document")
    gpu_task = stack.submit("e2e.sleep", [0.1, "gpu-second-submitted"], content_type="audio")
    assert gpu_task.priority > cpu_task.priority, (gpu_task, cpu_task)
    assert stack.get(cpu_task.task_id).state == S.TASK_STATE_PENDING
    assert stack.get(gpu_task.task_id).state == S.TASK_STATE_PENDING

    stack.open_gate("hybrid-busy")
    done = stack.wait_all([cpu_task.task_id, gpu_task.task_id], timeout=30)
    assert {t.worker_id for t in done.values()} == {"hyb1"}
    order = [r["tag"] for r in stack.runs() if r["tag"] != "blocker"]
    assert order == ["gpu-second-submitted", "cpu-first-submitted"], order
