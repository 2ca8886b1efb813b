"""What placement is given: the configured policy, and the context of one round.

`PlacementPolicy` (strategy, score weights, waits, quarantine, scan bound) is built once from
configuration; `PlacementContext` adds what changes per round (the time, the queues, fallback
chains and rate limits) and answers the two queue questions every filter and score asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from scheduler.core.model import PendingTask, QueueSpec, TaskClass
from scheduler.core.ratelimit import RateLimit
from scheduler.core.routing import FallbackChain, fallback_queues


class Strategy(StrEnum):
    """Which of the eligible workers placement prefers."""

    SPREAD = "spread"
    """Prefer the emptiest worker (even load, fast starts)."""
    BINPACK = "binpack"
    """Prefer the fullest worker that fits (keeps whole workers free, e.g. for big GPU jobs)."""


@dataclass(frozen=True)
class ScoringWeights:
    """Weights of the score terms; each term is in 0-1 and higher total wins."""

    load: float = 1.0
    """Free-slot share (spread) or used-slot share (binpack)."""
    gpu_utilization: float = 0.5
    """Idle GPU share, for GPU work."""
    memory_headroom: float = 0.5
    """GPU memory left on the chosen device after the task (spread) or used (binpack)."""
    capability: float = 2.0
    """GPU work on GPU workers, CPU work on CPU workers, hybrids second."""
    affinity: float = 1.0
    """Share of the task's preferred labels the worker has."""
    failures: float = 1.0
    """Penalty for recent failures on the worker (subtracted)."""


@dataclass(frozen=True)
class PlacementPolicy:
    """How workers are filtered and scored."""

    strategy: Strategy = Strategy.SPREAD
    weights: ScoringWeights = field(default_factory=ScoringWeights)
    preferred_gpu_wait_seconds: float = 0.0
    """gpu=preferred work may go to CPU workers only after waiting this long (0 = at once when no GPU slot is free)."""
    quarantine_failures: int = 5
    """Failures within `failure_window_seconds` that quarantine a worker (0 = never)."""
    failure_window_seconds: float = 300.0
    quarantine_seconds: float = 300.0
    """How long a quarantined worker gets no new work."""
    max_scored_workers: int = 64
    """Honoured only by the worker-by-worker scan (reference.py): per task, stop looking once this
    many eligible workers were scored and take the best of them (0 = score every worker), like
    the Kubernetes scheduler's percentageOfNodesToScore. `plan` no longer needs such a bound: its
    shape index finds the best worker of the whole fleet at a cost that does not grow with the
    fleet the way scoring worker by worker did. Kept so existing configuration stays valid."""


@dataclass(frozen=True)
class PlacementContext:
    """Everything placement needs besides the task and the workers."""

    policy: PlacementPolicy = field(default_factory=PlacementPolicy)
    prefetch: int = 0
    """Hand-outs allowed beyond free slots."""
    now: float = 0.0
    """Current time (seconds), for waits: fallback and preferred-GPU waits."""
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)
    """Queue specs by name (classes for fallback, per-worker limits)."""
    chains: tuple[FallbackChain, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()

    def candidate_queues(self, task: PendingTask) -> tuple[str, ...]:
        """Queues the task may be served under now: its own first, then those its chain reached."""
        if not self.chains:
            return (task.queue,)
        return fallback_queues(self.chains, task.queue, self.now - task.submitted_at)

    def class_in(self, queue: str, task: PendingTask) -> TaskClass:
        """Class of work the task counts as when served under `queue`: its own in its own queue,
        else the class that queue holds (a spilled task runs as that queue's work)."""
        spec = self.queues.get(queue)
        return task.task_class if queue == task.queue or spec is None else spec.task_class
