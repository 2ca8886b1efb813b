"""Handlers wrapped once, when they are registered, instead of on every call.

A grpc.aio server interceptor runs for each call: it awaits the handler lookup, then builds new
handler objects around the registered ones (up to a fifth of a bare unary call's cost, per call). The
scheduler's wrappers (request decoding, access control, metrics) only need the method's name,
which is known when the servicers are registered; `WrappingRegistrar` applies them then, and
the server runs with no interceptors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

Handler = Any
"""A grpc.RpcMethodHandler (generic in the type stubs only)."""

HandlerWrapper = Callable[[str, Handler], Handler]
"""Takes the full method name ("/package.Service/Method") and its handler; the handler to serve."""


class WrappingRegistrar:
    """Pass this instead of the server to a generated `add_*Servicer_to_server` function: each
    handler is registered wrapped by `wrappers`, the first innermost (the last sees a call first)."""

    def __init__(self, server: grpc.aio.Server, wrappers: Sequence[HandlerWrapper]) -> None:
        self._server = server
        self._wrappers = tuple(wrappers)

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the generated code registers the same handlers by name right after."""

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        wrapped = {}
        for name, handler in handlers.items():
            for wrap in self._wrappers:
                handler = wrap(f"/{service}/{name}", handler)
            wrapped[name] = handler
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]
