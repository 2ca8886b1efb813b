"""Domain errors of the scheduler: what went wrong, in words a person can act on.

Hierarchy::

    SchedulerError                 base; an unexpected failure
    ├── InvalidArgument            bad input; nothing was changed
    ├── NotFound                   unknown task, queue or worker
    ├── AlreadyExists              idempotency key reused with another payload
    ├── PayloadTooLarge            args/kwargs over the configured limit
    ├── FailedPrecondition         valid request, wrong moment (e.g. cancel a finished task)
    ├── Unauthenticated            no valid credentials: no token, an unknown one, a malformed header
    ├── PermissionDenied           valid credentials that may not do this (role, worker id)
    └── StateUnavailable           the state store (Redis) cannot be reached; retry later
        ├── LeadershipLost         this scheduler stopped leading mid-request; retry on the leader
        └── NotLeader              this scheduler is a standby; `leader` says who leads

This module knows nothing of gRPC: `scheduler/api/status.py` maps each class to the status code
a client receives, in one table. Messages say what was wrong and what to do.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base of every error the scheduler reports to clients."""


class InvalidArgument(SchedulerError):
    """The request is malformed or names something impossible; nothing was changed."""


class NotFound(SchedulerError):
    """The task, queue or worker named does not exist."""


class AlreadyExists(SchedulerError):
    """An idempotency key is already bound to a different task name or payload."""


class PayloadTooLarge(SchedulerError):
    """args + kwargs exceed the configured maximum payload size."""


class FailedPrecondition(SchedulerError):
    """The request is valid but the target is in the wrong state for it."""


class Unauthenticated(SchedulerError):
    """The caller sent no valid credentials (the message never repeats what was sent)."""


class PermissionDenied(SchedulerError):
    """The caller is known but its role (or the worker id it is bound to) does not allow this."""


class StateUnavailable(SchedulerError):
    """The state store cannot be reached; the request may be retried."""


class LeadershipLost(StateUnavailable):
    """This scheduler lost the leader lease (deposed, or unable to renew it); nothing was written."""


class NotLeader(StateUnavailable):
    """This scheduler does not lead; `leader` is the leader's address ('' when none is known)."""

    def __init__(self, message: str, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader
