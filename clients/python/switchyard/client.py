"""Synchronous Python client for the Switchyard ``Scheduler`` gRPC service.

This module owns all of the client's gRPC plumbing: the channel (keepalive, message size
limits), the stub, deadlines, and the mapping of every ``grpc.RpcError`` to a typed
:mod:`switchyard.exceptions` error. Everything it returns is a frozen view from
:mod:`switchyard._models`, never a bare protobuf (each view keeps it as ``.raw``).

    with SchedulerClient("127.0.0.1:50051") as client:
        submitted = client.submit("media.transcribe_audio", kwargs={"path": "a.mp3"}, content_type="audio")
        task = client.wait(submitted.task_id, timeout=60)
        print(task.state, task.worker_id, task.result)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import grpc

from switchyard._models import (
    CancelResult,
    DeadLetterView,
    Explanation,
    QueueView,
    SubmitResult,
    TaskView,
    WorkerView,
    enum_label,
    gpu_requirement_value,
)
from switchyard.exceptions import DeadlineExceeded, InvalidArgument, from_rpc_error
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc

__all__ = ["DEFAULT_TARGET", "SchedulerClient"]

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where the scheduler listens unless told otherwise."""


def _channel_options(max_message_mb: int, keepalive_time_s: float) -> list[tuple[str, int]]:
    max_bytes = max_message_mb * 1024 * 1024
    return [
        # Tasks may carry ~10 MiB payloads; gRPC's default 4 MiB receive cap would reject them.
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.max_receive_message_length", max_bytes),
        # A half-open TCP connection can look alive for hours; keepalive pings during calls
        # (watch streams especially) find out. The scheduler must permit this ping rate.
        ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _encode_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} must be JSON-serialisable: {exc}") from exc


def build_submit_request(
    task_name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    args_json: str | None = None,
    kwargs_json: str | None = None,
    content_type: str = "",
    gpu: str | int = "unspecified",
    gpu_memory_mb: int = 0,
    priority: int = 0,
    queue: str = "",
    idempotency_key: str = "",
    labels: Mapping[str, str] | None = None,
    user_initiated: bool = False,
    retry_policy: str = "",
    soft_time_limit: float | None = None,
    hard_time_limit: float | None = None,
    preferred_labels: Mapping[str, str] | None = None,
    batch_size: int = 0,
) -> scheduler_pb2.SubmitTaskRequest:
    """The ``SubmitTaskRequest`` for :meth:`SchedulerClient.submit`'s arguments.

    ``args``/``kwargs`` are JSON-encoded; ``args_json``/``kwargs_json`` pass JSON text through
    unchanged (the scheduler validates it) and may not be combined with their counterparts.
    Time limits are seconds; None (or 0) uses the queue's.
    """
    if args_json is not None and args:
        raise InvalidArgument("give args or args_json, not both")
    if kwargs_json is not None and kwargs:
        raise InvalidArgument("give kwargs or kwargs_json, not both")
    if isinstance(args, str | bytes):
        raise InvalidArgument("args must be a sequence of arguments, not a string; use args_json= for JSON text")
    try:
        gpu_value = gpu_requirement_value(gpu)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc
    soft = _time_limit(soft_time_limit, "soft_time_limit")
    hard = _time_limit(hard_time_limit, "hard_time_limit")
    if hard and soft > hard:
        raise InvalidArgument(f"soft_time_limit ({soft:g} s) must not exceed hard_time_limit ({hard:g} s)")
    if batch_size < 0:
        raise InvalidArgument(f"batch_size must be >= 0; got {batch_size}")
    return scheduler_pb2.SubmitTaskRequest(
        task_name=task_name,
        args_json=args_json if args_json is not None else (_encode_json(list(args), "args") if args else ""),
        kwargs_json=kwargs_json if kwargs_json is not None else (_encode_json(dict(kwargs), "kwargs") if kwargs else ""),
        content_type=content_type,
        gpu=cast(scheduler_pb2.GpuRequirement, gpu_value),
        gpu_memory_mb=gpu_memory_mb,
        priority=priority,
        queue=queue,
        idempotency_key=idempotency_key,
        labels=dict(labels or {}),
        user_initiated=user_initiated,
        retry_policy=retry_policy,
        soft_time_limit_seconds=soft,
        hard_time_limit_seconds=hard,
        batch_size=batch_size,
        preferred_labels=dict(preferred_labels or {}),
    )


def _time_limit(value: float | None, what: str) -> float:
    if value is None:
        return 0.0
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0; got {value!r}")
    return seconds


def build_purge_request(
    task_ids: Iterable[str] = (), queue: str = "", all: bool = False
) -> scheduler_pb2.PurgeDeadLettersRequest:
    """The ``PurgeDeadLettersRequest`` for :meth:`SchedulerClient.purge_dead_letters`: exactly
    one of ``task_ids``, ``queue`` or ``all=True``."""
    if isinstance(task_ids, str):
        raise InvalidArgument("task_ids must be a sequence of task ids, not a string")
    ids = list(task_ids)
    chosen = sum((bool(ids), bool(queue), bool(all)))
    if chosen != 1:
        raise InvalidArgument(
            "say what to purge: task_ids, a queue, or all=True (exactly one of them)"
        )
    return scheduler_pb2.PurgeDeadLettersRequest(task_ids=ids, queue=queue, all=all)


class SchedulerClient:
    """A connection to one Switchyard scheduler.

    ``target`` is ``HOST:PORT`` (any gRPC target string works). ``timeout`` is the deadline, in
    seconds, of every unary call; ``max_message_mb`` raises gRPC's send/receive limits so large
    payloads and results fit. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        max_message_mb: int = 16,
        keepalive_time_s: float = 60.0,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._owns_channel = channel is None
        self._channel = channel or grpc.insecure_channel(
            target, options=_channel_options(max_message_mb, keepalive_time_s)
        )
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (a channel passed in by the caller stays open)."""
        if self._owns_channel:
            self._channel.close()

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # --- submission ---------------------------------------------------------------------

    def submit(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        args_json: str | None = None,
        kwargs_json: str | None = None,
        content_type: str = "",
        gpu: str | int = "unspecified",
        gpu_memory_mb: int = 0,
        priority: int = 0,
        queue: str = "",
        idempotency_key: str = "",
        labels: Mapping[str, str] | None = None,
        user_initiated: bool = False,
        retry_policy: str = "",
        soft_time_limit: float | None = None,
        hard_time_limit: float | None = None,
        preferred_labels: Mapping[str, str] | None = None,
        batch_size: int = 0,
    ) -> SubmitResult:
        """Submit one task; returns at once with its id and where the scheduler queued it.

        ``gpu`` is ``"unspecified"`` (let classification decide), ``"none"``, ``"preferred"``
        or ``"required"``. ``priority`` 0 lets the scheduler choose, else 1 (lowest) to 10.
        ``labels`` must all match a worker's; ``preferred_labels`` only raise the score of
        workers that have them. ``retry_policy`` names a policy of the scheduler's configuration
        ("" uses the queue's); ``soft_time_limit``/``hard_time_limit`` are seconds (None uses the
        queue's); ``batch_size`` is the size of the batch the task belongs to (> 10 lowers its
        priority by 1).
        """
        request = build_submit_request(
            task_name,
            args,
            kwargs,
            args_json=args_json,
            kwargs_json=kwargs_json,
            content_type=content_type,
            gpu=gpu,
            gpu_memory_mb=gpu_memory_mb,
            priority=priority,
            queue=queue,
            idempotency_key=idempotency_key,
            labels=labels,
            user_initiated=user_initiated,
            retry_policy=retry_policy,
            soft_time_limit=soft_time_limit,
            hard_time_limit=hard_time_limit,
            preferred_labels=preferred_labels,
            batch_size=batch_size,
        )
        response: scheduler_pb2.SubmitTaskResponse = self._call(self._stub.SubmitTask, request)
        return SubmitResult.from_proto(response)

    def submit_batch(self, tasks: Iterable[Mapping[str, Any]]) -> list[SubmitResult]:
        """Submit several tasks atomically (all accepted or none), results in order.

        Each item holds :meth:`submit`'s arguments by name, e.g.
        ``{"task_name": "text.summarize", "kwargs": {"text": "..."}, "priority": 8}``.
        """
        requests = [build_submit_request(**dict(spec)) for spec in tasks]
        response: scheduler_pb2.SubmitBatchResponse = self._call(
            self._stub.SubmitBatch, scheduler_pb2.SubmitBatchRequest(tasks=requests)
        )
        return [SubmitResult.from_proto(result) for result in response.results]

    # --- tasks --------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskView:
        """The task's current state."""
        response: scheduler_pb2.GetTaskResponse = self._call(
            self._stub.GetTask, scheduler_pb2.GetTaskRequest(task_id=task_id)
        )
        return TaskView.from_proto(response.task)

    def watch(self, task_id: str, *, timeout: float | None = None) -> Iterator[TaskView]:
        """The task now and after every change; ends after a terminal state.

        ``timeout`` bounds the whole stream (None: no deadline). Closing the iterator early
        cancels the call.
        """
        call = self._stub.WatchTask(scheduler_pb2.WatchTaskRequest(task_id=task_id), timeout=timeout)
        try:
            for response in call:
                yield TaskView.from_proto(response.task)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def wait(self, task_id: str, timeout: float | None = None) -> TaskView:
        """Block until the task reaches a terminal state and return it.

        Raises :class:`DeadlineExceeded` when ``timeout`` seconds pass first. A stream that ends
        early (e.g. the scheduler restarted) is re-opened until the deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                for view in self.watch(task_id, timeout=remaining):
                    if view.done:
                        return view
            except DeadlineExceeded:
                break
            view = self.get(task_id)
            if view.done:
                return view
            time.sleep(0.2)
        raise DeadlineExceeded(f"task {task_id} did not finish within {timeout} s")

    def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task: a pending task never runs, a running one is revoked."""
        response: scheduler_pb2.CancelTaskResponse = self._call(
            self._stub.CancelTask, scheduler_pb2.CancelTaskRequest(task_id=task_id)
        )
        return CancelResult(
            task=TaskView.from_proto(response.task),
            previous_state=enum_label(scheduler_pb2.TaskState, response.previous_state, "TASK_STATE_"),
        )

    # --- placement ----------------------------------------------------------------------

    def explain(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        args_json: str | None = None,
        kwargs_json: str | None = None,
        content_type: str = "",
        gpu: str | int = "unspecified",
        gpu_memory_mb: int = 0,
        priority: int = 0,
        queue: str = "",
        idempotency_key: str = "",
        labels: Mapping[str, str] | None = None,
        user_initiated: bool = False,
        retry_policy: str = "",
        soft_time_limit: float | None = None,
        hard_time_limit: float | None = None,
        preferred_labels: Mapping[str, str] | None = None,
        batch_size: int = 0,
    ) -> Explanation:
        """Dry run of :meth:`submit` with the same arguments: how the task would be classified,
        which worker would take it now, and why every other worker would not. Stores nothing."""
        request = build_submit_request(
            task_name,
            args,
            kwargs,
            args_json=args_json,
            kwargs_json=kwargs_json,
            content_type=content_type,
            gpu=gpu,
            gpu_memory_mb=gpu_memory_mb,
            priority=priority,
            queue=queue,
            idempotency_key=idempotency_key,
            labels=labels,
            user_initiated=user_initiated,
            retry_policy=retry_policy,
            soft_time_limit=soft_time_limit,
            hard_time_limit=hard_time_limit,
            preferred_labels=preferred_labels,
            batch_size=batch_size,
        )
        return self._explain(scheduler_pb2.ExplainPlacementRequest(task=request))

    def explain_task(self, task_id: str) -> Explanation:
        """Where an existing (pending) task would be placed now, and why."""
        return self._explain(scheduler_pb2.ExplainPlacementRequest(task_id=task_id))

    def _explain(self, request: scheduler_pb2.ExplainPlacementRequest) -> Explanation:
        response: scheduler_pb2.ExplainPlacementResponse = self._call(self._stub.ExplainPlacement, request)
        return Explanation.from_proto(response)

    # --- dead letters -------------------------------------------------------------------

    def dead_letters(self, queue: str = "", limit: int = 100) -> tuple[list[DeadLetterView], int]:
        """Tasks that failed for good, newest first, and how many are kept in all.

        ``queue`` filters by logical queue ("" for all); ``limit`` caps the list (the scheduler
        allows at most 1000). ``total`` counts every kept dead letter matching the filter.
        """
        if limit < 0:
            raise InvalidArgument(f"limit must be >= 0; got {limit}")
        response: scheduler_pb2.ListDeadLettersResponse = self._call(
            self._stub.ListDeadLetters, scheduler_pb2.ListDeadLettersRequest(queue=queue, limit=limit)
        )
        return [DeadLetterView.from_proto(letter) for letter in response.dead_letters], response.total

    def retry_dead_letter(self, task_id: str) -> TaskView:
        """Put a dead-lettered task back to pending with a fresh retry budget; returns it."""
        response: scheduler_pb2.RetryDeadLetterResponse = self._call(
            self._stub.RetryDeadLetter, scheduler_pb2.RetryDeadLetterRequest(task_id=task_id)
        )
        return TaskView.from_proto(response.task)

    def purge_dead_letters(self, task_ids: Iterable[str] = (), queue: str = "", all: bool = False) -> int:
        """Delete dead letters: these ``task_ids``, every one of ``queue``, or ``all=True``
        (exactly one of them). Returns how many were deleted."""
        response: scheduler_pb2.PurgeDeadLettersResponse = self._call(
            self._stub.PurgeDeadLetters, build_purge_request(task_ids, queue, all)
        )
        return response.purged

    # --- queues -------------------------------------------------------------------------

    def queues(self) -> list[QueueView]:
        """Statistics of every logical queue, in configuration order."""
        response: scheduler_pb2.ListQueuesResponse = self._call(
            self._stub.ListQueues, scheduler_pb2.ListQueuesRequest()
        )
        return [QueueView.from_proto(queue) for queue in response.queues]

    def pause(self, queue: str) -> QueueView:
        """Stop handing out the queue's tasks; submissions are still accepted."""
        response: scheduler_pb2.PauseQueueResponse = self._call(
            self._stub.PauseQueue, scheduler_pb2.PauseQueueRequest(queue=queue)
        )
        return QueueView.from_proto(response.queue)

    def resume(self, queue: str) -> QueueView:
        """Hand out a paused queue's tasks again."""
        response: scheduler_pb2.ResumeQueueResponse = self._call(
            self._stub.ResumeQueue, scheduler_pb2.ResumeQueueRequest(queue=queue)
        )
        return QueueView.from_proto(response.queue)

    # --- workers ------------------------------------------------------------------------

    def workers(self) -> list[WorkerView]:
        """Workers the scheduler knows: connected, or within their grace period."""
        response: scheduler_pb2.ListWorkersResponse = self._call(
            self._stub.ListWorkers, scheduler_pb2.ListWorkersRequest()
        )
        return [WorkerView.from_proto(worker) for worker in response.workers]

    def drain(self, worker_id: str) -> WorkerView:
        """Give the worker nothing new; it finishes what it has."""
        response: scheduler_pb2.DrainWorkerResponse = self._call(
            self._stub.DrainWorker, scheduler_pb2.DrainWorkerRequest(worker_id=worker_id)
        )
        return WorkerView.from_proto(response.worker)
