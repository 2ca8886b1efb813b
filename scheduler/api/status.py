"""Domain error -> gRPC status, in one table; the only place error classes meet status codes.

Redis failures that escape the engine become UNAVAILABLE with the store's address left out
(URLs may carry passwords) and a hint to retry, never UNKNOWN.
"""

from __future__ import annotations

import grpc
from redis.exceptions import RedisError

from scheduler.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    SchedulerError,
    StateUnavailable,
)

STATUS_BY_ERROR: dict[type[SchedulerError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    StateUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status code and message a client gets for `exc`; None for errors that are bugs."""
    if isinstance(exc, SchedulerError):
        for kind in type(exc).__mro__:
            code = STATUS_BY_ERROR.get(kind)
            if code is not None:
                return code, str(exc)
        return grpc.StatusCode.INTERNAL, str(exc)
    if isinstance(exc, RedisError):
        return (grpc.StatusCode.UNAVAILABLE,
                f"the scheduler's state store (Redis) is unavailable ({type(exc).__name__}: {exc}); "
                "retry shortly")
    return None
