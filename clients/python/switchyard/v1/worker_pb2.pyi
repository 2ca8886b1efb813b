from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_TYPE_UNSPECIFIED: _ClassVar[WorkerType]
    WORKER_TYPE_CPU: _ClassVar[WorkerType]
    WORKER_TYPE_GPU: _ClassVar[WorkerType]
    WORKER_TYPE_HYBRID: _ClassVar[WorkerType]
WORKER_TYPE_UNSPECIFIED: WorkerType
WORKER_TYPE_CPU: WorkerType
WORKER_TYPE_GPU: WorkerType
WORKER_TYPE_HYBRID: WorkerType

class GpuDevice(_message.Message):
    __slots__ = ("index", "name", "uuid", "memory_total_mb", "memory_free_mb", "utilization_percent")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_MB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    uuid: str
    memory_total_mb: int
    memory_free_mb: int
    utilization_percent: int
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ..., memory_total_mb: _Optional[int] = ..., memory_free_mb: _Optional[int] = ..., utilization_percent: _Optional[int] = ...) -> None: ...

class WorkerCapabilities(_message.Message):
    __slots__ = ("cpu_count", "memory_total_mb", "gpus", "gpu_simulated", "driver_version", "hostname")
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_MB_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_SIMULATED_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    memory_total_mb: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuDevice]
    gpu_simulated: bool
    driver_version: str
    hostname: str
    def __init__(self, cpu_count: _Optional[int] = ..., memory_total_mb: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuDevice, _Mapping]]] = ..., gpu_simulated: _Optional[bool] = ..., driver_version: _Optional[str] = ..., hostname: _Optional[str] = ...) -> None: ...

class WorkerLoad(_message.Message):
    __slots__ = ("active_tasks", "cpu_percent", "memory_percent", "gpus")
    ACTIVE_TASKS_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    active_tasks: int
    cpu_percent: float
    memory_percent: float
    gpus: _containers.RepeatedCompositeFieldContainer[GpuDevice]
    def __init__(self, active_tasks: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., memory_percent: _Optional[float] = ..., gpus: _Optional[_Iterable[_Union[GpuDevice, _Mapping]]] = ...) -> None: ...
