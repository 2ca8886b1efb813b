"""Standard gRPC server metrics: a grpc.aio server interceptor feeding the `grpc_server_*` families
of scheduler/metrics.py, with go-grpc-prometheus' names, labels and label values.

    grpc_server_started_total{grpc_type,grpc_service,grpc_method}           when a call arrives
    grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code} when it ends
    grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}        its duration, at the end
    grpc_server_msg_received_total / grpc_server_msg_sent_total             messages, as they pass

A stream (an agent's Connect, a WatchTask) is counted as handled, and its duration observed, when
it ends; until then it shows as started and not handled. `grpc_code` is spelt as Go spells status
codes ("OK", "Unavailable", "FailedPrecondition", ...), as go-grpc-prometheus exports them, so
dashboards written for Go services read these series unchanged. Calls to methods this server
does not register are not counted (their names come from the caller: unbounded label values).

A call the client cancels is counted `Canceled` when the servicer is interrupted by it (waiting
to send, as WatchTask and Connect do). grpc.aio ends a cancelled call's request stream as if the
client had closed it, so a servicer that was only reading requests ends normally and the call
is counted with the code it ends with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from scheduler.metrics import Metrics

GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
"""Values of the `grpc_code` label: Go's `codes.Code.String()`."""

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]  # generic in the type stubs only


def split_method(full_method: str) -> tuple[str, str]:
    """`/switchyard.v1.Scheduler/SubmitTask` -> (`switchyard.v1.Scheduler`, `SubmitTask`)."""
    service, _sep, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _code_name(code: object) -> str:
    """The Go spelling of a code a servicer set (a grpc.StatusCode; None means it set none: OK)."""
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return GO_CODE_NAMES[code]
    for status in grpc.StatusCode:  # the aio context may hand back the numeric code
        if status.value[0] == code:
            return GO_CODE_NAMES[status]
    return "Unknown"


class _Series:
    """One method's series (its label values fixed), looked up once, not at every call."""

    __slots__ = ("handled", "handling_seconds", "labels", "metrics", "received", "sent", "started")

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self.metrics, self.labels = metrics, labels
        self.started = metrics.grpc_started.labels(*labels)
        self.received = metrics.grpc_msg_received.labels(*labels)
        self.sent = metrics.grpc_msg_sent.labels(*labels)
        self.handling_seconds = metrics.grpc_handling_seconds.labels(*labels)
        self.handled: dict[str, Any] = {}

    def handled_with(self, code: str) -> Any:
        series = self.handled.get(code)
        if series is None:
            series = self.handled[code] = self.metrics.grpc_handled.labels(*self.labels, code)
        return series


class _Call:
    """The metrics of one call: started when built, handled once by `end`."""

    __slots__ = ("_series", "_started_at")

    def __init__(self, series: _Series) -> None:
        self._series = series
        self._started_at = time.perf_counter()
        series.started.inc()

    def received(self) -> None:
        self._series.received.inc()

    def sent(self) -> None:
        self._series.sent.inc()

    def end(self, context: Context, error: BaseException | None) -> None:
        """Count the call as handled with the status it ends with."""
        if (error is None or isinstance(error, grpc.aio.AbortError)) and not context.cancelled():
            code = _code_name(context.code())  # abort() and set_code() leave the code here
        elif error is None or isinstance(error, asyncio.CancelledError | GeneratorExit | grpc.aio.AbortError):
            # Cancelled by the client, or past its deadline: a stream's requests just end then.
            remaining = context.time_remaining()
            code = "DeadlineExceeded" if remaining is not None and remaining <= 0 else "Canceled"
        else:
            code = "Unknown"  # what gRPC answers for an exception a servicer let escape
        series = self._series
        series.handled_with(code).inc()
        series.handling_seconds.observe(time.perf_counter() - self._started_at)


async def _counted_requests(requests: AsyncIterator[Any], call: _Call) -> AsyncIterator[Any]:
    async for request in requests:
        call.received()
        yield request


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every call to a method this server registers (see the module docstring):
    as an interceptor, or as a handler wrapper applied at registration (`wrap`)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        return handler if handler is None else self.wrap(handler_call_details.method, handler)

    def wrap(self, full_method: str, handler: Handler) -> Handler:
        """The handler, counted and timed: what `intercept_service` does on each call, done once
        where the method is registered (scheduler/api/registration.py)."""
        service, method = split_method(full_method)
        serializers = {"request_deserializer": handler.request_deserializer,
                       "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_unary(handler.unary_unary, ("unary", service, method)), **serializers)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(handler.unary_stream, ("server_stream", service, method)), **serializers)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_unary(handler.stream_unary, ("client_stream", service, method)), **serializers)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_stream(handler.stream_stream, ("bidi_stream", service, method)), **serializers)
        return handler

    def _unary_unary(self, behaviour: Any, labels: tuple[str, str, str]) -> Any:
        series = _Series(self._metrics, labels)

        async def counted(request: Any, context: Context) -> Any:
            call = _Call(series)
            call.received()
            try:
                response = await behaviour(request, context)
            except BaseException as exc:
                call.end(context, exc)
                raise
            call.sent()
            call.end(context, None)
            return response
        return counted

    def _stream_unary(self, behaviour: Any, labels: tuple[str, str, str]) -> Any:
        series = _Series(self._metrics, labels)

        async def counted(requests: AsyncIterator[Any], context: Context) -> Any:
            call = _Call(series)
            try:
                response = await behaviour(_counted_requests(requests, call), context)
            except BaseException as exc:
                call.end(context, exc)
                raise
            call.sent()
            call.end(context, None)
            return response
        return counted

    def _unary_stream(self, behaviour: Any, labels: tuple[str, str, str]) -> Any:
        series = _Series(self._metrics, labels)

        async def counted(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(series)
            call.received()
            async for response in self._responses(behaviour(request, context), context, call):
                yield response
        return counted

    def _stream_stream(self, behaviour: Any, labels: tuple[str, str, str]) -> Any:
        series = _Series(self._metrics, labels)

        async def counted(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            call = _Call(series)
            async for response in self._responses(behaviour(_counted_requests(requests, call), context),
                                                  context, call):
                yield response
        return counted

    @staticmethod
    async def _responses(responses: Any, context: Context, call: _Call) -> AsyncIterator[Any]:
        """Pass a streaming servicer's responses on, counting them, and end the call with it.
        (A servicer that writes with `context.write` and returns a coroutine is awaited.)"""
        try:
            if hasattr(responses, "__aiter__"):
                async for response in responses:
                    call.sent()
                    yield response
            else:
                await responses
        except BaseException as exc:
            call.end(context, exc)
            raise
        call.end(context, None)
