"""Domain errors of the scheduler, each tied to the gRPC status a client receives.

Hierarchy::

    SchedulerError                 (INTERNAL)
    ├── InvalidArgument            (INVALID_ARGUMENT)   bad input; nothing was changed
    ├── NotFound                   (NOT_FOUND)          unknown task, queue or worker
    ├── AlreadyExists              (ALREADY_EXISTS)     idempotency key reused with another payload
    ├── PayloadTooLarge            (RESOURCE_EXHAUSTED) args/kwargs over the configured limit
    ├── FailedPrecondition         (FAILED_PRECONDITION) valid request, wrong moment (e.g. cancel a finished task)
    └── Unavailable                (UNAVAILABLE)        state store unreachable; retry later

Messages are written for the person reading them: what was wrong and what to do.
"""

from __future__ import annotations

import grpc


class SchedulerError(Exception):
    """Base of every error the scheduler reports to clients."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(SchedulerError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SchedulerError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SchedulerError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PayloadTooLarge(SchedulerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(SchedulerError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(SchedulerError):
    code = grpc.StatusCode.UNAVAILABLE
