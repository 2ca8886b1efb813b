"""Classification: which class, GPU need, queue, priority and retry policy a submission gets, and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.core.model import Classification, GpuNeed, QueueSpec, Submission, TaskClass
from scheduler.core.ordering import clamp_priority
from scheduler.core.routing import ClassificationRule

USER_INITIATED_BOOST = 2
LARGE_BATCH_SIZE = 10
LARGE_BATCH_PENALTY = 1

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
    rules: Sequence[ClassificationRule] = ()
    """Configured rules, first match wins."""
    default_retry_policy: str = "none"
    """Retry policy when neither submission, rule nor queue names one."""

    def queue(self, name: str) -> QueueSpec | None:
        """The queue called `name`, or None when no such queue is configured."""
        for spec in self.queues:
            if spec.name == name:
                return spec
        return None


def classify(submission: Submission, rules: ClassificationRules, batch_size: int = 0) -> Classification:
    """Decide class, GPU need, queue, priority and retry policy; an explicit request always wins.

    `batch_size` is the size of the batch the submission arrived in, when larger than the one it
    declares (a SubmitBatch call counts as a batch).

    Order of authority: explicit submission fields, then the first matching rule, then content
    type, then defaults. The caller has validated the submission; this never raises.
    """
    reasons: list[str] = []
    gpu: GpuNeed
    task_class: TaskClass
    content = submission.content_type.strip().lower()
    rule = next(
        (r for r in rules.rules if r.matches(submission.task_name, content, submission.gpu_memory_mb)), None
    )
    if submission.gpu is not GpuNeed.UNSPECIFIED:
        gpu = submission.gpu
        task_class = _NEED_CLASS[gpu]
        if content and rules.content_classes.get(content) is TaskClass.IO and gpu is GpuNeed.NONE:
            task_class = TaskClass.IO
        reasons.append(f"gpu={gpu.value} requested -> {task_class.value}")
    elif rule is not None and (rule.task_class is not None or rule.gpu is not None):
        task_class = rule.task_class or _NEED_CLASS[rule.gpu or GpuNeed.NONE]
        gpu = rule.gpu or _CLASS_GPU_NEED[task_class]
        reasons.append(f"rule {rule.name!r} -> {task_class.value}")
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
    elif rule is not None and rule.queue:
        queue_name = rule.queue
        reasons.append(f"queue {queue_name} (rule {rule.name!r})")
    else:
        queue_name = rules.class_queues[task_class]
        reasons.append(f"queue {queue_name}")
    spec = rules.queue(queue_name)
    default_priority = spec.default_priority if spec else 5

    if submission.priority:
        priority = submission.priority
        reasons.append(f"priority {priority} (requested)")
    else:
        if rule is not None and rule.priority:
            priority = rule.priority
            detail = f"priority {priority} (rule {rule.name!r})"
        else:
            priority = default_priority
            detail = f"priority {default_priority} (queue default)"
        adjusted = False
        if submission.user_initiated:
            priority = clamp_priority(priority + USER_INITIATED_BOOST)
            detail += f" +{USER_INITIATED_BOOST} user-initiated"
            adjusted = True
        batch = max(submission.batch_size, batch_size)
        if batch > LARGE_BATCH_SIZE:
            priority = clamp_priority(priority - LARGE_BATCH_PENALTY)
            detail += f" -{LARGE_BATCH_PENALTY} batch of {batch}"
            adjusted = True
        if adjusted:
            detail += f" -> {priority}"
        reasons.append(detail)

    retry_policy = (
        submission.retry_policy
        or (rule.retry_policy if rule is not None else "")
        or (spec.retry_policy if spec else "")
        or rules.default_retry_policy
    )
    preferred = dict(rule.preferred_labels) if rule is not None else {}
    preferred.update(submission.preferred_labels)
    return Classification(
        task_class=task_class,
        gpu=gpu,
        queue=queue_name,
        priority=priority,
        reason="; ".join(reasons),
        retry_policy=retry_policy,
        preferred_labels=preferred,
    )
