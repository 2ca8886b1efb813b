"""A work-around for a kombu Redis transport bug that stops a busy Celery worker when Redis restarts.

When the broker connection drops, Celery's consumer (5.7) first lets kombu collect the connection,
which detaches it from its transport (`transport.client = None`), and then closes it. Closing the
channel tries to give unacknowledged messages back to Redis — with late acknowledgement, the
messages of the tasks running right now — and kombu builds that Redis client from
`transport.client`, which is gone: `AttributeError: 'NoneType' object has no attribute
'hostname'`. Celery only ignores connection errors there, calls the AttributeError unrecoverable
and shuts the worker down, so every Redis restart would take every busy Switchyard worker with it.

`install()` makes kombu raise the connection error this really is (Redis cannot be reached through
a connection that was torn down), which Celery already handles: it reconnects, the running tasks
go on, and their reports reach Redis through the report buffer. (With kombu's ack emulation off,
as the agent sets it, nothing is given back to the queue: the messages are simply done.) Installed in the Celery worker process
only (`worker_agent.celery_hooks`), and only if kombu still has the method it wraps.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger("switchyard.worker.kombu_fixes")

_MARK = "_switchyard_fixed"


def install() -> bool:
    """Patch kombu's Redis channel as described above; False when there is nothing to patch."""
    try:
        from kombu.transport import redis as kombu_redis
    except ImportError:
        return False
    original: Callable[..., Any] | None = getattr(kombu_redis.Channel, "_connparams", None)
    if original is None or getattr(original, _MARK, False):
        return False

    @functools.wraps(original)
    def _connparams(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self.connection, "client", None) is None:
            raise redis.ConnectionError("the broker connection was closed (lost connection to Redis)")
        return original(self, *args, **kwargs)

    setattr(_connparams, _MARK, True)
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]
    return True
