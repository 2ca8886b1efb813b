"""Frozen views of the fleet: logical queues with their statistics, workers and their GPUs.

The original message stays reachable as ``.raw`` for anything the view leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from switchyard._convert import enum_label, timestamp
from switchyard.v1 import scheduler_pb2, worker_pb2

__all__ = ["GpuView", "QueueView", "WorkerChange", "WorkerView"]


@dataclass(frozen=True)
class QueueView:
    """Statistics of one logical queue."""

    name: str
    """Queue name."""
    paused: bool
    """True while paused."""
    pending: int
    """Tasks waiting for a worker."""
    processing: int
    """Tasks dispatched or running."""
    completed: int
    """Tasks that succeeded since the statistics began."""
    failed: int
    """Tasks that ended failed since the statistics began (dead-lettered ones count in
    ``dead_lettered`` instead)."""
    cancelled: int
    """Tasks cancelled since the statistics began."""
    mean_wait_seconds: float
    """Mean seconds from submission to start, over recent tasks."""
    mean_run_seconds: float
    """Mean seconds from start to finish, over recent tasks."""
    workers: int
    """Connected workers able to serve this queue."""
    default_priority: int
    """Default priority of the queue's tasks."""
    task_class: str
    """Class of work the queue holds."""
    retrying: int
    """Tasks waiting for their next retry."""
    dead_lettered: int
    """Dead-lettered tasks currently kept."""
    error_rate: float
    """Share of finished tasks that failed, over recent tasks (0-1)."""
    warnings: tuple[str, ...]
    """Alert thresholds crossed right now, in words (queue depth, error rate)."""
    wait_p50_seconds: float
    """Median seconds from submission to start, over attempts that ended in the last 5 minutes."""
    wait_p95_seconds: float
    """95th percentile of the same waits."""
    submitted_per_second: float
    """Submissions accepted per second, over the last minute."""
    finished_per_second: float
    """Tasks finished (succeeded, failed, dead-lettered, cancelled) per second, over the last minute."""
    raw: scheduler_pb2.QueueStats = field(repr=False, compare=False)
    """The ``QueueStats`` message."""

    @classmethod
    def from_proto(cls, message: scheduler_pb2.QueueStats) -> QueueView:
        """Build the view of a ``QueueStats`` message."""
        return cls(
            name=message.name,
            paused=message.paused,
            pending=message.pending,
            processing=message.processing,
            completed=message.completed,
            failed=message.failed,
            cancelled=message.cancelled,
            mean_wait_seconds=message.mean_wait_seconds,
            mean_run_seconds=message.mean_run_seconds,
            workers=message.workers,
            default_priority=message.default_priority,
            task_class=enum_label(scheduler_pb2.TaskClass, message.task_class, "TASK_CLASS_"),
            retrying=message.retrying,
            dead_lettered=message.dead_lettered,
            error_rate=message.error_rate,
            warnings=tuple(message.warnings),
            wait_p50_seconds=message.wait_p50_seconds,
            wait_p95_seconds=message.wait_p95_seconds,
            submitted_per_second=message.submitted_per_second,
            finished_per_second=message.finished_per_second,
            raw=message,
        )


@dataclass(frozen=True)
class GpuView:
    """One GPU of a worker, as last reported."""

    index: int
    """Device index (0-based)."""
    name: str
    """Model name, e.g. ``"NVIDIA A100-SXM4-40GB"``."""
    uuid: str
    """Device UUID; simulated devices use ``"SIM-GPU-<n>"``."""
    memory_total_mb: int
    """Total device memory, MiB."""
    memory_free_mb: int
    """Free device memory, MiB."""
    utilization_percent: int
    """Core utilisation, percent."""

    @classmethod
    def from_proto(cls, message: worker_pb2.GpuDevice) -> GpuView:
        """Build the view of a ``GpuDevice`` message."""
        return cls(
            index=message.index,
            name=message.name,
            uuid=message.uuid,
            memory_total_mb=message.memory_total_mb,
            memory_free_mb=message.memory_free_mb,
            utilization_percent=message.utilization_percent,
        )


def _merge_gpu(probed: worker_pb2.GpuDevice, fresh: worker_pb2.GpuDevice | None) -> GpuView:
    """Identity from the probe, memory and utilisation from the latest heartbeat when it has them."""
    if fresh is None:
        return GpuView.from_proto(probed)
    return GpuView(
        index=probed.index,
        name=probed.name or fresh.name,
        uuid=probed.uuid or fresh.uuid,
        memory_total_mb=probed.memory_total_mb or fresh.memory_total_mb,
        memory_free_mb=fresh.memory_free_mb,
        utilization_percent=fresh.utilization_percent,
    )


@dataclass(frozen=True)
class WorkerView:
    """A worker as the scheduler sees it."""

    worker_id: str
    """Worker id."""
    worker_type: str
    """``"cpu"``, ``"gpu"``, ``"hybrid"`` (``"unspecified"`` if the agent did not say)."""
    status: str
    """Liveness: ``"connected"``, ``"unreachable"``, ``"draining"`` or ``"lost"``."""
    state: str
    """Where it stands for an operator: ``"ready"``, ``"draining"``, ``"drained"``,
    ``"quarantined"`` or ``"lost"``."""
    state_reason: str
    """Why it is in that state ("drained by operator", "5 distinct tasks failed on it within
    300 s", ...); empty when ready."""
    state_since: datetime | None
    """When it entered that state (UTC)."""
    quarantined_until: datetime | None
    """When its quarantine ends (UTC); None unless quarantined."""
    slots: int
    """Concurrent task slots."""
    free_slots: int
    """Slots with nothing dispatched or running."""
    task_ids: tuple[str, ...]
    """Tasks dispatched to or running on the worker."""
    labels: Mapping[str, str]
    """Worker labels."""
    celery_queue: str
    """Celery queue the worker consumes (``sy.w.<worker_id>``)."""
    hostname: str
    """Host the worker runs on."""
    cpu_count: int
    """Logical CPUs."""
    memory_total_mb: int
    """System memory, MiB."""
    gpus: tuple[GpuView, ...]
    """GPUs, with the latest memory and utilisation the heartbeats carried."""
    gpu_simulated: bool
    """True when the GPUs are simulated (demo/test profile)."""
    active_tasks: int
    """Tasks the Celery worker executes right now, per its agent."""
    cpu_percent: float
    """System CPU use, percent."""
    memory_percent: float
    """Memory use, percent."""
    last_heartbeat_at: datetime | None
    """Last heartbeat (UTC)."""
    raw: scheduler_pb2.WorkerInfo = field(repr=False, compare=False)
    """The ``WorkerInfo`` message."""

    @classmethod
    def from_proto(cls, message: scheduler_pb2.WorkerInfo) -> WorkerView:
        """Build the view of a ``WorkerInfo`` message, preferring the load's fresher GPU figures."""
        capabilities = message.capabilities
        fresh_by_index = {gpu.index: gpu for gpu in message.load.gpus}
        gpus = tuple(
            _merge_gpu(probed, fresh_by_index.get(probed.index)) for probed in capabilities.gpus
        )
        return cls(
            worker_id=message.worker_id,
            worker_type=enum_label(worker_pb2.WorkerType, message.worker_type, "WORKER_TYPE_"),
            status=enum_label(scheduler_pb2.WorkerStatus, message.status, "WORKER_STATUS_"),
            state=enum_label(scheduler_pb2.WorkerState, message.state, "WORKER_STATE_"),
            state_reason=message.state_reason,
            state_since=timestamp(message, "state_since"),
            quarantined_until=timestamp(message, "quarantined_until"),
            slots=message.slots,
            free_slots=message.free_slots,
            task_ids=tuple(message.task_ids),
            labels=dict(message.labels),
            celery_queue=message.celery_queue,
            hostname=capabilities.hostname,
            cpu_count=capabilities.cpu_count,
            memory_total_mb=capabilities.memory_total_mb,
            gpus=gpus,
            gpu_simulated=capabilities.gpu_simulated,
            active_tasks=message.load.active_tasks,
            cpu_percent=message.load.cpu_percent,
            memory_percent=message.load.memory_percent,
            last_heartbeat_at=timestamp(message, "last_heartbeat_at"),
            raw=message,
        )


@dataclass(frozen=True)
class WorkerChange:
    """What :meth:`~switchyard.SchedulerClient.undrain` or ``unquarantine`` did to a worker."""

    worker: WorkerView
    """The worker after the call."""
    previous_state: str
    """Its operator state before the call (``"drained"``, ``"quarantined"``, ...)."""
    changed: bool
    """False when there was nothing to undo (the call is idempotent)."""
