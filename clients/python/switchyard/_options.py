"""What a caller may say about one task, and the one place it becomes a ``SubmitTaskRequest``.

:class:`TaskOptions` is shared by :meth:`SchedulerClient.submit`, ``submit_batch``, ``explain``
and the ``switchyard`` CLI (whose flags are named after its fields); :func:`build_submit_request`
checks it client-side, raising :class:`~switchyard.exceptions.InvalidArgument` before any
network call, and builds the request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from switchyard.exceptions import InvalidArgument
from switchyard.v1 import scheduler_pb2

__all__ = ["GPU_REQUIREMENTS", "TaskOptions", "TaskOptionsDict", "build_submit_request"]

GPU_REQUIREMENTS = ("unspecified", "none", "preferred", "required")
"""Accepted spellings of ``gpu=``, in ``GpuRequirement`` enum order."""
_GPU_VALUES = {key: int(scheduler_pb2.GpuRequirement.Value(f"GPU_REQUIREMENT_{key.upper()}")) for key in GPU_REQUIREMENTS}
"""Each spelling's ``GpuRequirement`` number."""

MIN_PRIORITY = 1
"""Lowest priority a task may ask for (0 lets the scheduler decide)."""
MAX_PRIORITY = 10
"""Highest (most urgent) priority."""
MAX_UINT64 = 2**64 - 1


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """Everything about one task but its name; every field has a default that lets the
    scheduler decide."""

    args: Sequence[Any] = ()
    """Positional arguments of the Celery task, JSON-encoded on the wire."""
    kwargs: Mapping[str, Any] | None = None
    """Keyword arguments of the Celery task, JSON-encoded on the wire."""
    args_json: str | None = None
    """``args`` as JSON text, passed through unchanged (the scheduler validates it); not with ``args``."""
    kwargs_json: str | None = None
    """``kwargs`` as JSON text, passed through unchanged; not with ``kwargs``."""
    content_type: str = ""
    """What the payload is (``audio``, ``video``, ``document``, ...): drives classification."""
    gpu: str | int = "unspecified"
    """``"unspecified"`` (classification decides), ``"none"``, ``"preferred"``, ``"required"``,
    or a ``GpuRequirement`` number."""
    gpu_memory_mb: int = 0
    """GPU memory the task needs on one device, MiB."""
    priority: int = 0
    """1 (lowest) to 10; 0 lets the scheduler choose."""
    queue: str = ""
    """Logical queue override ("" lets classification choose)."""
    idempotency_key: str = ""
    """A key seen before returns the original task instead of a new one."""
    labels: Mapping[str, str] | None = None
    """Worker labels the task requires: all must match a worker's."""
    user_initiated: bool = False
    """A person waits for the task (raises its priority)."""
    retry_policy: str = ""
    """Name of a retry policy of the scheduler's configuration ("" uses the queue's)."""
    soft_time_limit: float | None = None
    """Soft time limit, seconds (None or 0 uses the queue's)."""
    hard_time_limit: float | None = None
    """Hard time limit, seconds (None or 0 uses the queue's); not below ``soft_time_limit``."""
    preferred_labels: Mapping[str, str] | None = None
    """Worker labels that only raise the score of workers that have them."""
    batch_size: int = 0
    """Size of the batch the task belongs to (> 10 lowers its priority by 1)."""
    allow_unschedulable: bool = False
    """Accept the task even when no worker the scheduler knows could ever run it (a GPU larger
    than any known, a label no known worker has, an unknown content type): you expect such a
    worker to join. Without it the scheduler refuses such a task with ``FailedPrecondition``."""


class TaskOptionsDict(TypedDict, total=False):
    """:class:`TaskOptions` fields as keyword arguments of ``submit``/``explain``, which take
    ``args`` and ``kwargs`` as their own (positional) parameters. A unit test keeps the keys in
    step with the dataclass."""

    args_json: str | None
    kwargs_json: str | None
    content_type: str
    gpu: str | int
    gpu_memory_mb: int
    priority: int
    queue: str
    idempotency_key: str
    labels: Mapping[str, str] | None
    user_initiated: bool
    retry_policy: str
    soft_time_limit: float | None
    hard_time_limit: float | None
    preferred_labels: Mapping[str, str] | None
    batch_size: int
    allow_unschedulable: bool


def build_submit_request(task_name: str, options: TaskOptions) -> scheduler_pb2.SubmitTaskRequest:
    """The ``SubmitTaskRequest`` for ``task_name`` with ``options``, checked client-side.

    Raises :class:`InvalidArgument` for a payload that is not JSON-serialisable, ``args`` given
    as a string, both ``args`` and ``args_json`` (or ``kwargs`` and ``kwargs_json``), an unknown
    ``gpu`` spelling, a ``priority`` outside 0-10, a negative ``gpu_memory_mb``, a negative or
    non-finite time limit, a soft limit above the hard one, or a negative ``batch_size``.
    """
    if options.args_json is not None and options.args:
        raise InvalidArgument("give args or args_json, not both")
    if options.kwargs_json is not None and options.kwargs:
        raise InvalidArgument("give kwargs or kwargs_json, not both")
    if isinstance(options.args, str | bytes):
        raise InvalidArgument("args must be a sequence of arguments, not a string; use args_json= for JSON text")
    gpu = _gpu_requirement_value(options.gpu)
    soft = _time_limit(options.soft_time_limit, "soft_time_limit")
    hard = _time_limit(options.hard_time_limit, "hard_time_limit")
    if hard and soft > hard:
        raise InvalidArgument(f"soft_time_limit ({soft:g} s) must not exceed hard_time_limit ({hard:g} s)")
    if options.batch_size < 0:
        raise InvalidArgument(f"batch_size must be >= 0; got {options.batch_size}")
    _check_whole_number(options.priority, "priority", 0, MAX_PRIORITY,
                        f"must be 0 (the scheduler decides) or {MIN_PRIORITY}-{MAX_PRIORITY}")
    _check_whole_number(options.gpu_memory_mb, "gpu_memory_mb", 0, MAX_UINT64, "must be a number of MiB >= 0")
    args_json = options.args_json
    if args_json is None:
        args_json = _encode_json(list(options.args), "args") if options.args else ""
    kwargs_json = options.kwargs_json
    if kwargs_json is None:
        kwargs_json = _encode_json(dict(options.kwargs), "kwargs") if options.kwargs else ""
    fields: dict[str, Any] = {
        "task_name": task_name,
        "args_json": args_json,
        "kwargs_json": kwargs_json,
        "content_type": options.content_type,
        "gpu": gpu,
        "gpu_memory_mb": options.gpu_memory_mb,
        "priority": options.priority,
        "queue": options.queue,
        "idempotency_key": options.idempotency_key,
        "labels": dict(options.labels) if options.labels else None,
        "user_initiated": options.user_initiated,
        "retry_policy": options.retry_policy,
        "soft_time_limit_seconds": soft,
        "hard_time_limit_seconds": hard,
        "batch_size": options.batch_size,
        "preferred_labels": dict(options.preferred_labels) if options.preferred_labels else None,
        "allow_unschedulable": options.allow_unschedulable,
    }
    # Only the fields away from their default: proto3 sends none of the others anyway, and each
    # field given to the constructor costs time (several microseconds apiece when the process has
    # been idle, which is when a lone submission's latency is measured).
    return scheduler_pb2.SubmitTaskRequest(**{name: value for name, value in fields.items() if value})


def _check_whole_number(value: object, what: str, lowest: int, highest: int, wording: str) -> None:
    """Raise InvalidArgument unless ``value`` is an int in ``lowest``-``highest`` (protobuf would
    raise a bare ValueError or TypeError for it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} {wording}; got {value!r}")
    if not lowest <= value <= highest:
        raise InvalidArgument(f"{what} {wording}; got {value}")


def _gpu_requirement_value(gpu: str | int) -> int:
    """The ``GpuRequirement`` number for ``"none"``/``"preferred"``/... or an enum number."""
    if isinstance(gpu, int):
        return gpu
    value = _GPU_VALUES.get(gpu.strip().lower())
    if value is None:
        raise InvalidArgument(f"gpu must be one of {', '.join(GPU_REQUIREMENTS)}; got {gpu!r}")
    return value


def _time_limit(value: float | None, what: str) -> float:
    if value is None:
        return 0.0
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0; got {value!r}")
    return seconds


_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""Compact, strict JSON, made once: ``json.dumps`` with these options builds an encoder per call."""


def _encode_json(value: Any, what: str) -> str:
    try:
        return _JSON.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} must be JSON-serialisable: {exc}") from exc
