"""Every unary operation of the client as data: the RPC, its request, whether it is safe to
repeat, and how its response becomes what the caller gets.

The synchronous :class:`~switchyard.client.SchedulerClient` and the asyncio
:class:`~switchyard.aio.AsyncSchedulerClient` both build their calls here and differ only in how
they run them (blocking, or awaited); so a request is checked and built in one place, and an
argument a client can check itself raises :class:`~switchyard.exceptions.InvalidArgument` here,
before any network call, in both. Nothing in this module touches a channel.

    call = get_task("t-1")            # UnaryCall[TaskView]
    view = call.result(stub.GetTask(call.request))
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from switchyard._convert import enum_label
from switchyard._fleet_views import QueueView, WorkerChange, WorkerView
from switchyard._options import TaskOptions, build_submit_request
from switchyard._task_views import CancelResult, DeadLetterView, Explanation, SubmitResult, TaskView
from switchyard.exceptions import InvalidArgument, NotFound
from switchyard.v1 import scheduler_pb2

__all__ = [
    "AUTO_IDEMPOTENCY_KEY_PREFIX",
    "MAX_PAGE_SIZE",
    "TASK_STATES",
    "ResultT",
    "TaskPages",
    "UnaryCall",
    "build_purge_request",
    "cancel_task",
    "change_key",
    "dead_letters",
    "drain",
    "explain",
    "explain_task",
    "find_worker",
    "get_task",
    "list_tasks",
    "pause",
    "purge_dead_letters",
    "queues",
    "resume",
    "retry_dead_letter",
    "state_enum_names",
    "submit",
    "submit_batch",
    "undrain",
    "unquarantine",
    "watch_request",
    "workers",
]

ResultT = TypeVar("ResultT")

AUTO_IDEMPOTENCY_KEY_PREFIX = "switchyard-auto-"
"""Start of the idempotency keys the client makes up for submissions that have none."""

TASK_STATES: tuple[str, ...] = tuple(
    value.name.removeprefix("TASK_STATE_").lower()
    for value in scheduler_pb2.TaskState.DESCRIPTOR.values
    if value.number != scheduler_pb2.TASK_STATE_UNSPECIFIED
)
"""Every task state by name (``"pending"``, ``"running"``...), in life-cycle order."""

MAX_PAGE_SIZE = 500
"""Most tasks the scheduler returns per ``list_tasks`` page."""


@dataclass(frozen=True)
class UnaryCall(Generic[ResultT]):
    """One unary call, ready to run: ``result(response)`` is what the client method returns."""

    rpc: str
    """Name of the ``Scheduler`` method, e.g. ``"GetTask"``."""
    request: Message
    """The request message."""
    result: Callable[[Any], ResultT]
    """Turns the response message into the caller's view of it."""
    repeatable: bool = True
    """Running it twice does no harm, so it is retried after ``DEADLINE_EXCEEDED`` too."""


# --- submission ---------------------------------------------------------------------------


def _give_idempotency_key(request: scheduler_pb2.SubmitTaskRequest, make_up_keys: bool) -> bool:
    """Give ``request`` a fresh idempotency key if it has none (and the client makes them up);
    True when it did. One key per logical submission: every retry reuses it."""
    if request.idempotency_key or not make_up_keys:
        return False
    request.idempotency_key = AUTO_IDEMPOTENCY_KEY_PREFIX + secrets.token_hex(16)
    return True


def _submit_result(response: scheduler_pb2.SubmitTaskResponse, made_up_key: bool) -> SubmitResult:
    result = SubmitResult.from_proto(response)
    if made_up_key and result.deduplicated:
        # Only this call's own earlier attempt can hold a key made up for it: to the caller
        # the task is new, not a duplicate of something they submitted before.
        result = dataclasses.replace(result, deduplicated=False)
    return result


def _batch_item_request(task_name: str, **options: Any) -> scheduler_pb2.SubmitTaskRequest:
    """One ``submit_batch`` item (``submit``'s arguments by name) as a request."""
    return build_submit_request(task_name, TaskOptions(**options))


def submit(task_name: str, options: TaskOptions, *, make_up_keys: bool) -> UnaryCall[SubmitResult]:
    """``SubmitTask``; repeatable when the request carries an idempotency key (its own, or one
    made up here when ``make_up_keys``)."""
    request = build_submit_request(task_name, options)
    made_up = _give_idempotency_key(request, make_up_keys)
    return UnaryCall(
        "SubmitTask",
        request,
        lambda response: _submit_result(response, made_up),
        repeatable=bool(request.idempotency_key),
    )


def submit_batch(items: Iterable[Mapping[str, Any]], *, make_up_keys: bool) -> UnaryCall[list[SubmitResult]]:
    """``SubmitBatch`` of items holding ``submit``'s arguments by name (``task_name``, ``kwargs``,
    ``priority``...); repeatable when every item has an idempotency key."""
    requests = [_batch_item_request(**item) for item in items]
    made_up = [_give_idempotency_key(request, make_up_keys) for request in requests]

    def results(response: scheduler_pb2.SubmitBatchResponse) -> list[SubmitResult]:
        return [_submit_result(result, key) for result, key in zip(response.results, made_up, strict=False)]

    return UnaryCall(
        "SubmitBatch",
        scheduler_pb2.SubmitBatchRequest(tasks=requests),
        results,
        repeatable=all(request.idempotency_key for request in requests),
    )


# --- tasks --------------------------------------------------------------------------------


def _task(response: scheduler_pb2.GetTaskResponse | scheduler_pb2.RetryDeadLetterResponse) -> TaskView:
    return TaskView.from_proto(response.task)


def get_task(task_id: str) -> UnaryCall[TaskView]:
    """``GetTask``: the task's current state."""
    return UnaryCall("GetTask", scheduler_pb2.GetTaskRequest(task_id=task_id), _task)


def watch_request(task_id: str) -> scheduler_pb2.WatchTaskRequest:
    """The request of the ``WatchTask`` stream (run by each client's own resuming loop)."""
    return scheduler_pb2.WatchTaskRequest(task_id=task_id)


def change_key(view: TaskView) -> tuple[object, ...]:
    """What makes a task's new version news to a watcher (the scheduler's own rule): a resumed
    watch starts with the current state, which is no news when it was the last one seen."""
    return (view.state, view.attempt, view.progress, view.progress_message, view.worker_id)


def _cancel_result(response: scheduler_pb2.CancelTaskResponse) -> CancelResult:
    return CancelResult(
        task=TaskView.from_proto(response.task),
        previous_state=enum_label(scheduler_pb2.TaskState, response.previous_state, "TASK_STATE_"),
    )


def cancel_task(task_id: str) -> UnaryCall[CancelResult]:
    """``CancelTask``; not repeatable (a second run after the first took effect is refused)."""
    return UnaryCall(
        "CancelTask", scheduler_pb2.CancelTaskRequest(task_id=task_id), _cancel_result, repeatable=False
    )


def state_enum_names(states: Iterable[str] | str) -> list[str]:
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


def _task_page(response: scheduler_pb2.ListTasksResponse) -> tuple[list[TaskView], str]:
    return [TaskView.from_proto(task) for task in response.tasks], response.next_page_token


def list_tasks(
    states: Iterable[str] | str = (),
    *,
    queue: str = "",
    worker_id: str = "",
    task_name: str = "",
    page_size: int = 50,
    page_token: str = "",
) -> UnaryCall[tuple[list[TaskView], str]]:
    """``ListTasks``: one page of tasks and the next page's token."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE}; got {page_size}")
    request = scheduler_pb2.ListTasksRequest(
        states=state_enum_names(states), queue=queue, worker_id=worker_id, task_name=task_name,
        page_size=page_size, page_token=page_token,
    )
    return UnaryCall("ListTasks", request, _task_page)


@dataclass
class TaskPages:
    """Where ``iter_tasks`` is in the listing: the next page's size and token, and how many
    tasks it has yielded out of ``limit`` (None: all)."""

    limit: int | None
    page_token: str = ""
    yielded: int = 0
    finished: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise InvalidArgument(f"limit must be >= 0; got {self.limit}")

    def next_page_size(self) -> int | None:
        """How many tasks to ask for next; None when the listing is done."""
        if self.finished or (self.limit is not None and self.yielded >= self.limit):
            return None
        if self.limit is None:
            return MAX_PAGE_SIZE
        return min(MAX_PAGE_SIZE, max(1, self.limit - self.yielded))

    def take(self, tasks: list[TaskView], next_page_token: str) -> list[TaskView]:
        """The tasks of a page that are within the limit; remembers the next page's token."""
        kept = tasks if self.limit is None else tasks[: self.limit - self.yielded]
        self.yielded += len(kept)
        self.page_token = next_page_token
        self.finished = not next_page_token
        return kept


# --- placement ----------------------------------------------------------------------------


def explain(task_name: str, options: TaskOptions) -> UnaryCall[Explanation]:
    """``ExplainPlacement`` of a task not submitted: the same request ``submit`` would send."""
    request = build_submit_request(task_name, options)
    return UnaryCall("ExplainPlacement", scheduler_pb2.ExplainPlacementRequest(task=request), Explanation.from_proto)


def explain_task(task_id: str) -> UnaryCall[Explanation]:
    """``ExplainPlacement`` of an existing (pending) task."""
    return UnaryCall(
        "ExplainPlacement", scheduler_pb2.ExplainPlacementRequest(task_id=task_id), Explanation.from_proto
    )


# --- queues -------------------------------------------------------------------------------


def queues() -> UnaryCall[list[QueueView]]:
    """``ListQueues``: statistics of every logical queue."""
    return UnaryCall(
        "ListQueues",
        scheduler_pb2.ListQueuesRequest(),
        lambda response: [QueueView.from_proto(queue) for queue in response.queues],
    )


def _queue(response: scheduler_pb2.PauseQueueResponse | scheduler_pb2.ResumeQueueResponse) -> QueueView:
    return QueueView.from_proto(response.queue)


def pause(queue: str) -> UnaryCall[QueueView]:
    """``PauseQueue``."""
    return UnaryCall("PauseQueue", scheduler_pb2.PauseQueueRequest(queue=queue), _queue)


def resume(queue: str) -> UnaryCall[QueueView]:
    """``ResumeQueue``."""
    return UnaryCall("ResumeQueue", scheduler_pb2.ResumeQueueRequest(queue=queue), _queue)


# --- workers ------------------------------------------------------------------------------


def workers() -> UnaryCall[list[WorkerView]]:
    """``ListWorkers``: the workers the scheduler knows."""
    return UnaryCall(
        "ListWorkers",
        scheduler_pb2.ListWorkersRequest(),
        lambda response: [WorkerView.from_proto(worker) for worker in response.workers],
    )


def find_worker(views: Iterable[WorkerView], worker_id: str) -> WorkerView:
    """The worker ``worker_id`` among ``views``; NotFound when it is not there."""
    for view in views:
        if view.worker_id == worker_id:
            return view
    raise NotFound(f"worker {worker_id!r} is not known to the scheduler")


def drain(worker_id: str) -> UnaryCall[WorkerView]:
    """``DrainWorker``."""
    return UnaryCall(
        "DrainWorker",
        scheduler_pb2.DrainWorkerRequest(worker_id=worker_id),
        lambda response: WorkerView.from_proto(response.worker),
    )


def _worker_change(
    response: scheduler_pb2.UndrainWorkerResponse | scheduler_pb2.UnquarantineWorkerResponse,
) -> WorkerChange:
    return WorkerChange(
        worker=WorkerView.from_proto(response.worker),
        previous_state=enum_label(scheduler_pb2.WorkerState, response.previous_state, "WORKER_STATE_"),
        changed=response.changed,
    )


def undrain(worker_id: str) -> UnaryCall[WorkerChange]:
    """``UndrainWorker``."""
    return UnaryCall("UndrainWorker", scheduler_pb2.UndrainWorkerRequest(worker_id=worker_id), _worker_change)


def unquarantine(worker_id: str) -> UnaryCall[WorkerChange]:
    """``UnquarantineWorker``."""
    return UnaryCall(
        "UnquarantineWorker", scheduler_pb2.UnquarantineWorkerRequest(worker_id=worker_id), _worker_change
    )


# --- dead letters -------------------------------------------------------------------------


def dead_letters(queue: str = "", limit: int = 100) -> UnaryCall[tuple[list[DeadLetterView], int]]:
    """``ListDeadLetters``: the kept dead letters (newest first) and how many there are in all."""
    if limit < 0:
        raise InvalidArgument(f"limit must be >= 0; got {limit}")
    return UnaryCall(
        "ListDeadLetters",
        scheduler_pb2.ListDeadLettersRequest(queue=queue, limit=limit),
        lambda response: ([DeadLetterView.from_proto(letter) for letter in response.dead_letters], response.total),
    )


def retry_dead_letter(task_id: str) -> UnaryCall[TaskView]:
    """``RetryDeadLetter``; not repeatable."""
    return UnaryCall(
        "RetryDeadLetter", scheduler_pb2.RetryDeadLetterRequest(task_id=task_id), _task, repeatable=False
    )


def build_purge_request(
    task_ids: Iterable[str] = (), queue: str = "", all: bool = False
) -> scheduler_pb2.PurgeDeadLettersRequest:
    """The ``PurgeDeadLettersRequest`` for ``purge_dead_letters``: exactly one of ``task_ids``,
    ``queue`` or ``all=True``."""
    if isinstance(task_ids, str):
        raise InvalidArgument("task_ids must be a sequence of task ids, not a string")
    ids = list(task_ids)
    chosen = sum((bool(ids), bool(queue), bool(all)))
    if chosen != 1:
        raise InvalidArgument(
            "say what to purge: task_ids, a queue, or all=True (exactly one of them)"
        )
    return scheduler_pb2.PurgeDeadLettersRequest(task_ids=ids, queue=queue, all=all)


def purge_dead_letters(task_ids: Iterable[str] = (), queue: str = "", all: bool = False) -> UnaryCall[int]:
    """``PurgeDeadLetters``: how many were deleted; not repeatable."""
    return UnaryCall(
        "PurgeDeadLetters",
        build_purge_request(task_ids, queue, all),
        lambda response: int(response.purged),
        repeatable=False,
    )
