"""Synchronous Python client for the Switchyard ``Scheduler`` gRPC service.

:class:`SchedulerClient` is the public face: the task calls live here (submit, follow, cancel,
explain), the operator's calls in :mod:`switchyard._admin`, the gRPC plumbing (and following the
leader among several schedulers) in :mod:`switchyard._connection`. Everything it returns is a
frozen view (``switchyard.TaskView`` ...), never a bare protobuf (each view keeps it as ``.raw``).

    with SchedulerClient("10.0.0.4:50051,10.0.0.5:50051") as client:
        submitted = client.submit("media.transcribe_audio", kwargs={"path": "a.mp3"}, content_type="audio")
        task = client.wait(submitted.task_id, timeout=60)
        print(task.state, task.worker_id, task.result)
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import grpc

from switchyard._admin import AdminCalls
from switchyard._connection import Failover, leader_hint
from switchyard._convert import enum_label
from switchyard._options import TaskOptions, TaskOptionsDict, build_submit_request
from switchyard._task_views import CancelResult, Explanation, SubmitResult, TaskView
from switchyard.exceptions import (
    DeadlineExceeded,
    InvalidArgument,
    SwitchyardError,
    Unavailable,
    from_rpc_error,
)
from switchyard.v1 import scheduler_pb2

__all__ = ["TASK_STATES", "SchedulerClient"]

AUTO_IDEMPOTENCY_KEY_PREFIX = "switchyard-auto-"
"""Start of the idempotency keys the client makes up for submissions that have none."""

TASK_STATES: tuple[str, ...] = tuple(
    value.name.removeprefix("TASK_STATE_").lower()
    for value in scheduler_pb2.TaskState.DESCRIPTOR.values
    if value.number != scheduler_pb2.TASK_STATE_UNSPECIFIED
)
"""Every task state by name (``"pending"``, ``"running"``...), in life-cycle order."""

MAX_PAGE_SIZE = 500
"""Most tasks the scheduler returns per :meth:`SchedulerClient.list_tasks` page."""


def _state_enum_names(states: Iterable[str] | str) -> list[str]:
    """Task state names (``"running"``) as the proto's enum names (``"TASK_STATE_RUNNING"``);
    InvalidArgument naming the valid ones."""
    names = [states] if isinstance(states, str) else list(states)
    enum_names = []
    for name in names:
        label = name.strip().lower().removeprefix("task_state_")
        if label not in TASK_STATES:
            raise InvalidArgument(f"unknown task state {name!r}; valid states: {', '.join(TASK_STATES)}")
        enum_names.append(f"TASK_STATE_{label.upper()}")
    return enum_names


def _batch_item_request(task_name: str, **options: Any) -> scheduler_pb2.SubmitTaskRequest:
    """One ``submit_batch`` item (``submit``'s arguments by name) as a request."""
    return build_submit_request(task_name, TaskOptions(**options))


def _change_key(view: TaskView) -> tuple[object, ...]:
    """What makes a task's new version news to a watcher (the scheduler's own rule): a resumed
    watch starts with the current state, which is no news when it was the last one seen."""
    return (view.state, view.attempt, view.progress, view.progress_message, view.worker_id)


class SchedulerClient(AdminCalls):
    """A connection to a Switchyard scheduler, or to several that share one Redis.

    ``SchedulerClient(target=DEFAULT_TARGET, *, timeout=10.0, max_message_mb=16,
    keepalive_time_s=60.0, channel=None, failover_timeout=30.0, auto_idempotency_keys=True)``:
    ``target`` is ``HOST:PORT``, or several schedulers as ``"HOST:PORT,HOST:PORT"`` (or a list);
    ``timeout`` the deadline, in seconds, of every unary call; ``max_message_mb`` raises gRPC's
    send/receive limits so large payloads and results fit. Use it as a context manager, or call
    :meth:`close`. Queue, worker and dead-letter calls come from
    :class:`~switchyard._admin.AdminCalls`.

    Several schedulers: one leads, the others answer ``UNAVAILABLE`` and name the leader. Every
    call finds the leader and follows it on failover, for up to ``failover_timeout`` seconds
    (backing off between rounds; see :mod:`switchyard._connection`), and later calls go straight
    to the address that answered. Only ``UNAVAILABLE`` is retried, plus ``DEADLINE_EXCEEDED`` for
    calls that are safe to repeat (reads, submissions with an idempotency key, pause, resume,
    drain); an error such as ``INVALID_ARGUMENT`` is raised at once. A submission without an
    idempotency key gets one made up by the client (``auto_idempotency_keys``), so a retry after
    a connection lost mid-call returns the task the first attempt created instead of a second
    one. :meth:`watch` and :meth:`wait` survive a restart or a failover: they reconnect and carry
    on, logging ``lost the scheduler at ...; reconnecting...`` and ``reconnected to ...`` on the
    ``switchyard.client`` logger.
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
        Without ``idempotency_key`` the client makes one up (unless ``auto_idempotency_keys``
        is off), so that retrying after a lost connection cannot create the task twice.
        """
        request = build_submit_request(task_name, TaskOptions(args=args, kwargs=kwargs, **options))
        made_up = self._give_idempotency_key(request)
        response: scheduler_pb2.SubmitTaskResponse = self._call(
            "SubmitTask", request, repeatable=bool(request.idempotency_key)
        )
        return self._submit_result(response, made_up)

    def submit_batch(self, tasks: Iterable[Mapping[str, Any]]) -> list[SubmitResult]:
        """Submit several tasks atomically (all accepted or none), results in order.

        Each item holds :meth:`submit`'s arguments by name, e.g.
        ``{"task_name": "text.summarize", "kwargs": {"text": "..."}, "priority": 8}``. Items
        without an idempotency key get one as in :meth:`submit`.
        """
        requests = [_batch_item_request(**spec) for spec in tasks]
        made_up = [self._give_idempotency_key(request) for request in requests]
        response: scheduler_pb2.SubmitBatchResponse = self._call(
            "SubmitBatch",
            scheduler_pb2.SubmitBatchRequest(tasks=requests),
            repeatable=all(request.idempotency_key for request in requests),
        )
        return [
            self._submit_result(result, item_made_up)
            for result, item_made_up in zip(response.results, made_up, strict=False)
        ]

    def _give_idempotency_key(self, request: scheduler_pb2.SubmitTaskRequest) -> bool:
        """Give ``request`` a fresh idempotency key if it has none (and the client makes them
        up); True when it did. One key per logical submission: every retry reuses it."""
        if request.idempotency_key or not self.auto_idempotency_keys:
            return False
        request.idempotency_key = AUTO_IDEMPOTENCY_KEY_PREFIX + uuid.uuid4().hex
        return True

    @staticmethod
    def _submit_result(response: scheduler_pb2.SubmitTaskResponse, made_up_key: bool) -> SubmitResult:
        result = SubmitResult.from_proto(response)
        if made_up_key and result.deduplicated:
            # Only this call's own earlier attempt can hold a key made up for it: to the caller
            # the task is new, not a duplicate of something they submitted before.
            result = dataclasses.replace(result, deduplicated=False)
        return result

    # --- tasks --------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskView:
        """The task's current state."""
        response: scheduler_pb2.GetTaskResponse = self._call(
            "GetTask", scheduler_pb2.GetTaskRequest(task_id=task_id)
        )
        return TaskView.from_proto(response.task)

    def watch(self, task_id: str, *, timeout: float | None = None) -> Iterator[TaskView]:
        """The task now and after every change; ends after a terminal state.

        When the stream breaks (the scheduler restarts, a standby takes over) the watch
        reconnects, to the leader when a standby names it, with backoff for up to
        ``failover_timeout`` seconds, and resumes: the scheduler sends the current state first,
        which is skipped when it is the last one yielded, so nothing is yielded twice. The loss
        is logged as a warning and the reconnection as info on the ``switchyard.client`` logger.
        ``timeout`` bounds the whole watch (None: no deadline) and raises
        :class:`DeadlineExceeded`. Closing the iterator early cancels the call.
        """
        request = scheduler_pb2.WatchTaskRequest(task_id=task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        address = self.current_address
        failover: Failover | None = None
        last_key: tuple[object, ...] | None = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"task {task_id} did not finish within {timeout:g} s")
            hint: str | None = None
            call = self._stub_for(address).WatchTask(request, timeout=remaining)
            try:
                for response in call:
                    self._answered(address)
                    if failover is not None:
                        failover.recovered(address)
                        failover = None
                    view = TaskView.from_proto(response.task)
                    key = _change_key(view)
                    if key == last_key:
                        continue
                    last_key = key
                    yield view
                    if view.done:
                        return
                error: SwitchyardError = Unavailable(f"the stream ended before task {task_id} finished")
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if error.status_code is grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    raise DeadlineExceeded(f"task {task_id} did not finish within {timeout:g} s") from None
                if error.status_code is not grpc.StatusCode.UNAVAILABLE:
                    raise error from None
                hint = leader_hint(exc)
            finally:
                call.cancel()
            # Announce at once only a stream that was delivering: a first connection that fails
            # is an error to report, not a loss to recover from.
            failover = failover or self._failover(announce_at_once=last_key is not None)
            address = failover.next_address(address, error, hint)

    def wait(self, task_id: str, timeout: float | None = None) -> TaskView:
        """Block until the task reaches a terminal state and return it.

        Raises :class:`DeadlineExceeded` when ``timeout`` seconds pass first. Follows
        :meth:`watch`, so it rides out a scheduler restart or failover the same way.
        """
        for view in self.watch(task_id, timeout=timeout):
            if view.done:
                return view
        # watch ends only after a terminal state or with an error; this is a safety net.
        return self.get(task_id)

    def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task: a pending task never runs, a running one is revoked.

        Not retried after ``DEADLINE_EXCEEDED``; retried after ``UNAVAILABLE``, where a
        connection lost after the scheduler cancelled makes the retry raise
        :class:`FailedPrecondition` (the task has ended) although the cancel took effect.
        """
        response: scheduler_pb2.CancelTaskResponse = self._call(
            "CancelTask", scheduler_pb2.CancelTaskRequest(task_id=task_id), repeatable=False
        )
        return CancelResult(
            task=TaskView.from_proto(response.task),
            previous_state=enum_label(scheduler_pb2.TaskState, response.previous_state, "TASK_STATE_"),
        )

    def list_tasks(
        self,
        states: Iterable[str] | str = (),
        *,
        queue: str = "",
        worker_id: str = "",
        task_name: str = "",
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[list[TaskView], str]:
        """One page of tasks, newest (last submitted) first, and the token of the next page
        ("" when there are no more).

        Every filter given must match: ``states`` (names from :data:`TASK_STATES`; ``"running"``
        is the "active tasks" view), ``queue``, ``worker_id`` (the worker of the current or last
        attempt), ``task_name``. ``page_size`` is 1-500. A page can be short, even empty, and
        still have a next token: the scheduler examines a bounded number of tasks per call. Pass
        the token back, with the same filters, for the next page (or use :meth:`iter_tasks`).
        A pending task carries its stored reason; :meth:`get` gives its live wait reason.
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE}; got {page_size}")
        request = scheduler_pb2.ListTasksRequest(
            states=_state_enum_names(states), queue=queue, worker_id=worker_id, task_name=task_name,
            page_size=page_size, page_token=page_token,
        )
        response: scheduler_pb2.ListTasksResponse = self._call("ListTasks", request)
        return [TaskView.from_proto(task) for task in response.tasks], response.next_page_token

    def iter_tasks(
        self,
        states: Iterable[str] | str = (),
        *,
        queue: str = "",
        worker_id: str = "",
        task_name: str = "",
        limit: int | None = None,
        page_token: str = "",
    ) -> Iterator[TaskView]:
        """Tasks as :meth:`list_tasks` finds them, newest first, following the pages until there
        are no more or ``limit`` tasks were yielded."""
        if limit is not None and limit < 0:
            raise InvalidArgument(f"limit must be >= 0; got {limit}")
        yielded = 0
        while limit is None or yielded < limit:
            wanted = MAX_PAGE_SIZE if limit is None else min(MAX_PAGE_SIZE, max(1, limit - yielded))
            tasks, page_token = self.list_tasks(states, queue=queue, worker_id=worker_id, task_name=task_name,
                                                page_size=wanted, page_token=page_token)
            for task in tasks[: None if limit is None else limit - yielded]:
                yielded += 1
                yield task
            if not page_token:
                return

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
        response: scheduler_pb2.ExplainPlacementResponse = self._call("ExplainPlacement", request)
        return Explanation.from_proto(response)
