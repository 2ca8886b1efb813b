"""Errors raised by the Switchyard client.

Every failed call raises a subclass of :class:`SwitchyardError` named after the gRPC status
the scheduler returned, so callers catch what they can act on and nothing else::

    SwitchyardError                 base: .code (e.g. "NOT_FOUND"), .message, .status_code
    ├── InvalidArgument             INVALID_ARGUMENT: the request itself is wrong (bad JSON, priority out of range);
    │                               also a ValueError, as raised client-side before any call
    ├── NotFound                    NOT_FOUND: no such task, queue or worker
    ├── AlreadyExists               ALREADY_EXISTS
    ├── ResourceExhausted           RESOURCE_EXHAUSTED: payload too large, rate limit, queue full
    ├── FailedPrecondition          FAILED_PRECONDITION: not allowed in the current state (e.g. cancel a finished task)
    ├── Aborted                     ABORTED: a concurrent change won; retrying may succeed
    ├── OutOfRange                  OUT_OF_RANGE
    ├── Unauthenticated             UNAUTHENTICATED
    ├── PermissionDenied            PERMISSION_DENIED
    ├── Unavailable                 UNAVAILABLE: scheduler unreachable or shutting down; retry later
    ├── DeadlineExceeded            DEADLINE_EXCEEDED: the call (or a wait) ran out of time
    ├── Cancelled                   CANCELLED: the call was cancelled on the client side
    ├── Unimplemented               UNIMPLEMENTED: the scheduler is older than this client
    └── InternalError               INTERNAL, UNKNOWN, DATA_LOSS: a bug or corruption on the server side

:func:`from_rpc_error` turns a :class:`grpc.RpcError` into the matching subclass, keeping the
status code and the server's message (``details``).
"""

from __future__ import annotations

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "SwitchyardError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]


class SwitchyardError(Exception):
    """Base of every error the client raises.

    ``code`` is the gRPC status name ("NOT_FOUND", ...), ``message`` the server's explanation,
    ``status_code`` the :class:`grpc.StatusCode` (UNKNOWN when the error was raised client-side
    without a status).
    """

    default_status: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, status_code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code if status_code is not None else self.default_status

    @property
    def code(self) -> str:
        """The gRPC status name, e.g. ``"INVALID_ARGUMENT"``."""
        return str(self.status_code.name)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgument(SwitchyardError, ValueError):
    """The request is malformed; fix it before retrying. The client raises it before any call
    for arguments it can check itself (a priority outside 0-10, bad JSON); it is a ValueError
    too, for code that caught the bare ValueError protobuf used to raise."""

    default_status = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SwitchyardError):
    """No task, queue or worker with that id or name."""

    default_status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SwitchyardError):
    """The thing being created exists already."""

    default_status = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(SwitchyardError):
    """A size, rate or capacity limit was hit."""

    default_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(SwitchyardError):
    """The operation is not allowed in the current state."""

    default_status = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(SwitchyardError):
    """A concurrent change won; the call may succeed if retried."""

    default_status = grpc.StatusCode.ABORTED


class OutOfRange(SwitchyardError):
    """A value is outside the range the scheduler accepts."""

    default_status = grpc.StatusCode.OUT_OF_RANGE


class Unauthenticated(SwitchyardError):
    """The call carried no valid credentials."""

    default_status = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SwitchyardError):
    """The caller may not do this."""

    default_status = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(SwitchyardError):
    """The scheduler could not be reached or is shutting down; retry later."""

    default_status = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SwitchyardError):
    """The call, or a wait for a task, ran out of time."""

    default_status = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(SwitchyardError):
    """The call was cancelled before it completed."""

    default_status = grpc.StatusCode.CANCELLED


class Unimplemented(SwitchyardError):
    """The scheduler does not implement this call (it is older than the client)."""

    default_status = grpc.StatusCode.UNIMPLEMENTED


class InternalError(SwitchyardError):
    """The scheduler failed internally (INTERNAL, UNKNOWN or DATA_LOSS)."""

    default_status = grpc.StatusCode.INTERNAL


_BY_STATUS: dict[grpc.StatusCode, type[SwitchyardError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}


def from_rpc_error(error: grpc.RpcError) -> SwitchyardError:
    """The typed error for a failed gRPC call, keeping its status code and details.

    An ``RpcError`` that carries no status (not a ``grpc.Call``) becomes an
    :class:`InternalError` with status UNKNOWN.
    """
    code_method = getattr(error, "code", None)
    details_method = getattr(error, "details", None)
    status_code = code_method() if callable(code_method) else None
    details = details_method() if callable(details_method) else None
    if not isinstance(status_code, grpc.StatusCode):
        status_code = grpc.StatusCode.UNKNOWN
    message = str(details) if details else str(status_code.value[1])
    error_class = _BY_STATUS.get(status_code, InternalError)
    return error_class(message, status_code=status_code)
