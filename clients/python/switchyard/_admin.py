"""The operator's calls of :class:`~switchyard.client.SchedulerClient`: queue statistics and
pause/resume, the worker list and drain, and the dead-letter queue (list, retry, purge).

They are a group of their own so the client class stays readable; callers use them as
``client.queues()``, ``client.drain(...)``, ``client.dead_letters()`` like every other call.

Every call follows the leader on ``UNAVAILABLE`` (see :mod:`switchyard._connection`). Reads,
pause, resume and drain are also retried after ``DEADLINE_EXCEEDED``, as running them twice does
no harm; ``retry_dead_letter`` and ``purge_dead_letters`` are not (a second run would answer
differently), and after a connection lost mid-call their retry may report the first run's work as
``FailedPrecondition``/``NotFound`` or as 0 purged.
"""

from __future__ import annotations

from collections.abc import Iterable

from switchyard._connection import Connection
from switchyard._fleet_views import QueueView, WorkerView
from switchyard._task_views import DeadLetterView, TaskView
from switchyard.exceptions import InvalidArgument
from switchyard.v1 import scheduler_pb2

__all__ = ["AdminCalls", "build_purge_request"]


def build_purge_request(
    task_ids: Iterable[str] = (), queue: str = "", all: bool = False
) -> scheduler_pb2.PurgeDeadLettersRequest:
    """The ``PurgeDeadLettersRequest`` for :meth:`AdminCalls.purge_dead_letters`: exactly
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


class AdminCalls(Connection):
    """Queue, worker and dead-letter administration over a :class:`Connection`."""

    # --- queues -------------------------------------------------------------------------

    def queues(self) -> list[QueueView]:
        """Statistics of every logical queue, in configuration order."""
        response: scheduler_pb2.ListQueuesResponse = self._call(
            "ListQueues", scheduler_pb2.ListQueuesRequest()
        )
        return [QueueView.from_proto(queue) for queue in response.queues]

    def pause(self, queue: str) -> QueueView:
        """Stop handing out the queue's tasks; submissions are still accepted."""
        response: scheduler_pb2.PauseQueueResponse = self._call(
            "PauseQueue", scheduler_pb2.PauseQueueRequest(queue=queue)
        )
        return QueueView.from_proto(response.queue)

    def resume(self, queue: str) -> QueueView:
        """Hand out a paused queue's tasks again."""
        response: scheduler_pb2.ResumeQueueResponse = self._call(
            "ResumeQueue", scheduler_pb2.ResumeQueueRequest(queue=queue)
        )
        return QueueView.from_proto(response.queue)

    # --- workers ------------------------------------------------------------------------

    def workers(self) -> list[WorkerView]:
        """Workers the scheduler knows: connected, or within their grace period."""
        response: scheduler_pb2.ListWorkersResponse = self._call(
            "ListWorkers", scheduler_pb2.ListWorkersRequest()
        )
        return [WorkerView.from_proto(worker) for worker in response.workers]

    def drain(self, worker_id: str) -> WorkerView:
        """Give the worker nothing new; it finishes what it has."""
        response: scheduler_pb2.DrainWorkerResponse = self._call(
            "DrainWorker", scheduler_pb2.DrainWorkerRequest(worker_id=worker_id)
        )
        return WorkerView.from_proto(response.worker)

    # --- dead letters -------------------------------------------------------------------

    def dead_letters(self, queue: str = "", limit: int = 100) -> tuple[list[DeadLetterView], int]:
        """Tasks that failed for good, newest first, and how many are kept in all.

        ``queue`` filters by logical queue ("" for all); ``limit`` caps the list (the scheduler
        allows at most 1000). ``total`` counts every kept dead letter matching the filter.
        """
        if limit < 0:
            raise InvalidArgument(f"limit must be >= 0; got {limit}")
        response: scheduler_pb2.ListDeadLettersResponse = self._call(
            "ListDeadLetters", scheduler_pb2.ListDeadLettersRequest(queue=queue, limit=limit)
        )
        return [DeadLetterView.from_proto(letter) for letter in response.dead_letters], response.total

    def retry_dead_letter(self, task_id: str) -> TaskView:
        """Put a dead-lettered task back to pending with a fresh retry budget; returns it."""
        response: scheduler_pb2.RetryDeadLetterResponse = self._call(
            "RetryDeadLetter", scheduler_pb2.RetryDeadLetterRequest(task_id=task_id), repeatable=False
        )
        return TaskView.from_proto(response.task)

    def purge_dead_letters(self, task_ids: Iterable[str] = (), queue: str = "", all: bool = False) -> int:
        """Delete dead letters: these ``task_ids``, every one of ``queue``, or ``all=True``
        (exactly one of them). Returns how many were deleted."""
        response: scheduler_pb2.PurgeDeadLettersResponse = self._call(
            "PurgeDeadLetters", build_purge_request(task_ids, queue, all), repeatable=False
        )
        return response.purged
