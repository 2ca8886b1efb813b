"""Asyncio Python client for the Switchyard ``Scheduler`` service, on ``grpc.aio``.

:class:`AsyncSchedulerClient` has the operations and options of the synchronous
:class:`~switchyard.client.SchedulerClient`, each one awaited, for services that submit work from
async code (FastAPI, aiohttp, an asyncio worker)::

    from switchyard.aio import AsyncSchedulerClient

    async with AsyncSchedulerClient("10.0.0.4:50051,10.0.0.5:50051") as client:
        submitted = await client.submit("text.summarize", kwargs={"text": "..."}, content_type="text")
        async for task in client.watch(submitted.task_id, timeout=60):
            print(task.state, task.progress)

Both clients share everything but the waiting: the requests, their checks and the views they
return come from :mod:`switchyard._calls`, the leader-following rules from
:mod:`switchyard._failover`, the TLS and token settings from :mod:`switchyard.security`. So a
call raises the same typed errors (:mod:`switchyard.exceptions`), is retried in the same cases
(``UNAVAILABLE`` always, ``DEADLINE_EXCEEDED`` when safe to repeat), follows the leader the
same way (it awaits the backoff instead of sleeping), and logs the same lines on the
``switchyard.client`` logger.

A client's channels belong to the event loop that first used them: use one client per loop
(typically one per application, opened at start-up and closed at shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, Unpack

import grpc
import grpc.aio

from switchyard import _calls
from switchyard._calls import ResultT, TaskPages, UnaryCall
from switchyard._connection import (
    DEFAULT_FAILOVER_TIMEOUT,
    DEFAULT_TARGET,
    _channel_options,
    leader_hint,
    parse_addresses,
)
from switchyard._failover import Failover, should_retry
from switchyard._fleet_views import QueueView, WorkerChange, WorkerView
from switchyard._options import TaskOptions, TaskOptionsDict
from switchyard._task_views import CancelResult, DeadLetterView, Explanation, SubmitResult, TaskView
from switchyard._watch import WatchProgress
from switchyard.exceptions import (
    InvalidArgument,
    SwitchyardError,
    from_rpc_error,
)
from switchyard.security import resolve_tls, resolve_token, warn_plaintext_token
from switchyard.v1 import scheduler_pb2_grpc

__all__ = ["AsyncSchedulerClient"]


class AsyncSchedulerClient:
    """An asyncio connection to a Switchyard scheduler, or to several that share one Redis.

    ``AsyncSchedulerClient(target=DEFAULT_TARGET, *, timeout=10.0, max_message_mb=16,
    keepalive_time_s=60.0, channel=None, failover_timeout=30.0, auto_idempotency_keys=True,
    tls=None, tls_ca=None, tls_cert=None, tls_key=None, tls_server_name=None, token=None,
    token_file=None)`` takes the arguments of :class:`~switchyard.client.SchedulerClient`, and
    they mean the same: ``target`` is ``HOST:PORT`` or several as ``"HOST:PORT,HOST:PORT"``;
    ``timeout`` the deadline of every unary call (each attempt); ``failover_timeout`` how long a
    call keeps following the leader after ``UNAVAILABLE``; ``auto_idempotency_keys`` gives a
    submission without a key one of the client's own, so a retry cannot create the task twice;
    the TLS and token arguments (and, left out, the ``SWITCHYARD_TOKEN``/``SWITCHYARD_TLS_*``
    variables) as :mod:`switchyard.security` reads them. ``channel`` is a ``grpc.aio.Channel``
    to use for the first address (it stays open when the client closes).

    Use it as ``async with``, or ``await client.close()``.
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        max_message_mb: int = 16,
        keepalive_time_s: float = 60.0,
        channel: grpc.aio.Channel | None = None,
        failover_timeout: float = DEFAULT_FAILOVER_TIMEOUT,
        auto_idempotency_keys: bool = True,
        tls: bool | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if failover_timeout < 0:
            raise InvalidArgument(f"failover_timeout must be >= 0 seconds; got {failover_timeout!r}")
        self.addresses: tuple[str, ...] = parse_addresses(target)
        """Every scheduler address given, in the order they are tried."""
        self.target = ",".join(self.addresses)
        """The addresses as one comma-separated string (one address: just it)."""
        self.timeout = timeout
        self.failover_timeout = failover_timeout
        self.auto_idempotency_keys = auto_idempotency_keys
        self._options = _channel_options(max_message_mb, keepalive_time_s)
        self.tls = resolve_tls(tls=tls, ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key,
                               server_name=tls_server_name)
        """The TLS settings every channel uses; None: plaintext."""
        self._tls_credentials = self.tls.credentials() if self.tls is not None else None
        # Sent as call metadata (not call credentials), so the token goes with every call
        # alike: TLS or plaintext, on the client's channels or one passed in.
        self._token = resolve_token(token, token_file)
        self._given_channel = channel
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, scheduler_pb2_grpc.SchedulerStub] = {}
        self._current = self.addresses[0]
        self._reached = False

    @property
    def current_address(self) -> str:
        """Where the next call goes first: the address that answered last (the leader)."""
        return self._current

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels the client opened (a channel passed in stays open); calls in
        flight on them end with :class:`~switchyard.exceptions.Cancelled`."""
        channels, self._channels = list(self._channels.values()), {}
        self._stubs.clear()
        for channel in channels:
            await channel.close(None)

    # --- plumbing -----------------------------------------------------------------------

    def _stub_for(self, address: str) -> scheduler_pb2_grpc.SchedulerStub:
        """The stub for ``address``; its channel opens on first use (in the running loop)."""
        stub = self._stubs.get(address)
        if stub is None:
            if self._given_channel is not None and address == self.addresses[0]:
                channel = self._given_channel
            else:
                channel = self._channels[address] = self._open_channel(address)
            stub = self._stubs[address] = scheduler_pb2_grpc.SchedulerStub(channel)  # type: ignore[no-untyped-call]
        return stub

    def _open_channel(self, address: str) -> grpc.aio.Channel:
        if self.tls is not None:
            assert self._tls_credentials is not None
            options = [*self._options, *self.tls.channel_options()]
            return grpc.aio.secure_channel(address, self._tls_credentials, options=options)
        if self._token is not None:
            warn_plaintext_token(address, self._token)
        return grpc.aio.insecure_channel(address, options=self._options)

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The request metadata of every call: the bearer token, when there is one (a token
        file is re-read when it changed, as in the synchronous client)."""
        return self._token.metadata() if self._token is not None else None

    def _answered(self, address: str) -> None:
        self._current = address
        self._reached = True

    def _failover(self, *, announce_at_once: bool = False) -> Failover:
        return Failover(self, announce_at_once=announce_at_once)

    @staticmethod
    async def _wait_for_next_try(failover: Failover, failed: str, error: SwitchyardError, hint: str | None) -> str:
        """Where ``failover`` says to try next, after awaiting the backoff it asks for."""
        next_try = failover.next_try(failed, error, hint)
        if next_try.delay > 0:
            await asyncio.sleep(next_try.delay)
        return next_try.address

    async def _call(self, rpc: str, request: Any, *, repeatable: bool = True) -> Any:
        """One unary call of the ``Scheduler`` method named ``rpc``, following the leader
        (the same rules as :meth:`switchyard._connection.Connection._call`)."""
        address = self._current
        failover: Failover | None = None
        while True:
            method = getattr(self._stub_for(address), rpc)
            try:
                response = await method(request, timeout=self.timeout, metadata=self._metadata())
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if not should_retry(error, repeatable):
                    self._reached = True  # a scheduler answered, even if with an error
                    raise error from None
                failover = failover or self._failover()
                address = await self._wait_for_next_try(failover, address, error, leader_hint(exc))
                continue
            self._answered(address)
            if failover is not None:
                failover.recovered(address)
            return response

    async def _run(self, call: UnaryCall[ResultT]) -> ResultT:
        return call.result(await self._call(call.rpc, call.request, repeatable=call.repeatable))

    # --- submission ---------------------------------------------------------------------

    async def submit(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[TaskOptionsDict],
    ) -> SubmitResult:
        """Submit one task; returns at once with its id and where the scheduler queued it.
        Options and checks as :meth:`SchedulerClient.submit <switchyard.client.SchedulerClient.submit>`."""
        options_given = TaskOptions(args=args, kwargs=kwargs, **options)
        return await self._run(_calls.submit(task_name, options_given, make_up_keys=self.auto_idempotency_keys))

    async def submit_batch(self, tasks: Iterable[Mapping[str, Any]]) -> list[SubmitResult]:
        """Submit several tasks atomically (all accepted or none), results in order; each item
        holds :meth:`submit`'s arguments by name."""
        return await self._run(_calls.submit_batch(tasks, make_up_keys=self.auto_idempotency_keys))

    # --- tasks --------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskView:
        """The task's current state."""
        return await self._run(_calls.get_task(task_id))

    async def watch(self, task_id: str, *, timeout: float | None = None) -> AsyncGenerator[TaskView, None]:
        """The task now and after every change, as an async iterator that ends after a terminal
        state.

        A stream that breaks (a restart, a standby taking over) is reconnected, to the leader a
        standby names, with backoff for up to ``failover_timeout`` seconds, and resumed without
        yielding a state twice; the loss and the reconnection are logged as in the synchronous
        client. ``timeout`` bounds the whole watch and raises :class:`DeadlineExceeded`.
        Leaving early cancels the call once the iterator is closed: wrap it in
        ``contextlib.aclosing`` to close it at once.
        """
        progress = WatchProgress(task_id, timeout)
        address = self._current
        failover: Failover | None = None
        while True:
            hint: str | None = None
            call = self._stub_for(address).WatchTask(progress.request, timeout=progress.remaining(),
                                                     metadata=self._metadata())
            try:
                async for response in call:
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
            # As in the synchronous client: announce at once only a stream that was delivering.
            failover = failover or self._failover(announce_at_once=progress.delivered)
            address = await self._wait_for_next_try(failover, address, error, hint)

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskView:
        """Wait until the task reaches a terminal state and return it; rides out a restart or
        failover like :meth:`watch`. Raises :class:`DeadlineExceeded` after ``timeout`` s."""
        async with contextlib.aclosing(self.watch(task_id, timeout=timeout)) as views:
            async for view in views:
                if view.done:
                    return view
        # watch ends only after a terminal state or with an error; this is a safety net.
        return await self.get(task_id)

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task: a pending task never runs, a running one is revoked. Retried after
        ``UNAVAILABLE`` only, as in the synchronous client."""
        return await self._run(_calls.cancel_task(task_id))

    async def list_tasks(
        self,
        states: Iterable[str] | str = (),
        *,
        queue: str = "",
        worker_id: str = "",
        task_name: str = "",
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[list[TaskView], str]:
        """One page of tasks, newest first, and the next page's token ("" when there are no
        more); filters and paging as :meth:`SchedulerClient.list_tasks
        <switchyard.client.SchedulerClient.list_tasks>`."""
        return await self._run(_calls.list_tasks(states, queue=queue, worker_id=worker_id, task_name=task_name,
                                                 page_size=page_size, page_token=page_token))

    async def iter_tasks(
        self,
        states: Iterable[str] | str = (),
        *,
        queue: str = "",
        worker_id: str = "",
        task_name: str = "",
        limit: int | None = None,
        page_token: str = "",
    ) -> AsyncGenerator[TaskView, None]:
        """Tasks as :meth:`list_tasks` finds them, newest first, following the pages until there
        are no more or ``limit`` tasks were yielded."""
        pages = TaskPages(limit, page_token)
        while (wanted := pages.next_page_size()) is not None:
            tasks, next_token = await self.list_tasks(states, queue=queue, worker_id=worker_id, task_name=task_name,
                                                      page_size=wanted, page_token=pages.page_token)
            for task in pages.take(tasks, next_token):
                yield task

    # --- placement ----------------------------------------------------------------------

    async def explain(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[TaskOptionsDict],
    ) -> Explanation:
        """Dry run of :meth:`submit` with the same arguments: how the task would be classified,
        which worker would take it now, and why every other worker would not. Stores nothing."""
        return await self._run(_calls.explain(task_name, TaskOptions(args=args, kwargs=kwargs, **options)))

    async def explain_task(self, task_id: str) -> Explanation:
        """Where an existing (pending) task would be placed now, and why."""
        return await self._run(_calls.explain_task(task_id))

    # --- queues -------------------------------------------------------------------------

    async def queues(self) -> list[QueueView]:
        """Statistics of every logical queue, in configuration order."""
        return await self._run(_calls.queues())

    async def pause(self, queue: str) -> QueueView:
        """Stop handing out the queue's tasks; submissions are still accepted."""
        return await self._run(_calls.pause(queue))

    async def resume(self, queue: str) -> QueueView:
        """Hand out a paused queue's tasks again."""
        return await self._run(_calls.resume(queue))

    # --- workers ------------------------------------------------------------------------

    async def workers(self) -> list[WorkerView]:
        """Workers the scheduler knows: connected, or within their grace period."""
        return await self._run(_calls.workers())

    async def worker(self, worker_id: str) -> WorkerView:
        """One worker the scheduler knows; raises :class:`NotFound` for any other id."""
        return _calls.find_worker(await self.workers(), worker_id)

    async def drain(self, worker_id: str) -> WorkerView:
        """Give the worker nothing new; it finishes what it has."""
        return await self._run(_calls.drain(worker_id))

    async def undrain(self, worker_id: str) -> WorkerChange:
        """Give a drained (or draining) worker new work again; idempotent."""
        return await self._run(_calls.undrain(worker_id))

    async def unquarantine(self, worker_id: str) -> WorkerChange:
        """End a worker's quarantine now and forget its recent failures; idempotent."""
        return await self._run(_calls.unquarantine(worker_id))

    # --- dead letters -------------------------------------------------------------------

    async def dead_letters(self, queue: str = "", limit: int = 100) -> tuple[list[DeadLetterView], int]:
        """Tasks that failed for good, newest first, and how many are kept in all."""
        return await self._run(_calls.dead_letters(queue, limit))

    async def retry_dead_letter(self, task_id: str) -> TaskView:
        """Put a dead-lettered task back to pending with a fresh retry budget; returns it."""
        return await self._run(_calls.retry_dead_letter(task_id))

    async def purge_dead_letters(self, task_ids: Iterable[str] = (), queue: str = "", all: bool = False) -> int:
        """Delete dead letters: these ``task_ids``, every one of ``queue``, or ``all=True``
        (exactly one of them). Returns how many were deleted."""
        return await self._run(_calls.purge_dead_letters(task_ids, queue, all))
