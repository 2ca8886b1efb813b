"""Switchyard Python client: submit Celery work to a Switchyard scheduler and watch it run.

    from switchyard import SchedulerClient

    with SchedulerClient("127.0.0.1:50051") as client:
        task_id = client.submit("text.summarize", kwargs={"text": "..."}, content_type="text").task_id
        print(client.wait(task_id, timeout=60).result)

The generated protobuf modules live in :mod:`switchyard.v1` for callers that want the raw API.
"""

from switchyard._models import (
    TERMINAL_STATES,
    CancelResult,
    DeadLetterView,
    Explanation,
    GpuView,
    QueueView,
    ScoreTerm,
    SubmitResult,
    TaskView,
    WorkerVerdict,
    WorkerView,
)
from switchyard.client import DEFAULT_TARGET, SchedulerClient
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
    "WorkerVerdict",
    "WorkerView",
    "from_rpc_error",
]
