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

from switchyard import _calls
from switchyard._calls import build_purge_request
from switchyard._connection import Connection
from switchyard._fleet_views import QueueView, WorkerChange, WorkerView
from switchyard._task_views import DeadLetterView, TaskView

# build_purge_request is defined with the other requests (switchyard._calls).
__all__ = ["AdminCalls", "build_purge_request"]


class AdminCalls(Connection):
    """Queue, worker and dead-letter administration over a :class:`Connection`."""

    # --- queues -------------------------------------------------------------------------

    def queues(self) -> list[QueueView]:
        """Statistics of every logical queue, in configuration order."""
        return self._run(_calls.queues())

    def pause(self, queue: str) -> QueueView:
        """Stop handing out the queue's tasks; submissions are still accepted."""
        return self._run(_calls.pause(queue))

    def resume(self, queue: str) -> QueueView:
        """Hand out a paused queue's tasks again."""
        return self._run(_calls.resume(queue))

    # --- workers ------------------------------------------------------------------------

    def workers(self) -> list[WorkerView]:
        """Workers the scheduler knows: connected, or within their grace period."""
        return self._run(_calls.workers())

    def worker(self, worker_id: str) -> WorkerView:
        """One worker the scheduler knows; raises :class:`NotFound` for any other id."""
        return _calls.find_worker(self.workers(), worker_id)

    def drain(self, worker_id: str) -> WorkerView:
        """Give the worker nothing new; it finishes what it has (its state turns ``"draining"``,
        then ``"drained"`` once idle). Draining a drained worker changes nothing."""
        return self._run(_calls.drain(worker_id))

    def undrain(self, worker_id: str) -> WorkerChange:
        """Give a drained (or draining) worker new work again. Idempotent: on a worker that is
        not drained it changes nothing (``changed`` is False)."""
        return self._run(_calls.undrain(worker_id))

    def unquarantine(self, worker_id: str) -> WorkerChange:
        """End a worker's quarantine now and forget its recent failures. Idempotent: on a worker
        that is not quarantined only the failures are forgotten (``changed`` is False)."""
        return self._run(_calls.unquarantine(worker_id))

    # --- dead letters -------------------------------------------------------------------

    def dead_letters(self, queue: str = "", limit: int = 100) -> tuple[list[DeadLetterView], int]:
        """Tasks that failed for good, newest first, and how many are kept in all.

        ``queue`` filters by logical queue ("" for all); ``limit`` caps the list (the scheduler
        allows at most 1000). ``total`` counts every kept dead letter matching the filter.
        """
        return self._run(_calls.dead_letters(queue, limit))

    def retry_dead_letter(self, task_id: str) -> TaskView:
        """Put a dead-lettered task back to pending with a fresh retry budget; returns it."""
        return self._run(_calls.retry_dead_letter(task_id))

    def purge_dead_letters(self, task_ids: Iterable[str] = (), queue: str = "", all: bool = False) -> int:
        """Delete dead letters: these ``task_ids``, every one of ``queue``, or ``all=True``
        (exactly one of them). Returns how many were deleted."""
        return self._run(_calls.purge_dead_letters(task_ids, queue, all))
