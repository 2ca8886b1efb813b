"""Requests that do not decode get INVALID_ARGUMENT, not UNKNOWN.

grpc.aio answers a request its deserializer cannot parse (broken wire format, invalid UTF-8 in
a string field) with UNKNOWN "Unexpected DecodeError", which tells the caller nothing it can act
on. `safe_decoding` wraps each handler when it is registered (registration.py): its
deserializer returns an `Undecodable` marker instead of raising, and the handler answers
INVALID_ARGUMENT when it meets one — at once for a single request, and at that message for a
request stream (which then ends).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
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
            responses = inner_us(request, context)
            if not hasattr(responses, "__aiter__"):  # a servicer that writes with context.write
                await responses
                return
            async for response in responses:
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
            responses = inner_ss(checked(requests, refused), context)
            if not hasattr(responses, "__aiter__"):  # a servicer that writes with context.write
                await responses
            else:
                async for response in responses:
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


def safe_decoding(full_method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler wrapper of this module (see registration.py): requests that do not decode
    are answered INVALID_ARGUMENT, naming the method."""
    return _wrap(full_method.rpartition("/")[2], handler)
