"""Synchronous Python client for the Switchyard ``Scheduler`` gRPC service.

:class:`SchedulerClient` is the public face: the task calls live here (submit, follow, cancel,
explain), the operator's calls in :mod:`switchyard._admin`, the gRPC plumbing in
:mod:`switchyard._connection`. Everything it returns is a frozen view (``switchyard.TaskView``
...), never a bare protobuf (each view keeps it as ``.raw``).

    with SchedulerClient("127.0.0.1:50051") as client:
        submitted = client.submit("media.transcribe_audio", kwargs={"path": "a.mp3"}, content_type="audio")
        task = client.wait(submitted.task_id, timeout=60)
        print(task.state, task.worker_id, task.result)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import grpc

from switchyard._admin import AdminCalls
from switchyard._convert import enum_label
from switchyard._options import TaskOptions, TaskOptionsDict, build_submit_request
from switchyard._task_views import CancelResult, Explanation, SubmitResult, TaskView
from switchyard.exceptions import DeadlineExceeded, from_rpc_error
from switchyard.v1 import scheduler_pb2

__all__ = ["SchedulerClient"]


def _batch_item_request(task_name: str, **options: Any) -> scheduler_pb2.SubmitTaskRequest:
    """One ``submit_batch`` item (``submit``'s arguments by name) as a request."""
    return build_submit_request(task_name, TaskOptions(**options))


class SchedulerClient(AdminCalls):
    """A connection to one Switchyard scheduler.

    ``SchedulerClient(target=DEFAULT_TARGET, *, timeout=10.0, max_message_mb=16,
    keepalive_time_s=60.0, channel=None)``: ``target`` is ``HOST:PORT``; ``timeout`` the
    deadline, in seconds, of every unary call; ``max_message_mb`` raises gRPC's send/receive
    limits so large payloads and results fit. Use it as a context manager, or call :meth:`close`.
    Queue, worker and dead-letter calls come from :class:`~switchyard._admin.AdminCalls`.
    """

    # --- submission ---------------------------------------------------------------------

    def submit(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[TaskOptionsDict],
    ) -> SubmitResult:
        """Submit one task; returns at once with its id and where the scheduler queued it.

        ``options`` are the fields of :class:`~switchyard._options.TaskOptions` by name, e.g.
        ``content_type="audio"``, ``gpu="required"``, ``priority=8``, ``labels={"zone": "eu"}``,
        ``soft_time_limit=30``. Bad options raise :class:`InvalidArgument` before any call.
        """
        request = build_submit_request(task_name, TaskOptions(args=args, kwargs=kwargs, **options))
        response: scheduler_pb2.SubmitTaskResponse = self._call(self._stub.SubmitTask, request)
        return SubmitResult.from_proto(response)

    def submit_batch(self, tasks: Iterable[Mapping[str, Any]]) -> list[SubmitResult]:
        """Submit several tasks atomically (all accepted or none), results in order.

        Each item holds :meth:`submit`'s arguments by name, e.g.
        ``{"task_name": "text.summarize", "kwargs": {"text": "..."}, "priority": 8}``.
        """
        requests = [_batch_item_request(**spec) for spec in tasks]
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
        **options: Unpack[TaskOptionsDict],
    ) -> Explanation:
        """Dry run of :meth:`submit` with the same arguments: how the task would be classified,
        which worker would take it now, and why every other worker would not. Stores nothing."""
        request = build_submit_request(task_name, TaskOptions(args=args, kwargs=kwargs, **options))
        return self._explain(scheduler_pb2.ExplainPlacementRequest(task=request))

    def explain_task(self, task_id: str) -> Explanation:
        """Where an existing (pending) task would be placed now, and why."""
        return self._explain(scheduler_pb2.ExplainPlacementRequest(task_id=task_id))

    def _explain(self, request: scheduler_pb2.ExplainPlacementRequest) -> Explanation:
        response: scheduler_pb2.ExplainPlacementResponse = self._call(self._stub.ExplainPlacement, request)
        return Explanation.from_proto(response)
