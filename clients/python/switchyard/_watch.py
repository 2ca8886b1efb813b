"""What a resuming watch keeps across reconnects, shared by the synchronous and asyncio clients.

Each client runs its own loop (one iterates a blocking stream and sleeps, the other awaits);
everything they decide — the deadline, which states are news, how a broken stream reads and
whether it is worth reconnecting — lives here once.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from switchyard._calls import change_key, watch_request
from switchyard._connection import leader_hint
from switchyard._task_views import TaskView
from switchyard.exceptions import DeadlineExceeded, SwitchyardError, Unavailable, from_rpc_error
from switchyard.v1 import scheduler_pb2


class WatchProgress:
    """One watch of one task: its request, its deadline and the last state it yielded."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        self.task_id = task_id
        self.request: scheduler_pb2.WatchTaskRequest = watch_request(task_id)
        self._timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._last_key: tuple[object, ...] | None = None

    @property
    def delivered(self) -> bool:
        """True once a state was yielded: a later break is a loss to announce, not a first failure."""
        return self._last_key is not None

    def remaining(self) -> float | None:
        """Seconds left for the next stream (None: no deadline); DeadlineExceeded when none are."""
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._expired()
        return left

    def news(self, response: Any) -> TaskView | None:
        """The task in `response`, or None when it is the state yielded last (a resumed stream
        starts with the current state)."""
        view = TaskView.from_proto(response.task)
        key = change_key(view)
        if key == self._last_key:
            return None
        self._last_key = key
        return view

    def ended_early(self) -> SwitchyardError:
        """The stream closed cleanly before a terminal state: reconnect as for UNAVAILABLE."""
        return Unavailable(f"the stream ended before task {self.task_id} finished")

    def broken(self, exc: grpc.RpcError) -> tuple[SwitchyardError, str | None]:
        """A stream that failed: the error to retry on and the leader a standby named; raises
        what is not worth a reconnect (the deadline, or any status but UNAVAILABLE)."""
        error = from_rpc_error(exc)
        if error.status_code is grpc.StatusCode.DEADLINE_EXCEEDED and self._deadline is not None:
            raise self._expired() from None
        if error.status_code is not grpc.StatusCode.UNAVAILABLE:
            raise error from None
        return error, leader_hint(exc)

    def _expired(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"task {self.task_id} did not finish within {self._timeout:g} s")
