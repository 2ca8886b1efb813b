"""Domain error -> gRPC status, in one table; the only place error classes meet status codes.

Redis failures that escape the engine never reach a caller as UNKNOWN: a connection failure is
UNAVAILABLE (retry), anything else INTERNAL; the message leaves out the store's address and the
error's text (URLs and script errors may carry secrets or payloads).
"""

from __future__ import annotations

import grpc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scheduler.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SchedulerError,
    StateUnavailable,
    Unauthenticated,
)

STATUS_BY_ERROR: dict[type[SchedulerError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    StateUnavailable: grpc.StatusCode.UNAVAILABLE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status code and message a client gets for `exc`; None for errors that are bugs."""
    if isinstance(exc, SchedulerError):
        for kind in type(exc).__mro__:
            code = STATUS_BY_ERROR.get(kind)
            if code is not None:
                return code, str(exc)
        return grpc.StatusCode.INTERNAL, str(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return (grpc.StatusCode.UNAVAILABLE,
                f"the scheduler's state store (Redis) is unavailable ({type(exc).__name__}); retry shortly")
    if isinstance(exc, RedisError):
        # Anything else from Redis (a script that failed) is a bug, not a reason to retry.
        return grpc.StatusCode.INTERNAL, f"the scheduler's state store refused an operation ({type(exc).__name__})"
    return None
