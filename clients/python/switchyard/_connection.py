"""The client's gRPC plumbing: the channel (keepalive, message size limits), the stub, deadlines,
and the mapping of every ``grpc.RpcError`` to a typed :mod:`switchyard.exceptions` error.

:class:`Connection` is the base the call groups of :class:`~switchyard.client.SchedulerClient`
build on; nothing else in the package touches a channel.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import grpc

from switchyard.exceptions import from_rpc_error
from switchyard.v1 import scheduler_pb2_grpc

__all__ = ["DEFAULT_TARGET", "Connection"]

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where the scheduler listens unless told otherwise."""


def _channel_options(max_message_mb: int, keepalive_time_s: float) -> list[tuple[str, int]]:
    max_bytes = max_message_mb * 1024 * 1024
    return [
        # Tasks may carry ~10 MiB payloads; gRPC's default 4 MiB receive cap would reject them.
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.max_receive_message_length", max_bytes),
        # A half-open TCP connection can look alive for hours; keepalive pings during calls
        # (watch streams especially) find out. The scheduler must permit this ping rate.
        ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class Connection:
    """A channel to one scheduler and its ``Scheduler`` stub.

    ``target`` is ``HOST:PORT`` (any gRPC target string works). ``timeout`` is the deadline, in
    seconds, of every unary call; ``max_message_mb`` raises gRPC's send/receive limits so large
    payloads and results fit. ``channel`` replaces the channel the connection would open (the
    caller then keeps ownership of it). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        max_message_mb: int = 16,
        keepalive_time_s: float = 60.0,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._owns_channel = channel is None
        self._channel = channel or grpc.insecure_channel(
            target, options=_channel_options(max_message_mb, keepalive_time_s)
        )
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (a channel passed in by the caller stays open)."""
        if self._owns_channel:
            self._channel.close()

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        """One unary call with the connection's deadline; a failure raises a typed error."""
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
