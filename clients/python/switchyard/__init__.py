"""Switchyard Python client: submit Celery work to a Switchyard scheduler and watch it run.

    from switchyard import SchedulerClient

    with SchedulerClient("127.0.0.1:50051") as client:
        task_id = client.submit("text.summarize", kwargs={"text": "..."}, content_type="text").task_id
        print(client.wait(task_id, timeout=60).result)

The asyncio client, with the same operations and options, is
:class:`switchyard.aio.AsyncSchedulerClient`. The generated protobuf modules live in
:mod:`switchyard.v1` for callers that want the raw API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from switchyard._connection import DEFAULT_TARGET
    from switchyard._fleet_views import GpuView, QueueView, WorkerChange, WorkerView
    from switchyard._task_views import (
        CancelResult,
        DeadLetterView,
        Explanation,
        ScoreTerm,
        SubmitResult,
        TaskView,
        WorkerVerdict,
    )
    from switchyard.client import SchedulerClient
    from switchyard.exceptions import (
        Aborted,
        AlreadyExists,
        Cancelled,
        DeadlineExceeded,
        FailedPrecondition,
        InternalError,
        InvalidArgument,
        NotFound,
        OutOfRange,
        PermissionDenied,
        ResourceExhausted,
        SwitchyardError,
        Unauthenticated,
        Unavailable,
        Unimplemented,
        from_rpc_error,
    )
    from switchyard.wire import TERMINAL_STATE_NAMES as TERMINAL_STATES

# Names load on first use, so that `switchyard.wire` (imported by the scheduler's pure parts and
# by every Celery worker process) does not drag gRPC in with the package.
_LAZY: dict[str, tuple[str, str]] = {
    "DEFAULT_TARGET": ("switchyard._connection", "DEFAULT_TARGET"),
    "GpuView": ("switchyard._fleet_views", "GpuView"),
    "QueueView": ("switchyard._fleet_views", "QueueView"),
    "WorkerView": ("switchyard._fleet_views", "WorkerView"),
    "WorkerChange": ("switchyard._fleet_views", "WorkerChange"),
    "CancelResult": ("switchyard._task_views", "CancelResult"),
    "DeadLetterView": ("switchyard._task_views", "DeadLetterView"),
    "Explanation": ("switchyard._task_views", "Explanation"),
    "ScoreTerm": ("switchyard._task_views", "ScoreTerm"),
    "SubmitResult": ("switchyard._task_views", "SubmitResult"),
    "TaskView": ("switchyard._task_views", "TaskView"),
    "WorkerVerdict": ("switchyard._task_views", "WorkerVerdict"),
    "SchedulerClient": ("switchyard.client", "SchedulerClient"),
    "Aborted": ("switchyard.exceptions", "Aborted"),
    "AlreadyExists": ("switchyard.exceptions", "AlreadyExists"),
    "Cancelled": ("switchyard.exceptions", "Cancelled"),
    "DeadlineExceeded": ("switchyard.exceptions", "DeadlineExceeded"),
    "FailedPrecondition": ("switchyard.exceptions", "FailedPrecondition"),
    "InternalError": ("switchyard.exceptions", "InternalError"),
    "InvalidArgument": ("switchyard.exceptions", "InvalidArgument"),
    "NotFound": ("switchyard.exceptions", "NotFound"),
    "OutOfRange": ("switchyard.exceptions", "OutOfRange"),
    "PermissionDenied": ("switchyard.exceptions", "PermissionDenied"),
    "ResourceExhausted": ("switchyard.exceptions", "ResourceExhausted"),
    "SwitchyardError": ("switchyard.exceptions", "SwitchyardError"),
    "Unauthenticated": ("switchyard.exceptions", "Unauthenticated"),
    "Unavailable": ("switchyard.exceptions", "Unavailable"),
    "Unimplemented": ("switchyard.exceptions", "Unimplemented"),
    "from_rpc_error": ("switchyard.exceptions", "from_rpc_error"),
    "TERMINAL_STATES": ("switchyard.wire", "TERMINAL_STATE_NAMES"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'switchyard' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_TARGET",
    "TERMINAL_STATES",
    "Aborted",
    "AlreadyExists",
    "CancelResult",
    "Cancelled",
    "DeadLetterView",
    "DeadlineExceeded",
    "Explanation",
    "FailedPrecondition",
    "GpuView",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "QueueView",
    "ResourceExhausted",
    "SchedulerClient",
    "ScoreTerm",
    "SubmitResult",
    "SwitchyardError",
    "TaskView",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WorkerChange",
    "WorkerVerdict",
    "WorkerView",
    "from_rpc_error",
]
