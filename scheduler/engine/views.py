"""Plain results the engine hands to the API layer (and registrations it receives from it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.core.model import QueueSpec, TaskClass, WorkerType
from scheduler.core.placement import Verdict
from scheduler.fleet import Gpu
from scheduler.state.records import TaskRecord


@dataclass(frozen=True)
class Accepted:
    """The scheduler's answer to one submission."""

    task_id: str
    queue: str
    priority: int
    task_class: TaskClass
    deduplicated: bool
    reason: str


@dataclass(frozen=True)
class TaskView:
    """A task as clients see it: the stored record, with live wait reason and aged priority."""

    record: TaskRecord
    effective_priority: int


@dataclass(frozen=True)
class WorkerRegistration:
    """An agent's hello, as plain data."""

    worker_id: str
    worker_type: WorkerType | None
    slots: int
    labels: Mapping[str, str]
    gpus: Sequence[Gpu]
    gpu_simulated: bool
    capabilities: Any = None
    """The agent's WorkerCapabilities message, kept for ListWorkers."""
    registered_tasks: Sequence[str] = ()
    """Task names the worker's Celery app registers; empty when the agent did not say."""
    agent_instance: str = ""
    """The agent process's id; a new one means the worker restarted (empty: not known)."""


@dataclass(frozen=True)
class Welcome:
    """What an agent is told when it connects."""

    session: int
    heartbeat_interval_seconds: float
    state_redis_url: str
    key_prefix: str
    rejoined_after_loss: bool


@dataclass(frozen=True)
class QueueView:
    """A logical queue with its statistics and the alerts it crosses."""

    spec: QueueSpec
    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    paused: bool
    mean_wait_seconds: float
    mean_run_seconds: float
    workers: int
    retrying: int = 0
    dead_lettered: int = 0
    error_rate: float = 0.0
    warnings: tuple[str, ...] = ()
    wait_p50_seconds: float = 0.0
    """Median wait (submitted -> started) of the attempts that ended in the last 5 minutes."""
    wait_p95_seconds: float = 0.0
    """95th percentile of those waits."""
    submitted_per_second: float = 0.0
    """Submissions per second over the last minute."""
    finished_per_second: float = 0.0
    """Tasks finished (any terminal state) per second over the last minute."""


@dataclass(frozen=True)
class Explanation:
    """The answer of ExplainPlacement."""

    task_class: TaskClass
    queue: str
    priority: int
    effective_priority: int
    classification_reason: str
    verdicts: list[Verdict]
    chosen: Verdict | None
    summary: str
