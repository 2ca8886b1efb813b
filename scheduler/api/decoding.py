"""Requests that do not decode get INVALID_ARGUMENT, not UNKNOWN.

grpc.aio answers a request its deserializer cannot parse (broken wire format, invalid UTF-8 in
a string field) with UNKNOWN "Unexpected DecodeError", which tells the caller nothing it can act
on. `SafeDecoding` stands in for the server while the generated `add_*Servicer_to_server`
functions register their handlers: each deserializer returns an `Undecodable` marker instead of
raising, and each handler answers INVALID_ARGUMENT when it meets one — at once for a single
request, and at that message for a request stream (which then ends).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError


@dataclass(frozen=True)
class Undecodable:
    """What a request that failed to decode is replaced with."""

    reason: str


def _message(method: str, reason: str) -> str:
    return (f"the {method} request could not be decoded ({reason}); send a message built from the "
            "switchyard .proto files (strings must be valid UTF-8)")


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    decode = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return decode(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            return Undecodable(str(exc) or type(exc).__name__)

    return deserialize


def _wrap(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler with a deserializer that never raises and behaviour that refuses markers."""
    h: Any = handler
    if not h.request_streaming and not h.response_streaming:
        inner_uu = h.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request.reason))
            return await inner_uu(request, context)

        return h._replace(request_deserializer=_safe(h.request_deserializer), unary_unary=unary_unary)  # type: ignore[no-any-return]
    if not h.request_streaming:
        inner_us = h.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request.reason))
            async for response in inner_us(request, context):
                yield response

        return h._replace(request_deserializer=_safe(h.request_deserializer), unary_stream=unary_stream)  # type: ignore[no-any-return]

    def checked(requests: AsyncIterator[Any], refused: list[str]) -> AsyncIterator[Any]:
        async def iterate() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, Undecodable):
                    refused.append(request.reason)
                    return  # the handler sees the stream end; the call is refused below
                yield request
        return iterate()

    if h.response_streaming:
        inner_ss = h.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            refused: list[str] = []
            async for response in inner_ss(checked(requests, refused), context):
                if refused:
                    break
                yield response
            if refused:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, refused[0]))

        return h._replace(request_deserializer=_safe(h.request_deserializer), stream_stream=stream_stream)  # type: ignore[no-any-return]
    inner_su = h.stream_unary

    async def stream_unary(requests: AsyncIterator[Any], context: Any) -> Any:
        refused: list[str] = []
        response = await inner_su(checked(requests, refused), context)
        if refused:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, refused[0]))
        return response

    return h._replace(request_deserializer=_safe(h.request_deserializer), stream_unary=stream_unary)  # type: ignore[no-any-return]


class SafeDecoding:
    """Pass this instead of the server to a generated `add_*Servicer_to_server` function."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the generated code registers the same handlers by name right after."""

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        wrapped = {name: _wrap(name, handler) for name, handler in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]
