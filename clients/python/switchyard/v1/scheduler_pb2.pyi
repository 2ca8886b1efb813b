import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from switchyard.v1 import worker_pb2 as _worker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GpuRequirement(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GPU_REQUIREMENT_UNSPECIFIED: _ClassVar[GpuRequirement]
    GPU_REQUIREMENT_NONE: _ClassVar[GpuRequirement]
    GPU_REQUIREMENT_PREFERRED: _ClassVar[GpuRequirement]
    GPU_REQUIREMENT_REQUIRED: _ClassVar[GpuRequirement]

class TaskClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_CLASS_UNSPECIFIED: _ClassVar[TaskClass]
    TASK_CLASS_GPU_INTENSIVE: _ClassVar[TaskClass]
    TASK_CLASS_CPU: _ClassVar[TaskClass]
    TASK_CLASS_MIXED: _ClassVar[TaskClass]
    TASK_CLASS_IO: _ClassVar[TaskClass]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_DISPATCHED: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_SUCCEEDED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_RETRYING: _ClassVar[TaskState]
    TASK_STATE_DEAD_LETTERED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]

class Serializer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERIALIZER_UNSPECIFIED: _ClassVar[Serializer]
    SERIALIZER_JSON: _ClassVar[Serializer]
    SERIALIZER_MSGPACK: _ClassVar[Serializer]

class WorkerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATUS_UNSPECIFIED: _ClassVar[WorkerStatus]
    WORKER_STATUS_CONNECTED: _ClassVar[WorkerStatus]
    WORKER_STATUS_UNREACHABLE: _ClassVar[WorkerStatus]
    WORKER_STATUS_DRAINING: _ClassVar[WorkerStatus]
    WORKER_STATUS_LOST: _ClassVar[WorkerStatus]

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_READY: _ClassVar[WorkerState]
    WORKER_STATE_DRAINING: _ClassVar[WorkerState]
    WORKER_STATE_DRAINED: _ClassVar[WorkerState]
    WORKER_STATE_QUARANTINED: _ClassVar[WorkerState]
    WORKER_STATE_LOST: _ClassVar[WorkerState]
GPU_REQUIREMENT_UNSPECIFIED: GpuRequirement
GPU_REQUIREMENT_NONE: GpuRequirement
GPU_REQUIREMENT_PREFERRED: GpuRequirement
GPU_REQUIREMENT_REQUIRED: GpuRequirement
TASK_CLASS_UNSPECIFIED: TaskClass
TASK_CLASS_GPU_INTENSIVE: TaskClass
TASK_CLASS_CPU: TaskClass
TASK_CLASS_MIXED: TaskClass
TASK_CLASS_IO: TaskClass
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_DISPATCHED: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_SUCCEEDED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_RETRYING: TaskState
TASK_STATE_DEAD_LETTERED: TaskState
TASK_STATE_CANCELLED: TaskState
SERIALIZER_UNSPECIFIED: Serializer
SERIALIZER_JSON: Serializer
SERIALIZER_MSGPACK: Serializer
WORKER_STATUS_UNSPECIFIED: WorkerStatus
WORKER_STATUS_CONNECTED: WorkerStatus
WORKER_STATUS_UNREACHABLE: WorkerStatus
WORKER_STATUS_DRAINING: WorkerStatus
WORKER_STATUS_LOST: WorkerStatus
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_READY: WorkerState
WORKER_STATE_DRAINING: WorkerState
WORKER_STATE_DRAINED: WorkerState
WORKER_STATE_QUARANTINED: WorkerState
WORKER_STATE_LOST: WorkerState

class SubmitTaskRequest(_message.Message):
    __slots__ = ("task_name", "args_json", "kwargs_json", "content_type", "gpu", "gpu_memory_mb", "priority", "queue", "idempotency_key", "labels", "user_initiated", "retry_policy", "soft_time_limit_seconds", "hard_time_limit_seconds", "batch_size", "preferred_labels", "allow_unschedulable", "args", "kwargs", "serializer")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PreferredLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    KWARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    USER_INITIATED_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    SOFT_TIME_LIMIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HARD_TIME_LIMIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_LABELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNSCHEDULABLE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    KWARGS_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    task_name: str
    args_json: str
    kwargs_json: str
    content_type: str
    gpu: GpuRequirement
    gpu_memory_mb: int
    priority: int
    queue: str
    idempotency_key: str
    labels: _containers.ScalarMap[str, str]
    user_initiated: bool
    retry_policy: str
    soft_time_limit_seconds: float
    hard_time_limit_seconds: float
    batch_size: int
    preferred_labels: _containers.ScalarMap[str, str]
    allow_unschedulable: bool
    args: _struct_pb2.ListValue
    kwargs: _struct_pb2.Struct
    serializer: Serializer
    def __init__(self, task_name: _Optional[str] = ..., args_json: _Optional[str] = ..., kwargs_json: _Optional[str] = ..., content_type: _Optional[str] = ..., gpu: _Optional[_Union[GpuRequirement, str]] = ..., gpu_memory_mb: _Optional[int] = ..., priority: _Optional[int] = ..., queue: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., user_initiated: _Optional[bool] = ..., retry_policy: _Optional[str] = ..., soft_time_limit_seconds: _Optional[float] = ..., hard_time_limit_seconds: _Optional[float] = ..., batch_size: _Optional[int] = ..., preferred_labels: _Optional[_Mapping[str, str]] = ..., allow_unschedulable: _Optional[bool] = ..., args: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., kwargs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., serializer: _Optional[_Union[Serializer, str]] = ...) -> None: ...

class SubmitTaskResponse(_message.Message):
    __slots__ = ("task_id", "queue", "priority", "task_class", "deduplicated", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    queue: str
    priority: int
    task_class: TaskClass
    deduplicated: bool
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., queue: _Optional[str] = ..., priority: _Optional[int] = ..., task_class: _Optional[_Union[TaskClass, str]] = ..., deduplicated: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class SubmitBatchRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[SubmitTaskRequest]
    def __init__(self, tasks: _Optional[_Iterable[_Union[SubmitTaskRequest, _Mapping]]] = ...) -> None: ...

class SubmitBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitTaskResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitTaskResponse, _Mapping]]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "task_name", "state", "queue", "priority", "worker_id", "attempt", "result_json", "error", "progress", "progress_message", "submitted_at", "dispatched_at", "started_at", "finished_at", "reason", "task_class", "content_type", "gpu", "gpu_memory_mb", "labels", "traceback", "retry_policy", "failures", "next_attempt_at", "error_type", "effective_priority", "result", "serializer")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_name: str
    state: TaskState
    queue: str
    priority: int
    worker_id: str
    attempt: int
    result_json: str
    error: str
    progress: float
    progress_message: str
    submitted_at: _timestamp_pb2.Timestamp
    dispatched_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    reason: str
    task_class: TaskClass
    content_type: str
    gpu: GpuRequirement
    gpu_memory_mb: int
    labels: _containers.ScalarMap[str, str]
    traceback: str
    retry_policy: str
    failures: int
    next_attempt_at: _timestamp_pb2.Timestamp
    error_type: str
    effective_priority: int
    result: _struct_pb2.Value
    serializer: Serializer
    def __init__(self, task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., queue: _Optional[str] = ..., priority: _Optional[int] = ..., worker_id: _Optional[str] = ..., attempt: _Optional[int] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ..., progress: _Optional[float] = ..., progress_message: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dispatched_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., task_class: _Optional[_Union[TaskClass, str]] = ..., content_type: _Optional[str] = ..., gpu: _Optional[_Union[GpuRequirement, str]] = ..., gpu_memory_mb: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., traceback: _Optional[str] = ..., retry_policy: _Optional[str] = ..., failures: _Optional[int] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_type: _Optional[str] = ..., effective_priority: _Optional[int] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., serializer: _Optional[_Union[Serializer, str]] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task", "previous_state")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    task: Task
    previous_state: TaskState
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., previous_state: _Optional[_Union[TaskState, str]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("states", "queue", "worker_id", "task_name", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[TaskState]
    queue: str
    worker_id: str
    task_name: str
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[TaskState, str]]] = ..., queue: _Optional[str] = ..., worker_id: _Optional[str] = ..., task_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("name", "pending", "processing", "completed", "failed", "paused", "mean_wait_seconds", "mean_run_seconds", "workers", "default_priority", "task_class", "cancelled", "warnings", "error_rate", "retrying", "dead_lettered", "wait_p50_seconds", "wait_p95_seconds", "submitted_per_second", "finished_per_second")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    MEAN_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_RUN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    WAIT_P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WAIT_P95_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    FINISHED_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    name: str
    pending: int
    processing: int
    completed: int
    failed: int
    paused: bool
    mean_wait_seconds: float
    mean_run_seconds: float
    workers: int
    default_priority: int
    task_class: TaskClass
    cancelled: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    error_rate: float
    retrying: int
    dead_lettered: int
    wait_p50_seconds: float
    wait_p95_seconds: float
    submitted_per_second: float
    finished_per_second: float
    def __init__(self, name: _Optional[str] = ..., pending: _Optional[int] = ..., processing: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., paused: _Optional[bool] = ..., mean_wait_seconds: _Optional[float] = ..., mean_run_seconds: _Optional[float] = ..., workers: _Optional[int] = ..., default_priority: _Optional[int] = ..., task_class: _Optional[_Union[TaskClass, str]] = ..., cancelled: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ..., error_rate: _Optional[float] = ..., retrying: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., wait_p50_seconds: _Optional[float] = ..., wait_p95_seconds: _Optional[float] = ..., submitted_per_second: _Optional[float] = ..., finished_per_second: _Optional[float] = ...) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueStats]
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueStats, _Mapping]]] = ...) -> None: ...

class PauseQueueRequest(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class PauseQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: QueueStats
    def __init__(self, queue: _Optional[_Union[QueueStats, _Mapping]] = ...) -> None: ...

class ResumeQueueRequest(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class ResumeQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: QueueStats
    def __init__(self, queue: _Optional[_Union[QueueStats, _Mapping]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "worker_type", "status", "capabilities", "load", "labels", "slots", "free_slots", "task_ids", "celery_queue", "last_heartbeat_at", "state", "state_reason", "state_since", "quarantined_until")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    CELERY_QUEUE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    worker_type: _worker_pb2.WorkerType
    status: WorkerStatus
    capabilities: _worker_pb2.WorkerCapabilities
    load: _worker_pb2.WorkerLoad
    labels: _containers.ScalarMap[str, str]
    slots: int
    free_slots: int
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    celery_queue: str
    last_heartbeat_at: _timestamp_pb2.Timestamp
    state: WorkerState
    state_reason: str
    state_since: _timestamp_pb2.Timestamp
    quarantined_until: _timestamp_pb2.Timestamp
    def __init__(self, worker_id: _Optional[str] = ..., worker_type: _Optional[_Union[_worker_pb2.WorkerType, str]] = ..., status: _Optional[_Union[WorkerStatus, str]] = ..., capabilities: _Optional[_Union[_worker_pb2.WorkerCapabilities, _Mapping]] = ..., load: _Optional[_Union[_worker_pb2.WorkerLoad, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., slots: _Optional[int] = ..., free_slots: _Optional[int] = ..., task_ids: _Optional[_Iterable[str]] = ..., celery_queue: _Optional[str] = ..., last_heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[WorkerState, str]] = ..., state_reason: _Optional[str] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., quarantined_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class DrainWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class DrainWorkerResponse(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerInfo
    def __init__(self, worker: _Optional[_Union[WorkerInfo, _Mapping]] = ...) -> None: ...

class UndrainWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class UndrainWorkerResponse(_message.Message):
    __slots__ = ("worker", "previous_state", "changed")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerInfo
    previous_state: WorkerState
    changed: bool
    def __init__(self, worker: _Optional[_Union[WorkerInfo, _Mapping]] = ..., previous_state: _Optional[_Union[WorkerState, str]] = ..., changed: _Optional[bool] = ...) -> None: ...

class UnquarantineWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class UnquarantineWorkerResponse(_message.Message):
    __slots__ = ("worker", "previous_state", "changed")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerInfo
    previous_state: WorkerState
    changed: bool
    def __init__(self, worker: _Optional[_Union[WorkerInfo, _Mapping]] = ..., previous_state: _Optional[_Union[WorkerState, str]] = ..., changed: _Optional[bool] = ...) -> None: ...

class ExplainPlacementRequest(_message.Message):
    __slots__ = ("task", "task_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task: SubmitTaskRequest
    task_id: str
    def __init__(self, task: _Optional[_Union[SubmitTaskRequest, _Mapping]] = ..., task_id: _Optional[str] = ...) -> None: ...

class ScoreTerm(_message.Message):
    __slots__ = ("name", "value", "weight", "contribution")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    weight: float
    contribution: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., weight: _Optional[float] = ..., contribution: _Optional[float] = ...) -> None: ...

class WorkerVerdict(_message.Message):
    __slots__ = ("worker_id", "eligible", "rejected_by", "rejection_reason", "score", "terms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    eligible: bool
    rejected_by: str
    rejection_reason: str
    score: float
    terms: _containers.RepeatedCompositeFieldContainer[ScoreTerm]
    def __init__(self, worker_id: _Optional[str] = ..., eligible: _Optional[bool] = ..., rejected_by: _Optional[str] = ..., rejection_reason: _Optional[str] = ..., score: _Optional[float] = ..., terms: _Optional[_Iterable[_Union[ScoreTerm, _Mapping]]] = ...) -> None: ...

class ExplainPlacementResponse(_message.Message):
    __slots__ = ("task_class", "queue", "priority", "effective_priority", "classification_reason", "workers", "chosen_worker_id", "summary")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_REASON_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    task_class: TaskClass
    queue: str
    priority: int
    effective_priority: int
    classification_reason: str
    workers: _containers.RepeatedCompositeFieldContainer[WorkerVerdict]
    chosen_worker_id: str
    summary: str
    def __init__(self, task_class: _Optional[_Union[TaskClass, str]] = ..., queue: _Optional[str] = ..., priority: _Optional[int] = ..., effective_priority: _Optional[int] = ..., classification_reason: _Optional[str] = ..., workers: _Optional[_Iterable[_Union[WorkerVerdict, _Mapping]]] = ..., chosen_worker_id: _Optional[str] = ..., summary: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("task", "dead_lettered_at", "reason")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task: Task
    dead_lettered_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., dead_lettered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("queue", "limit")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    queue: str
    limit: int
    def __init__(self, queue: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "total")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    total: int
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class RetryDeadLetterRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class RetryDeadLetterResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class PurgeDeadLettersRequest(_message.Message):
    __slots__ = ("task_ids", "queue", "all")
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    queue: str
    all: bool
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ..., queue: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class PurgeDeadLettersResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...
