"""Routing policy from configuration: classification rules, and the fallback chains a waiting
task may spill along into other queues."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.core.model import GpuNeed, TaskClass


@dataclass(frozen=True)
class ClassificationRule:
    """If a submission matches every given condition, these decisions apply (first match wins)."""

    name: str
    task_name: str = ""
    """Glob on the task name ("" = any)."""
    content_types: tuple[str, ...] = ()
    """Any of these content types (empty = any)."""
    min_gpu_memory_mb: int = 0
    """Matches only tasks asking more than this much GPU memory (0 = any)."""
    queue: str = ""
    task_class: TaskClass | None = None
    gpu: GpuNeed | None = None
    priority: int = 0
    retry_policy: str = ""
    preferred_labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, task_name: str, content_type: str, gpu_memory_mb: int) -> bool:
        """Whether a submission with these facts meets every condition of the rule."""
        if self.task_name and not fnmatch.fnmatchcase(task_name, self.task_name):
            return False
        if self.content_types and content_type not in self.content_types:
            return False
        return not (self.min_gpu_memory_mb and gpu_memory_mb <= self.min_gpu_memory_mb)


@dataclass(frozen=True)
class FallbackChain:
    """Queues a waiting task may spill into, in order, each after waiting `after_seconds` more."""

    queues: tuple[str, ...]
    after_seconds: float = 60.0

    def reachable(self, queue: str, waited_seconds: float) -> tuple[str, ...]:
        """Queues (its own first) whose workers may serve a task of `queue` that waited this long."""
        if queue not in self.queues:
            return (queue,)
        start = self.queues.index(queue)
        steps = int(waited_seconds // self.after_seconds) if self.after_seconds > 0 else len(self.queues)
        return self.queues[start : start + 1 + steps]


def fallback_queues(chains: Sequence[FallbackChain], queue: str, waited_seconds: float) -> tuple[str, ...]:
    """Queues a task of `queue` may be served under after waiting this long (the first chain holding it)."""
    for chain in chains:
        if queue in chain.queues:
            return chain.reachable(queue, waited_seconds)
    return (queue,)
