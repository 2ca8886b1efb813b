"""Classification and priority: which class, queue and priority a submission gets, and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.core.model import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    Classification,
    GpuNeed,
    QueueSpec,
    Submission,
    TaskClass,
)

USER_INITIATED_BOOST = 2

DEFAULT_CONTENT_CLASSES: Mapping[str, TaskClass] = {
    "audio": TaskClass.GPU_INTENSIVE,
    "video": TaskClass.GPU_INTENSIVE,
    "image": TaskClass.GPU_INTENSIVE,
    "document": TaskClass.CPU,
    "web": TaskClass.CPU,
    "text": TaskClass.CPU,
    "youtube": TaskClass.MIXED,
    "storage": TaskClass.IO,
    "io": TaskClass.IO,
}

_CLASS_GPU_NEED = {
    TaskClass.GPU_INTENSIVE: GpuNeed.REQUIRED,
    TaskClass.MIXED: GpuNeed.PREFERRED,
    TaskClass.CPU: GpuNeed.NONE,
    TaskClass.IO: GpuNeed.NONE,
}

_NEED_CLASS = {
    GpuNeed.REQUIRED: TaskClass.GPU_INTENSIVE,
    GpuNeed.PREFERRED: TaskClass.MIXED,
    GpuNeed.NONE: TaskClass.CPU,
}


@dataclass(frozen=True)
class ClassificationRules:
    """Everything classification needs, taken from configuration."""

    queues: Sequence[QueueSpec]
    """Logical queues in configuration order."""
    class_queues: Mapping[TaskClass, str]
    """Default queue for each task class."""
    content_classes: Mapping[str, TaskClass] = field(
        default_factory=lambda: dict(DEFAULT_CONTENT_CLASSES)
    )
    """Content type -> class; unknown content types are CPU work."""

    def queue(self, name: str) -> QueueSpec | None:
        for spec in self.queues:
            if spec.name == name:
                return spec
        return None


def clamp_priority(value: int) -> int:
    """Keep a priority inside 1-10."""
    return max(MIN_PRIORITY, min(MAX_PRIORITY, value))


def classify(submission: Submission, rules: ClassificationRules) -> Classification:
    """Decide class, GPU need, queue and priority; an explicit request always wins.

    The caller has validated the submission (priority 0-10, known queue); this never raises.
    """
    reasons: list[str] = []
    gpu: GpuNeed
    content = submission.content_type.strip().lower()
    if submission.gpu is not GpuNeed.UNSPECIFIED:
        gpu = submission.gpu
        task_class = _NEED_CLASS[gpu]
        if content and rules.content_classes.get(content) is TaskClass.IO and gpu is GpuNeed.NONE:
            task_class = TaskClass.IO
        reasons.append(f"gpu={gpu.value} requested -> {task_class.value}")
    elif submission.gpu_memory_mb > 0:
        task_class, gpu = TaskClass.GPU_INTENSIVE, GpuNeed.REQUIRED
        reasons.append(f"asks {submission.gpu_memory_mb} MiB of GPU memory -> gpu_intensive")
    elif content in rules.content_classes:
        task_class = rules.content_classes[content]
        gpu = _CLASS_GPU_NEED[task_class]
        reasons.append(f"content type '{content}' -> {task_class.value}")
    else:
        task_class, gpu = TaskClass.CPU, GpuNeed.NONE
        shown = f"content type '{content}'" if content else "no content type"
        reasons.append(f"{shown} -> cpu (default)")

    if submission.queue:
        queue_name = submission.queue
        reasons.append(f"queue {queue_name} (requested)")
    else:
        queue_name = rules.class_queues[task_class]
        reasons.append(f"queue {queue_name}")
    spec = rules.queue(queue_name)
    default_priority = spec.default_priority if spec else 5

    if submission.priority:
        priority = submission.priority
        reasons.append(f"priority {priority} (requested)")
    else:
        priority = default_priority
        detail = f"priority {default_priority} (queue default)"
        if submission.user_initiated:
            priority = clamp_priority(priority + USER_INITIATED_BOOST)
            detail += f" +{USER_INITIATED_BOOST} user-initiated -> {priority}"
        reasons.append(detail)
    return Classification(
        task_class=task_class,
        gpu=gpu,
        queue=queue_name,
        priority=priority,
        reason="; ".join(reasons),
    )
