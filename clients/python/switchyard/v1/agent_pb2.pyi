from switchyard.v1 import worker_pb2 as _worker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "heartbeat", "worker_exited")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    WORKER_EXITED_FIELD_NUMBER: _ClassVar[int]
    hello: AgentHello
    heartbeat: AgentHeartbeat
    worker_exited: WorkerExited
    def __init__(self, hello: _Optional[_Union[AgentHello, _Mapping]] = ..., heartbeat: _Optional[_Union[AgentHeartbeat, _Mapping]] = ..., worker_exited: _Optional[_Union[WorkerExited, _Mapping]] = ...) -> None: ...

class AgentHello(_message.Message):
    __slots__ = ("worker_id", "worker_type", "capabilities", "labels", "slots", "celery_queue", "agent_version", "celery_pid", "registered_tasks", "agent_instance")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CELERY_QUEUE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CELERY_PID_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_TASKS_FIELD_NUMBER: _ClassVar[int]
    AGENT_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    worker_type: _worker_pb2.WorkerType
    capabilities: _worker_pb2.WorkerCapabilities
    labels: _containers.ScalarMap[str, str]
    slots: int
    celery_queue: str
    agent_version: str
    celery_pid: int
    registered_tasks: _containers.RepeatedScalarFieldContainer[str]
    agent_instance: str
    def __init__(self, worker_id: _Optional[str] = ..., worker_type: _Optional[_Union[_worker_pb2.WorkerType, str]] = ..., capabilities: _Optional[_Union[_worker_pb2.WorkerCapabilities, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., slots: _Optional[int] = ..., celery_queue: _Optional[str] = ..., agent_version: _Optional[str] = ..., celery_pid: _Optional[int] = ..., registered_tasks: _Optional[_Iterable[str]] = ..., agent_instance: _Optional[str] = ...) -> None: ...

class AgentHeartbeat(_message.Message):
    __slots__ = ("sequence", "load", "labels", "labels_replaced", "running")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LABELS_REPLACED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    load: _worker_pb2.WorkerLoad
    labels: _containers.ScalarMap[str, str]
    labels_replaced: bool
    running: RunningAttempts
    def __init__(self, sequence: _Optional[int] = ..., load: _Optional[_Union[_worker_pb2.WorkerLoad, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., labels_replaced: _Optional[bool] = ..., running: _Optional[_Union[RunningAttempts, _Mapping]] = ...) -> None: ...

class RunningAttempts(_message.Message):
    __slots__ = ("attempts",)
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[RunningAttempt]
    def __init__(self, attempts: _Optional[_Iterable[_Union[RunningAttempt, _Mapping]]] = ...) -> None: ...

class RunningAttempt(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class WorkerExited(_message.Message):
    __slots__ = ("exit_code", "reason")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    reason: str
    def __init__(self, exit_code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("welcome", "drain", "cancel")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    welcome: AgentWelcome
    drain: DrainCommand
    cancel: CancelCommand
    def __init__(self, welcome: _Optional[_Union[AgentWelcome, _Mapping]] = ..., drain: _Optional[_Union[DrainCommand, _Mapping]] = ..., cancel: _Optional[_Union[CancelCommand, _Mapping]] = ...) -> None: ...

class AgentWelcome(_message.Message):
    __slots__ = ("heartbeat_interval_seconds", "state_redis_url", "key_prefix", "rejoined_after_loss")
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STATE_REDIS_URL_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    REJOINED_AFTER_LOSS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_seconds: float
    state_redis_url: str
    key_prefix: str
    rejoined_after_loss: bool
    def __init__(self, heartbeat_interval_seconds: _Optional[float] = ..., state_redis_url: _Optional[str] = ..., key_prefix: _Optional[str] = ..., rejoined_after_loss: _Optional[bool] = ...) -> None: ...

class DrainCommand(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class CancelCommand(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...
