"""gRPC servicers: each RPC maps the request, calls one engine part and maps the result.

Errors become gRPC statuses in one place (`scheduler/api/status.py`), for unary RPCs and
streams alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from switchyard.v1 import agent_pb2, agent_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from switchyard.wire import LEADER_METADATA_KEY

from scheduler.api import auth, convert
from scheduler.api.status import status_of
from scheduler.cooperative import YIELD_EVERY, breathe
from scheduler.engine import Engine
from scheduler.engine.agents import Agents
from scheduler.errors import NotLeader

log = logging.getLogger("switchyard.scheduler.api")
R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]


class EngineSource(Protocol):
    """Where a servicer gets the engine for each call (scheduler/leadership.py): the current
    term's, or an error saying who leads instead."""

    def current(self) -> Engine: ...


async def _abort_for(exc: Exception, context: Context) -> None:
    """Abort the call with the status `exc` maps to; re-raise what is a bug. A standby's answer
    names the leader in trailing metadata too, for clients and agents to follow."""
    status = status_of(exc)
    if status is None:
        raise exc
    if isinstance(exc, NotLeader) and exc.leader:
        context.set_trailing_metadata(((LEADER_METADATA_KEY, exc.leader),))
    await context.abort(*status)


def _term_ended(engines: EngineSource) -> Exception:
    """What a stream ended by a leadership change is told: who leads now, when known."""
    try:
        engines.current()
    except Exception as exc:
        return exc
    return NotLeader("this scheduler's leadership term ended; reconnect")


async def _cancel_and_wait(*futures: asyncio.Future[Any] | None) -> None:
    """Cancel those still pending and wait until they are done. A task left pending when its
    call ends is destroyed with the queue it waits on (an agent's outbox is replaced when it
    reconnects), and asyncio logs "Task was destroyed but it is pending!"; a generator whose
    `anext` still runs cannot be closed."""
    pending = [future for future in futures if future is not None and not future.done()]
    for future in futures:
        if future is not None and future.done() and not future.cancelled():
            # Retrieved, so asyncio does not log it: `items` may have ended (StopAsyncIteration)
            # just as the client cancelled the call (a watch closed at the terminal state).
            future.exception()
    for future in pending:
        future.cancel()
    for future in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await future


async def _until_stopped(engine: Engine, items: AsyncIterator[R]) -> AsyncIterator[R]:
    """`items` until they end or `engine` stops (its leadership term ended: the client resumes
    on the leader, told so by the NotLeader this raises)."""
    stopped = asyncio.ensure_future(engine.stopped.wait())
    following: asyncio.Future[R] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if following not in done:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                raise NotLeader("this scheduler's leadership term ended; watch again on the leader")
            try:
                yield following.result()
            except StopAsyncIteration:
                return
    finally:
        # The call may end (the client went away) while `following` still runs.
        await _cancel_and_wait(stopped, following)
        if hasattr(items, "aclose"):
            await items.aclose()


def _rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Map domain errors (and an unreachable Redis) to gRPC statuses with actionable text."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        try:
            return await method(self, request, context)
        except Exception as exc:
            await _abort_for(exc, context)
        raise AssertionError("unreachable")

    return wrapper


class LeaderBound:
    """Base of the servicers: each call asks for the current term's engine."""

    def __init__(self, engines: EngineSource) -> None:
        self._engines = engines

    @property
    def engine(self) -> Engine:
        """This call's engine (raises NotLeader or StateUnavailable, mapped like any error)."""
        return self._engines.current()


class SchedulerServicer(LeaderBound, scheduler_pb2_grpc.SchedulerServicer):
    """The public Scheduler service."""

    @_rpc
    async def SubmitTask(self, request: scheduler_pb2.SubmitTaskRequest, context: Context) -> scheduler_pb2.SubmitTaskResponse:
        (accepted,) = await self.engine.admission.submit([convert.task_input(request)])
        return convert.submit_response(accepted)

    @_rpc
    async def SubmitBatch(self, request: scheduler_pb2.SubmitBatchRequest, context: Context) -> scheduler_pb2.SubmitBatchResponse:
        many = len(request.tasks) > 1
        items = []
        for index, task in enumerate(request.tasks):
            if index and not index % YIELD_EVERY:
                await breathe()
            # Errors name the item as admission's do: by index when there are several.
            items.append(convert.task_input(task, index if many else None))
        accepted = await self.engine.admission.submit(items)
        results = []
        for index, one in enumerate(accepted):
            if index and not index % YIELD_EVERY:
                await breathe()
            results.append(convert.submit_response(one))
        return scheduler_pb2.SubmitBatchResponse(results=results)

    @_rpc
    async def GetTask(self, request: scheduler_pb2.GetTaskRequest, context: Context) -> scheduler_pb2.GetTaskResponse:
        return scheduler_pb2.GetTaskResponse(task=convert.task_message(await self.engine.queries.get_task(request.task_id)))

    async def WatchTask(self, request: scheduler_pb2.WatchTaskRequest, context: Context) -> AsyncIterator[scheduler_pb2.WatchTaskResponse]:
        try:
            engine = self.engine
            async for view in _until_stopped(engine, engine.queries.watch(request.task_id)):
                yield scheduler_pb2.WatchTaskResponse(task=convert.task_message(view))
        except NotLeader:
            await _abort_for(_term_ended(self._engines), context)
        except Exception as exc:
            await _abort_for(exc, context)

    @_rpc
    async def CancelTask(self, request: scheduler_pb2.CancelTaskRequest, context: Context) -> scheduler_pb2.CancelTaskResponse:
        record, previous = await self.engine.controls.cancel(request.task_id)
        return scheduler_pb2.CancelTaskResponse(task=convert.record_message(record),
                                                previous_state=convert.task_state(previous))

    @_rpc
    async def ListTasks(self, request: scheduler_pb2.ListTasksRequest, context: Context) -> scheduler_pb2.ListTasksResponse:
        page = await self.engine.task_list.page(convert.task_query(request))
        return convert.task_page(page.tasks, page.next_page_token)

    @_rpc
    async def ListQueues(self, request: scheduler_pb2.ListQueuesRequest, context: Context) -> scheduler_pb2.ListQueuesResponse:
        return scheduler_pb2.ListQueuesResponse(queues=[convert.queue_stats(v) for v in await self.engine.queries.list_queues()])

    @_rpc
    async def PauseQueue(self, request: scheduler_pb2.PauseQueueRequest, context: Context) -> scheduler_pb2.PauseQueueResponse:
        return scheduler_pb2.PauseQueueResponse(queue=convert.queue_stats(await self.engine.controls.set_paused(request.queue, True)))

    @_rpc
    async def ResumeQueue(self, request: scheduler_pb2.ResumeQueueRequest, context: Context) -> scheduler_pb2.ResumeQueueResponse:
        return scheduler_pb2.ResumeQueueResponse(queue=convert.queue_stats(await self.engine.controls.set_paused(request.queue, False)))

    @_rpc
    async def ListWorkers(self, request: scheduler_pb2.ListWorkersRequest, context: Context) -> scheduler_pb2.ListWorkersResponse:
        queries = self.engine.queries
        return scheduler_pb2.ListWorkersResponse(
            workers=[convert.worker_info(w, queries.operator_status(w)) for w in queries.workers()])

    @_rpc
    async def ExplainPlacement(self, request: scheduler_pb2.ExplainPlacementRequest, context: Context) -> scheduler_pb2.ExplainPlacementResponse:
        item = convert.task_input(request.task) if request.HasField("task") else None
        return convert.explanation(await self.engine.queries.explain(item, request.task_id))

    @_rpc
    async def ListDeadLetters(self, request: scheduler_pb2.ListDeadLettersRequest, context: Context) -> scheduler_pb2.ListDeadLettersResponse:
        letters, total = await self.engine.dead_letters.list(request.queue, request.limit)
        return scheduler_pb2.ListDeadLettersResponse(
            dead_letters=[convert.dead_letter(record, at) for record, at in letters], total=total
        )

    @_rpc
    async def RetryDeadLetter(self, request: scheduler_pb2.RetryDeadLetterRequest, context: Context) -> scheduler_pb2.RetryDeadLetterResponse:
        return scheduler_pb2.RetryDeadLetterResponse(task=convert.record_message(await self.engine.dead_letters.retry(request.task_id)))

    @_rpc
    async def PurgeDeadLetters(self, request: scheduler_pb2.PurgeDeadLettersRequest, context: Context) -> scheduler_pb2.PurgeDeadLettersResponse:
        purged = await self.engine.dead_letters.purge(list(request.task_ids), request.queue, request.all)
        return scheduler_pb2.PurgeDeadLettersResponse(purged=purged)

    @_rpc
    async def DrainWorker(self, request: scheduler_pb2.DrainWorkerRequest, context: Context) -> scheduler_pb2.DrainWorkerResponse:
        engine = self.engine
        worker = await engine.controls.drain(request.worker_id)
        return scheduler_pb2.DrainWorkerResponse(worker=convert.worker_info(worker, engine.queries.operator_status(worker)))

    @_rpc
    async def UndrainWorker(self, request: scheduler_pb2.UndrainWorkerRequest, context: Context) -> scheduler_pb2.UndrainWorkerResponse:
        engine = self.engine
        change = await engine.controls.undrain(request.worker_id)
        return scheduler_pb2.UndrainWorkerResponse(
            worker=convert.worker_info(change.worker, engine.queries.operator_status(change.worker)),
            previous_state=convert.worker_state(change.previous.state), changed=change.changed)

    @_rpc
    async def UnquarantineWorker(self, request: scheduler_pb2.UnquarantineWorkerRequest,
                                 context: Context) -> scheduler_pb2.UnquarantineWorkerResponse:
        engine = self.engine
        change = await engine.controls.unquarantine(request.worker_id)
        return scheduler_pb2.UnquarantineWorkerResponse(
            worker=convert.worker_info(change.worker, engine.queries.operator_status(change.worker)),
            previous_state=convert.worker_state(change.previous.state), changed=change.changed)


class AgentGatewayServicer(agent_pb2_grpc.AgentGatewayServicer):
    """The stream every worker agent keeps open."""

    def __init__(self, engines: EngineSource) -> None:
        self._engines = engines

    async def Connect(self, request_iterator: AsyncIterator[agent_pb2.ConnectRequest], context: Context) -> AsyncIterator[agent_pb2.ConnectResponse]:
        try:
            engine = self._engines.current()
        except Exception as exc:
            await _abort_for(exc, context)
            return
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message on Connect must be hello")
            return
        # The caller was admitted by the auth interceptor, which cannot see the hello: the worker
        # id it is bound to (by its token or its certificate) is checked here.
        problem = auth.connect_problem(first.hello.worker_id)
        if problem is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
            return
        agents = engine.agents
        try:
            worker, welcome = await agents.hello(convert.registration(first.hello))
        except Exception as exc:
            await _abort_for(exc, context)
            return
        worker_id, session, outbox = worker.worker_id, welcome.session, worker.outbox
        yield agent_pb2.ConnectResponse(welcome=agent_pb2.AgentWelcome(
            heartbeat_interval_seconds=welcome.heartbeat_interval_seconds,
            state_redis_url=welcome.state_redis_url,
            key_prefix=welcome.key_prefix,
            rejoined_after_loss=welcome.rejoined_after_loss,
        ))
        reader = asyncio.create_task(self._read(agents, worker_id, session, request_iterator))
        term_over = asyncio.ensure_future(engine.stopped.wait())
        getter: asyncio.Future[Any] | None = None
        try:
            while not reader.done() and not term_over.done():
                getter = asyncio.ensure_future(outbox.get())
                done, _ = await asyncio.wait({getter, reader, term_over}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    break
                command = getter.result()
                if command is None:
                    continue
                yield convert.command_message(command)
        finally:
            # The stream may end (the agent reconnects) while `getter` still waits on the outbox.
            await _cancel_and_wait(getter, term_over, reader)
            if auth.call_revoked():
                # Ended because its token was revoked: it cannot come back, so its work moves now.
                await agents.credentials_revoked(worker_id, session)
            else:
                agents.stream_closed(worker_id, session)
        if engine.stopped.is_set():
            # This scheduler stopped leading: send the agent to whoever leads now.
            await _abort_for(_term_ended(self._engines), context)

    async def _read(self, agents: Agents, worker_id: str, session: int,
                    request_iterator: AsyncIterator[agent_pb2.ConnectRequest]) -> None:
        async for message in request_iterator:
            kind = message.WhichOneof("message")
            if kind == "heartbeat":
                beat = message.heartbeat
                agents.heartbeat(
                    worker_id, session, beat.load, convert.gpus_from(beat.load.gpus),
                    dict(beat.labels), beat.labels_replaced,
                    {(a.task_id, a.attempt) for a in beat.running.attempts} if beat.HasField("running") else None,
                )
            elif kind == "worker_exited":
                await agents.worker_exited(
                    worker_id, session, message.worker_exited.exit_code, message.worker_exited.reason
                )
            elif kind == "hello":
                log.warning("worker %s sent a second hello on one stream; ignored", worker_id)
