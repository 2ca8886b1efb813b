"""Policies of the pure core: retries and dead letters, aging, rate limits, fallback, scoring setup.

Each is a frozen dataclass built once from configuration, with plain functions over it; none
reads the clock (now is passed in) or draws randomness (a number in [0, 1) is passed in).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from scheduler.core.model import MAX_PRIORITY, GpuNeed, TaskClass

# --- retries and dead letters -----------------------------------------------------------


class Backoff(StrEnum):
    EXPONENTIAL = "exponential"
    LINEAR = "linear"


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed task is retried, and whether it is dead-lettered at the end."""

    name: str
    """Name tasks and queues refer to."""
    max_retries: int = 0
    """Retries after the first failure (0 = never retried)."""
    backoff: Backoff = Backoff.EXPONENTIAL
    """exponential: base * multiplier**(n-1); linear: base * n ... both capped at max_delay."""
    base_delay_seconds: float = 60.0
    """Delay before the first retry."""
    multiplier: float = 2.0
    """Growth factor per retry (exponential only)."""
    max_delay_seconds: float = 3600.0
    """Cap on any single delay."""
    jitter: float = 0.1
    """Random spread of each delay, as a fraction (0.1 = +-10%); avoids retry stampedes."""
    non_retryable: frozenset[str] = frozenset()
    """Exception types that skip retries and go straight to the end state: the bare class name
    ("ValueError", "BadInput") or the qualified one ("app.errors.BadInput")."""
    dead_letter: bool = True
    """At the end: dead-letter (kept for inspection and replay) rather than plain failed."""

    def nominal_delay(self, retry_number: int) -> float:
        """Delay before retry number `retry_number` (1-based), without jitter."""
        n = max(1, retry_number)
        if self.backoff is Backoff.LINEAR:
            raw = self.base_delay_seconds * n
        else:
            raw = self.base_delay_seconds * self.multiplier ** (n - 1)
        return min(raw, self.max_delay_seconds)

    def delay_bounds(self, retry_number: int) -> tuple[float, float]:
        """Smallest and largest delay jitter can produce for that retry."""
        nominal = self.nominal_delay(retry_number)
        return nominal * (1 - self.jitter), nominal * (1 + self.jitter)

    def delay(self, retry_number: int, unit_random: float) -> float:
        """Delay with jitter; `unit_random` is a number in [0, 1)."""
        low, high = self.delay_bounds(retry_number)
        return low + (high - low) * unit_random


NO_RETRY = RetryPolicy("none", max_retries=0, dead_letter=False)
"""The built-in default: a failure is final and the task ends `failed`."""


class RetryAction(StrEnum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    FAIL = "fail"


@dataclass(frozen=True)
class RetryDecision:
    action: RetryAction
    delay_seconds: float
    reason: str


def decide_retry(policy: RetryPolicy, failures: int, error_type: str, unit_random: float,
                 qualified_type: str = "") -> RetryDecision:
    """What happens after a task's `failures`-th failure (1-based).

    `error_type` is the exception's class name, `qualified_type` its `module.QualName`.
    """
    end = RetryAction.DEAD_LETTER if policy.dead_letter else RetryAction.FAIL
    names = {error_type, qualified_type, error_type.rsplit(".", 1)[-1]} - {""}
    if names & policy.non_retryable:
        return RetryDecision(end, 0.0, f"{error_type} is not retryable under policy {policy.name}")
    if failures > policy.max_retries:
        return RetryDecision(
            end, 0.0, f"failed {failures} time(s); policy {policy.name} allows {policy.max_retries} retr(ies)"
        )
    delay = policy.delay(failures, unit_random)
    return RetryDecision(
        RetryAction.RETRY, delay,
        f"retry {failures} of {policy.max_retries} under policy {policy.name} in {delay:.1f}s",
    )


# --- aging ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgingPolicy:
    """Waiting raises a task's effective priority one level at a time, so nothing starves."""

    enabled: bool = True
    default_max_wait_seconds: float = 300.0
    """Wait at a level before moving up one, unless the level has its own."""
    max_wait_seconds: Mapping[int, float] = field(default_factory=dict)
    """Per base level (1-9): wait before moving up one level."""

    def wait_at(self, level: int) -> float:
        return max(0.001, self.max_wait_seconds.get(level, self.default_max_wait_seconds))

    def effective_priority(self, base: int, waited_seconds: float) -> int:
        """Base priority raised by one level for each level's maximum wait spent (at most 10)."""
        if not self.enabled or waited_seconds <= 0:
            return base
        level, remaining = base, waited_seconds
        while level < MAX_PRIORITY:
            step = self.wait_at(level)
            if remaining < step:
                break
            remaining -= step
            level += 1
        return level


NO_AGING = AgingPolicy(enabled=False)


# --- rate limits ------------------------------------------------------------------------

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """At most `per_second` hand-outs per second (with `burst`) for task names matching `pattern`."""

    pattern: str
    """Glob on the Celery task name, e.g. "auteur.tasks.generate.*"."""
    per_second: float
    burst: int = 1

    @staticmethod
    def parse(pattern: str, text: str) -> RateLimit:
        """From Celery-style text: "10/m", "100/s", "5/h"."""
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"rate {text!r} must look like 10/s, 10/m or 10/h")
        count, unit = float(match.group(1)), match.group(2)
        if count <= 0:
            raise ValueError(f"rate {text!r} must be positive")
        return RateLimit(pattern, count / _PER[unit], burst=max(1, math.ceil(count / 60)) if unit != "s" else max(1, int(count)))

    def matches(self, task_name: str) -> bool:
        return fnmatch.fnmatchcase(task_name, self.pattern)


@dataclass(frozen=True)
class Bucket:
    """Token bucket state of one rate limit."""

    tokens: float
    updated_at: float


def refill(limit: RateLimit, bucket: Bucket | None, now: float) -> Bucket:
    if bucket is None:
        return Bucket(float(limit.burst), now)
    tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated_at) * limit.per_second)
    return Bucket(tokens, now)


# --- classification rules and fallback --------------------------------------------------


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
    for chain in chains:
        if queue in chain.queues:
            return chain.reachable(queue, waited_seconds)
    return (queue,)


# --- placement --------------------------------------------------------------------------


class Strategy(StrEnum):
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
    """Per task, stop looking once this many eligible workers were scored and take the best of
    them (0 = score every worker). Bounds a placement round on large fleets, like the Kubernetes
    scheduler's percentageOfNodesToScore; filters still run until enough eligible ones are found,
    so a task that fits only one worker still finds it."""
