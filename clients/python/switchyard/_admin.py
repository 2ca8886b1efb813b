"""The operator's calls of :class:`~switchyard.client.SchedulerClient`: queue statistics and
pause/resume, the worker list, drain/undrain and unquarantine, and the dead-letter queue (list,
retry, purge).

They are a group of their own so the client class stays readable; callers use them as
``client.queues()``, ``client.drain(...)``, ``client.dead_letters()`` like every other call.

Every call follows the leader on ``UNAVAILABLE`` (see :mod:`switchyard._connection`). Reads,
pause, resume, drain, undrain and unquarantine are also retried after ``DEADLINE_EXCEEDED``, as
running them twice does no harm (a retried undrain may report ``changed=False``: the first run
did it); ``retry_dead_letter`` and ``purge_dead_letters`` are not (a second run would answer
differently), and after a connection lost mid-call their retry may report the first run's work as
``FailedPrecondition``/``NotFound`` or as 0 purged.
"""

from __future__ import annotations

from collections.abc import Iterable

from switchyard._connection import Connection
from switchyard._convert import enum_label
from switchyard._fleet_views import QueueView, WorkerChange, WorkerView
from switchyard._task_views import DeadLetterView, TaskView
from switchyard.exceptions import InvalidArgument, NotFound
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


def _worker_change(
    response: scheduler_pb2.UndrainWorkerResponse | scheduler_pb2.UnquarantineWorkerResponse,
) -> WorkerChange:
    return WorkerChange(
        worker=WorkerView.from_proto(response.worker),
        previous_state=enum_label(scheduler_pb2.WorkerState, response.previous_state, "WORKER_STATE_"),
        changed=response.changed,
    )


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

    def worker(self, worker_id: str) -> WorkerView:
        """One worker the scheduler knows; raises :class:`NotFound` for any other id."""
        for view in self.workers():
            if view.worker_id == worker_id:
                return view
        raise NotFound(f"worker {worker_id!r} is not known to the scheduler")

    def drain(self, worker_id: str) -> WorkerView:
        """Give the worker nothing new; it finishes what it has (its state turns ``"draining"``,
        then ``"drained"`` once idle). Draining a drained worker changes nothing."""
        response: scheduler_pb2.DrainWorkerResponse = self._call(
            "DrainWorker", scheduler_pb2.DrainWorkerRequest(worker_id=worker_id)
        )
        return WorkerView.from_proto(response.worker)

    def undrain(self, worker_id: str) -> WorkerChange:
        """Give a drained (or draining) worker new work again. Idempotent: on a worker that is
        not drained it changes nothing (``changed`` is False)."""
        response: scheduler_pb2.UndrainWorkerResponse = self._call(
            "UndrainWorker", scheduler_pb2.UndrainWorkerRequest(worker_id=worker_id)
        )
        return _worker_change(response)

    def unquarantine(self, worker_id: str) -> WorkerChange:
        """End a worker's quarantine now and forget its recent failures. Idempotent: on a worker
        that is not quarantined only the failures are forgotten (``changed`` is False)."""
        response: scheduler_pb2.UnquarantineWorkerResponse = self._call(
            "UnquarantineWorker", scheduler_pb2.UnquarantineWorkerRequest(worker_id=worker_id)
        )
        return _worker_change(response)

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
