"""Classification and priority decisions of the pure core."""

from __future__ import annotations

import pytest

from scheduler.core.classify import classify
from scheduler.core.model import GpuNeed, Submission, TaskClass
from scheduler.settings import Settings

RULES = Settings().classification_rules()


@pytest.mark.parametrize(
    ("content_type", "task_class", "queue", "gpu"),
    [
        ("audio", TaskClass.GPU_INTENSIVE, "gpu_priority", GpuNeed.REQUIRED),
        ("video", TaskClass.GPU_INTENSIVE, "gpu_priority", GpuNeed.REQUIRED),
        ("image", TaskClass.GPU_INTENSIVE, "gpu_priority", GpuNeed.REQUIRED),
        ("document", TaskClass.CPU, "cpu_standard", GpuNeed.NONE),
        ("web", TaskClass.CPU, "cpu_standard", GpuNeed.NONE),
        ("text", TaskClass.CPU, "cpu_standard", GpuNeed.NONE),
        ("youtube", TaskClass.MIXED, "gpu_fallback", GpuNeed.PREFERRED),
        ("", TaskClass.CPU, "cpu_standard", GpuNeed.NONE),
        ("spreadsheet", TaskClass.CPU, "cpu_standard", GpuNeed.NONE),
    ],
)
def test_content_type_decides_class_and_queue(content_type, task_class, queue, gpu):
    decision = classify(Submission("t", content_type=content_type), RULES)
    assert (decision.task_class, decision.queue, decision.gpu) == (task_class, queue, gpu)
    assert decision.reason


def test_explicit_gpu_request_wins_over_content_type():
    assert classify(Submission("t", content_type="document", gpu=GpuNeed.REQUIRED), RULES).queue == "gpu_priority"
    assert classify(Submission("t", content_type="audio", gpu=GpuNeed.NONE), RULES).task_class is TaskClass.CPU
    assert classify(Submission("t", content_type="text", gpu=GpuNeed.PREFERRED), RULES).queue == "gpu_fallback"


def test_gpu_memory_request_makes_gpu_work():
    decision = classify(Submission("t", content_type="text", gpu_memory_mb=4096), RULES)
    assert decision.task_class is TaskClass.GPU_INTENSIVE and decision.gpu is GpuNeed.REQUIRED


def test_gpu_work_outranks_cpu_work_by_default():
    gpu = classify(Submission("t", content_type="audio"), RULES)
    mixed = classify(Submission("t", content_type="youtube"), RULES)
    cpu = classify(Submission("t", content_type="document"), RULES)
    assert gpu.priority > mixed.priority > cpu.priority


def test_user_initiated_boost_and_clamp():
    assert classify(Submission("t", content_type="document", user_initiated=True), RULES).priority == 7
    assert classify(Submission("t", content_type="audio", user_initiated=True), RULES).priority == 10
    # explicit priority wins over the boost
    assert classify(Submission("t", priority=3, user_initiated=True), RULES).priority == 3


def test_explicit_queue_wins():
    decision = classify(Submission("t", content_type="audio", queue="cpu_standard"), RULES)
    assert decision.queue == "cpu_standard"
    assert "requested" in decision.reason
