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

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import grpc

from switchyard import _calls
from switchyard._admin import AdminCalls
from switchyard._calls import (
    AUTO_IDEMPOTENCY_KEY_PREFIX,
    MAX_PAGE_SIZE,
    TASK_STATES,
    TaskPages,
)
from switchyard._connection import Failover
from switchyard._options import TaskOptions, TaskOptionsDict
from switchyard._task_views import CancelResult, Explanation, SubmitResult, TaskView
from switchyard._watch import WatchProgress
from switchyard.exceptions import (
    SwitchyardError,
)

# The constants are defined with the requests they shape (switchyard._calls).
__all__ = ["AUTO_IDEMPOTENCY_KEY_PREFIX", "MAX_PAGE_SIZE", "TASK_STATES", "SchedulerClient"]


class SchedulerClient(AdminCalls):
    """A connection to a Switchyard scheduler, or to several that share one Redis.

    ``SchedulerClient(target=DEFAULT_TARGET, *, timeout=10.0, max_message_mb=16,
    keepalive_time_s=60.0, channel=None, failover_timeout=30.0, auto_idempotency_keys=True,
    tls=None, tls_ca=None, tls_cert=None, tls_key=None, tls_server_name=None, token=None,
    token_file=None)``:
    ``target`` is ``HOST:PORT``, or several schedulers as ``"HOST:PORT,HOST:PORT"`` (or a list);
    ``timeout`` the deadline, in seconds, of every unary call; ``max_message_mb`` raises gRPC's
    send/receive limits so large payloads and results fit. Use it as a context manager, or call
    :meth:`close`. Queue, worker and dead-letter calls come from
    :class:`~switchyard._admin.AdminCalls`.

    A scheduler with TLS and tokens (docs/security.md)::

        SchedulerClient("sched.internal:50051", tls_ca="ca.crt", token_file="/run/secrets/token")

    ``tls_ca`` turns TLS on (``tls=True`` alone trusts the system's roots), ``tls_cert`` and
    ``tls_key`` add a client certificate (mTLS), and the token (``token``, or ``token_file``,
    read again when it changes) goes with every call to every address. Left out, they come
    from ``SWITCHYARD_TOKEN``, ``SWITCHYARD_TOKEN_FILE`` and ``SWITCHYARD_TLS_CA``/``_CERT``/
    ``_KEY``/``_SERVER_NAME``. A call the scheduler refuses raises :class:`Unauthenticated` (no
    or unknown token) or :class:`PermissionDenied` (the token's role may not do it).

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
        options_given = TaskOptions(args=args, kwargs=kwargs, **options)
        return self._run(_calls.submit(task_name, options_given, make_up_keys=self.auto_idempotency_keys))

    def submit_batch(self, tasks: Iterable[Mapping[str, Any]]) -> list[SubmitResult]:
        """Submit several tasks atomically (all accepted or none), results in order.

        Each item holds :meth:`submit`'s arguments by name, e.g.
        ``{"task_name": "text.summarize", "kwargs": {"text": "..."}, "priority": 8}``. Items
        without an idempotency key get one as in :meth:`submit`.
        """
        return self._run(_calls.submit_batch(tasks, make_up_keys=self.auto_idempotency_keys))

    # --- tasks --------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskView:
        """The task's current state."""
        return self._run(_calls.get_task(task_id))

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
        progress = WatchProgress(task_id, timeout)
        address = self.current_address
        failover: Failover | None = None
        while True:
            hint: str | None = None
            call = self._stub_for(address).WatchTask(progress.request, timeout=progress.remaining())
            try:
                for response in call:
                    self._answered(address)
                    if failover is not None:
                        failover.recovered(address)
                        failover = None
                    view = progress.news(response)
                    if view is None:
                        continue
                    yield view
                    if view.done:
                        return
                error: SwitchyardError = progress.ended_early()
            except grpc.RpcError as exc:
                error, hint = progress.broken(exc)
            finally:
                call.cancel()
            # Announce at once only a stream that was delivering: a first connection that fails
            # is an error to report, not a loss to recover from.
            failover = failover or self._failover(announce_at_once=progress.delivered)
            address = self._wait_for_next_try(failover, address, error, hint)

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
        return self._run(_calls.cancel_task(task_id))

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
        return self._run(_calls.list_tasks(states, queue=queue, worker_id=worker_id, task_name=task_name,
                                           page_size=page_size, page_token=page_token))

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
        pages = TaskPages(limit, page_token)
        while (wanted := pages.next_page_size()) is not None:
            tasks, next_token = self.list_tasks(states, queue=queue, worker_id=worker_id, task_name=task_name,
                                                page_size=wanted, page_token=pages.page_token)
            yield from pages.take(tasks, next_token)

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
        return self._run(_calls.explain(task_name, TaskOptions(args=args, kwargs=kwargs, **options)))

    def explain_task(self, task_id: str) -> Explanation:
        """Where an existing (pending) task would be placed now, and why."""
        return self._run(_calls.explain_task(task_id))
