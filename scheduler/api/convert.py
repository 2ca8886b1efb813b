"""Conversions between switchyard.v1 protobuf messages and the engine's plain data."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from switchyard.v1 import agent_pb2, scheduler_pb2, worker_pb2
from switchyard.wire import worker_queue

from scheduler.core.model import NO_LABELS, GpuNeed, Submission, TaskClass, TaskState, WorkerType
from scheduler.core.validate import TaskInput
from scheduler.engine.task_list import TaskQuery
from scheduler.engine.views import Accepted, Explanation, QueueView, TaskView, WorkerRegistration
from scheduler.errors import InvalidArgument
from scheduler.fleet import OPERATOR_STATES, Gpu, Liveness, OperatorStatus, Worker
from scheduler.state.records import TaskRecord

_GPU_NEED = {
    scheduler_pb2.GPU_REQUIREMENT_UNSPECIFIED: GpuNeed.UNSPECIFIED,
    scheduler_pb2.GPU_REQUIREMENT_NONE: GpuNeed.NONE,
    scheduler_pb2.GPU_REQUIREMENT_PREFERRED: GpuNeed.PREFERRED,
    scheduler_pb2.GPU_REQUIREMENT_REQUIRED: GpuNeed.REQUIRED,
}
_GPU_NEED_PROTO = {v: k for k, v in _GPU_NEED.items()}
_TASK_CLASS = {
    TaskClass.GPU_INTENSIVE: scheduler_pb2.TASK_CLASS_GPU_INTENSIVE,
    TaskClass.CPU: scheduler_pb2.TASK_CLASS_CPU,
    TaskClass.MIXED: scheduler_pb2.TASK_CLASS_MIXED,
    TaskClass.IO: scheduler_pb2.TASK_CLASS_IO,
}
_STATE: dict[TaskState, Any] = {
    state: scheduler_pb2.TaskState.Value(f"TASK_STATE_{state.name}") for state in TaskState
}
_STATE_PLAIN = {number: state for state, number in _STATE.items()}
_WORKER_TYPE = {
    WorkerType.CPU: worker_pb2.WORKER_TYPE_CPU,
    WorkerType.GPU: worker_pb2.WORKER_TYPE_GPU,
    WorkerType.HYBRID: worker_pb2.WORKER_TYPE_HYBRID,
}
_WORKER_TYPE_PLAIN = {v: k for k, v in _WORKER_TYPE.items()}
_WORKER_STATE: dict[str, Any] = {
    state: scheduler_pb2.WorkerState.Value(f"WORKER_STATE_{state.upper()}") for state in OPERATOR_STATES
}
_LIVENESS = {
    Liveness.CONNECTED: scheduler_pb2.WORKER_STATUS_CONNECTED,
    Liveness.UNREACHABLE: scheduler_pb2.WORKER_STATUS_UNREACHABLE,
    Liveness.DRAINING: scheduler_pb2.WORKER_STATUS_DRAINING,
    Liveness.LOST: scheduler_pb2.WORKER_STATUS_LOST,
}


_SERIALIZER = {
    scheduler_pb2.SERIALIZER_UNSPECIFIED: "",
    scheduler_pb2.SERIALIZER_JSON: "json",
    scheduler_pb2.SERIALIZER_MSGPACK: "msgpack",
}
_SERIALIZER_PROTO = {name: number for number, name in _SERIALIZER.items() if name}

EXACT_INTEGER_LIMIT = 2**53
"""Whole numbers up to this magnitude are exact in a double; a structured argument within it is
stored as a JSON integer (a Python task receives an int), anything else as a JSON float."""
RESULT_VALUE_MAX_BYTES = 64 * 1024
"""`Task.result` (the structured copy of result_json) is filled only for results up to this size.
Building protobuf Values is slow in Python (about 10 ms for 64 KiB, 170 ms for 1 MiB) and happens
on every GetTask/WatchTask answer and for every task of a ListTasks page; result_json always
carries the result, at any size."""


class _NotJson(Exception):
    """A structured argument holds a number JSON cannot carry; `path` locates it (built on the way out)."""

    def __init__(self, number: float) -> None:
        super().__init__(number)
        self.number = number
        self.path: list[str] = []


def _plain(value: struct_pb2.Value) -> Any:
    """A protobuf Value as the plain JSON-ready value it holds (an unset Value is null)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise _NotJson(number)
        return int(number) if number.is_integer() and abs(number) <= EXACT_INTEGER_LIMIT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _plain_object(value.struct_value)
    if kind == "list_value":
        return _plain_list(value.list_value)
    return None


def _plain_object(struct: struct_pb2.Struct) -> dict[str, Any]:
    plain = {}
    for key, item in struct.fields.items():
        try:
            plain[key] = _plain(item)
        except _NotJson as exc:
            exc.path.append(f".{key}")
            raise
    return plain


def _plain_list(items: struct_pb2.ListValue) -> list[Any]:
    plain = []
    for index, item in enumerate(items.values):
        try:
            plain.append(_plain(item))
        except _NotJson as exc:
            exc.path.append(f"[{index}]")
            raise
    return plain


def _arguments(request: scheduler_pb2.SubmitTaskRequest, index: int | None) -> tuple[str, str]:
    """(args_json, kwargs_json) from whichever form the request uses; both forms at once is an error.

    The structured form (args, kwargs) is turned into the same JSON text the text form carries,
    so validation, storage and the worker see one representation.
    """
    structured = [name for name in ("args", "kwargs") if request.HasField(name)]
    if not structured:
        return request.args_json, request.kwargs_json
    where = _where(index)
    text = [name for name in ("args_json", "kwargs_json") if getattr(request, name)]
    if text:
        raise InvalidArgument(
            f"{where}{' and '.join(structured)} and {' and '.join(text)} are both set: send the arguments "
            "either as JSON text (args_json, kwargs_json) or structured (args, kwargs), not both"
        )
    name = "args"
    try:
        args = _plain_list(request.args) if request.HasField("args") else []
        name = "kwargs"
        kwargs = _plain_object(request.kwargs) if request.HasField("kwargs") else {}
    except _NotJson as exc:
        located = name + "".join(reversed(exc.path))
        raise InvalidArgument(
            f"{where}{located} is {exc.number!r}, which JSON cannot carry; send a finite number (or a string)"
        ) from None
    # Compact separators: the size counts against max_payload_bytes as the text form's does.
    return (json.dumps(args, ensure_ascii=False, separators=(",", ":")) if args else "",
            json.dumps(kwargs, ensure_ascii=False, separators=(",", ":")) if kwargs else "")


def _where(index: int | None) -> str:
    """How an error names a batch item (errors only: most requests never need it)."""
    return f"tasks[{index}]: " if index is not None else ""


def task_input(request: scheduler_pb2.SubmitTaskRequest, index: int | None = None) -> TaskInput:
    """A SubmitTaskRequest as plain data (validation happens in the engine).

    `index` is the request's position in a batch; errors found here then start `tasks[<index>]: `.
    """
    args_json, kwargs_json = _arguments(request, index)
    serializer = _SERIALIZER.get(request.serializer)
    if serializer is None:
        raise InvalidArgument(
            f"{_where(index)}serializer {request.serializer} is not a Serializer; valid: "
            "SERIALIZER_UNSPECIFIED (the queue's), SERIALIZER_JSON, SERIALIZER_MSGPACK"
        )
    gpu = _GPU_NEED.get(request.gpu, GpuNeed.UNSPECIFIED)
    return TaskInput(
        submission=Submission(
            task_name=request.task_name,
            content_type=request.content_type,
            gpu=gpu,
            gpu_memory_mb=request.gpu_memory_mb,
            priority=request.priority,
            queue=request.queue,
            labels=dict(request.labels) if request.labels else NO_LABELS,
            user_initiated=request.user_initiated,
            batch_size=request.batch_size,
            retry_policy=request.retry_policy,
            preferred_labels=dict(request.preferred_labels) if request.preferred_labels else NO_LABELS,
        ),
        args_json=args_json,
        kwargs_json=kwargs_json,
        idempotency_key=request.idempotency_key,
        soft_time_limit_seconds=request.soft_time_limit_seconds,
        hard_time_limit_seconds=request.hard_time_limit_seconds,
        allow_unschedulable=request.allow_unschedulable,
        serializer=serializer,
    )


def submit_response(accepted: Accepted) -> scheduler_pb2.SubmitTaskResponse:
    return scheduler_pb2.SubmitTaskResponse(
        task_id=accepted.task_id,
        queue=accepted.queue,
        priority=accepted.priority,
        task_class=_TASK_CLASS[accepted.task_class],
        deduplicated=accepted.deduplicated,
        reason=accepted.reason,
    )


def _timestamp(seconds: float) -> Timestamp | None:
    if not seconds:
        return None
    stamp = Timestamp()
    stamp.seconds = int(seconds)
    stamp.nanos = int((seconds - int(seconds)) * 1e9)
    return stamp


def task_state(state: TaskState) -> Any:
    """A task state as the proto enum."""
    return _STATE.get(state, scheduler_pb2.TASK_STATE_UNSPECIFIED)


def task_message(view: TaskView) -> scheduler_pb2.Task:
    """A task as clients see it."""
    record = view.record
    task = scheduler_pb2.Task(
        task_id=record.task_id,
        task_name=record.name,
        state=task_state(record.state),
        queue=record.queue,
        priority=record.priority,
        worker_id=record.worker_id,
        attempt=record.attempt,
        result_json=record.result_json,
        error=record.error,
        traceback=record.traceback,
        progress=record.progress,
        progress_message=record.progress_message,
        reason=record.reason,
        task_class=_TASK_CLASS.get(record.task_class, scheduler_pb2.TASK_CLASS_UNSPECIFIED),
        content_type=record.content_type,
        gpu=_GPU_NEED_PROTO.get(record.gpu, scheduler_pb2.GPU_REQUIREMENT_UNSPECIFIED),
        gpu_memory_mb=record.gpu_memory_mb,
        labels=dict(record.labels),
        retry_policy=record.retry_policy,
        failures=record.failures,
        error_type=record.error_type,
        effective_priority=view.effective_priority or record.priority,
        serializer=_SERIALIZER_PROTO.get(record.serializer, scheduler_pb2.SERIALIZER_JSON),
    )
    result = _result_value(record.result_json) if record.result_json else None
    if result is not None:
        task.result.CopyFrom(result)
    for name in ("submitted_at", "dispatched_at", "started_at", "finished_at", "next_attempt_at"):
        stamp = _timestamp(getattr(record, name))
        if stamp is not None:
            getattr(task, name).CopyFrom(stamp)
    return task


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON float that is finite as a double (1e400 would read as infinity)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} does not fit a double")
    return number


def _result_value(result_json: str) -> struct_pb2.Value | None:
    """The result as a Value when it is strict JSON of at most RESULT_VALUE_MAX_BYTES.

    None otherwise (result_json still has it): a bigger result, one holding NaN or Infinity
    (Python's json writes them, JSON has no such numbers), or a number too large for a double.
    """
    if len(result_json) > RESULT_VALUE_MAX_BYTES:
        return None
    value = struct_pb2.Value()
    try:
        plain = json.loads(result_json, parse_constant=_reject_constant, parse_float=_finite_float)
        json_format.ParseDict(plain, value)
    except (ValueError, RecursionError, OverflowError, json_format.ParseError):
        return None
    return value


def task_query(request: scheduler_pb2.ListTasksRequest) -> TaskQuery:
    """A ListTasksRequest as plain data (an unknown or unspecified state is INVALID_ARGUMENT)."""
    states = set()
    for number in request.states:
        state = _STATE_PLAIN.get(number)
        if state is None:
            valid = ", ".join(f"TASK_STATE_{s.name}" for s in _STATE)
            raise InvalidArgument(f"states holds {number}, which is not a task state; valid: {valid}")
        states.add(state)
    return TaskQuery(
        states=frozenset(states), queue=request.queue, worker_id=request.worker_id,
        task_name=request.task_name, page_size=request.page_size, page_token=request.page_token,
    )


def task_page(tasks: list[TaskView], next_page_token: str) -> scheduler_pb2.ListTasksResponse:
    """A page of ListTasks."""
    return scheduler_pb2.ListTasksResponse(tasks=[task_message(view) for view in tasks],
                                           next_page_token=next_page_token)


def record_message(record: TaskRecord) -> scheduler_pb2.Task:
    """A stored record with no live view (its priority as given)."""
    return task_message(TaskView(record, record.priority))


def queue_stats(view: QueueView) -> scheduler_pb2.QueueStats:
    return scheduler_pb2.QueueStats(
        name=view.spec.name,
        pending=view.pending,
        processing=view.processing,
        completed=view.completed,
        failed=view.failed,
        cancelled=view.cancelled,
        paused=view.paused,
        mean_wait_seconds=view.mean_wait_seconds,
        mean_run_seconds=view.mean_run_seconds,
        workers=view.workers,
        default_priority=view.spec.default_priority,
        task_class=_TASK_CLASS[view.spec.task_class],
        warnings=list(view.warnings),
        error_rate=view.error_rate,
        retrying=view.retrying,
        dead_lettered=view.dead_lettered,
        wait_p50_seconds=view.wait_p50_seconds,
        wait_p95_seconds=view.wait_p95_seconds,
        submitted_per_second=view.submitted_per_second,
        finished_per_second=view.finished_per_second,
    )


def explanation(result: Explanation) -> scheduler_pb2.ExplainPlacementResponse:
    return scheduler_pb2.ExplainPlacementResponse(
        task_class=_TASK_CLASS[result.task_class],
        queue=result.queue,
        priority=result.priority,
        effective_priority=result.effective_priority,
        classification_reason=result.classification_reason,
        chosen_worker_id=result.chosen.worker_id if result.chosen else "",
        summary=result.summary,
        workers=[
            scheduler_pb2.WorkerVerdict(
                worker_id=v.worker_id,
                eligible=v.eligible,
                rejected_by=v.rejected_by,
                rejection_reason="" if v.eligible else v.reason,
                score=v.score,
                terms=[
                    scheduler_pb2.ScoreTerm(
                        name=name, value=value, weight=weight,
                        contribution=-value * weight if name == "failures" else value * weight,
                    )
                    for name, value, weight in v.terms
                ],
            )
            for v in result.verdicts
        ],
    )


def dead_letter(record: TaskRecord, dead_lettered_at: float) -> scheduler_pb2.DeadLetter:
    letter = scheduler_pb2.DeadLetter(task=record_message(record), reason=record.reason)
    stamp = _timestamp(dead_lettered_at)
    if stamp is not None:
        letter.dead_lettered_at.CopyFrom(stamp)
    return letter


def gpus_from(devices: object) -> list[Gpu]:
    return [
        Gpu(index=g.index, name=g.name, uuid=g.uuid, memory_total_mb=g.memory_total_mb,
            memory_free_mb=g.memory_free_mb, utilization_percent=g.utilization_percent)
        for g in devices  # type: ignore[attr-defined]
    ]


def registration(hello: agent_pb2.AgentHello) -> WorkerRegistration:
    caps = hello.capabilities
    return WorkerRegistration(
        worker_id=hello.worker_id,
        worker_type=_WORKER_TYPE_PLAIN.get(hello.worker_type),
        slots=hello.slots,
        labels=dict(hello.labels),
        gpus=gpus_from(caps.gpus),
        gpu_simulated=caps.gpu_simulated,
        capabilities=caps,
        registered_tasks=list(hello.registered_tasks),
        agent_instance=hello.agent_instance,
    )


def worker_state(state: str) -> Any:
    """An operator state ("ready", "drained", ...) as the proto enum."""
    return _WORKER_STATE.get(state, scheduler_pb2.WORKER_STATE_UNSPECIFIED)


def worker_info(worker: Worker, status: OperatorStatus | None = None) -> scheduler_pb2.WorkerInfo:
    """A worker as ListWorkers shows it; `status` is its operator status now (the engine's
    `Queries.operator_status`), computed from the wall clock when not given."""
    if status is None:
        status = worker.operator_status(time.time())
    info = scheduler_pb2.WorkerInfo(
        worker_id=worker.worker_id,
        worker_type=_WORKER_TYPE[worker.worker_type],
        status=_LIVENESS[worker.liveness],
        labels=worker.labels,
        slots=worker.slots,
        free_slots=worker.free_slots,
        task_ids=sorted(worker.in_flight),
        celery_queue=worker_queue(worker.worker_id),
        state=worker_state(status.state),
        state_reason=status.reason,
    )
    if worker.capabilities is not None:
        info.capabilities.CopyFrom(worker.capabilities)
    if worker.load is not None:
        info.load.CopyFrom(worker.load)
    for name, seconds in (
        ("last_heartbeat_at", worker.last_heartbeat_wall),
        ("state_since", status.since),
        ("quarantined_until", worker.quarantined_until if status.state == "quarantined" else 0.0),
    ):
        stamp = _timestamp(seconds)
        if stamp is not None:
            getattr(info, name).CopyFrom(stamp)
    return info


def command_message(command: tuple[object, ...]) -> agent_pb2.ConnectResponse:
    """An engine outbox command ("drain", reason) / ("cancel", task_id, attempt) as a proto."""
    if command[0] == "drain":
        return agent_pb2.ConnectResponse(drain=agent_pb2.DrainCommand(reason=str(command[1])))
    if command[0] == "cancel":
        return agent_pb2.ConnectResponse(
            cancel=agent_pb2.CancelCommand(task_id=str(command[1]), attempt=int(command[2]))  # type: ignore[call-overload]
        )
    raise ValueError(f"unknown agent command {command[0]!r}")
