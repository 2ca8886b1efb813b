"""The Redis connection the store's parts share: client, key layout, the registered Lua
scripts, and how an outage reads.

Every public method of a part is wrapped in `guarded`, the one place where a connection-type
failure becomes `scheduler.errors.StateUnavailable`: its message names the server (never its
password), says what to check, and says the request can be retried.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from importlib import resources
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript
from switchyard.wire import Keys

from scheduler.errors import StateUnavailable

_UNREACHABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError, OSError,
)
"""Failures that mean "the state store is not usable right now", not "the request is wrong"."""


@dataclass(frozen=True)
class Scripts:
    """The registered Lua scripts, one per atomic operation."""

    submit: AsyncScript
    dispatch: AsyncScript
    apply: AsyncScript
    requeue: AsyncScript
    cancel: AsyncScript
    promote: AsyncScript
    purge_dead: AsyncScript

    @classmethod
    def register(cls, client: aioredis.Redis) -> Scripts:
        """Register every `scripts/<operation>.lua` shipped with this package on `client`."""
        folder = resources.files("scheduler.state").joinpath("scripts")
        return cls(**{
            name: client.register_script(folder.joinpath(f"{name}.lua").read_text(encoding="utf-8"))
            for name in cls.__dataclass_fields__
        })


def _reason(exc: BaseException) -> str:
    """The cause in a few words: the system's wording for a socket error (redis-py wraps it as
    "Error 111 connecting to host:port. Connect call failed ..."), else the error's own text."""
    cause: BaseException | None = exc
    for _depth in range(4):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return str(exc).strip() or type(exc).__name__


POOL_MAX_CONNECTIONS = 64
"""Redis connections one scheduler process opens at most. Redis runs commands one at a time, so
more connections add no throughput; they only hold requests that wait (blocking stream reads
hold one each)."""
POOL_WAIT_SECONDS = 10.0
"""How long a request waits for a free connection before it fails as StateUnavailable."""


class RoundTrips:
    """Requests written to Redis by this process: one per command, pipeline or script call, so
    the count is the number of network round trips (the hot path's main cost)."""

    count = 0


def _counting(connection_class: type[Any]) -> type[Any]:
    """`connection_class` that counts each request it writes in `RoundTrips.count`."""

    class CountingConnection(connection_class):  # type: ignore[misc]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            RoundTrips.count += 1
            await super().send_packed_command(command, check_health)

    CountingConnection.__name__ = f"Counting{connection_class.__name__}"
    return CountingConnection


class Connection:
    """What the four parts share: the client, the key layout, the scripts, and how to word
    an outage."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        # A bounded pool that makes callers wait for a free connection: redis-py's default pool
        # raises MaxConnectionsError beyond 100 connections, which a burst of agent hellos or
        # submissions reaches; waiting costs a little latency, failing costs the request.
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=POOL_MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS,
            decode_responses=True, health_check_interval=10, socket_keepalive=True, retry_on_timeout=True,
        )
        pool.connection_class = _counting(pool.connection_class)
        self.redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self.keys = Keys(prefix)
        self.scripts = Scripts.register(self.redis)
        parts = urlsplit(redis_url)
        self._password = parts.password or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        # Credentials (user:password@, ?password=) are left out on purpose: this text reaches
        # logs and clients.
        self.location = f"{parts.scheme}://{netloc}{parts.path}"

    def unavailable(self, exc: BaseException) -> StateUnavailable:
        """The domain error for an outage, with what an operator should check."""
        reason = _reason(exc)
        if self._password:
            reason = reason.replace(self._password, "***")
        if isinstance(exc, redis_errors.BusyLoadingError):
            problem, advice = f"the state store at {self.location} is still loading its data", "wait until it has loaded"
        elif isinstance(exc, redis_errors.ReadOnlyError):
            problem, advice = f"the state store at {self.location} is a read-only replica", "point redis_url at the primary"
        else:
            problem, advice = f"cannot reach the state store at {self.location}", "check that Redis is running and reachable"
        return StateUnavailable(f"{problem} ({reason}); {advice} — the request can be retried")


def queue_script(pipe: Any, script: AsyncScript, keys: list[str], args: list[Any]) -> None:
    """Queue a script call on a pipeline as a bare EVALSHA. (redis-py's own way sends SCRIPT
    EXISTS first, one more round trip per pipeline; `pipelined` reloads on NOSCRIPT instead.)"""
    pipe.evalsha(script.sha, len(keys), *keys, *args)


class StorePart:
    """Base of the store's parts (tasks, indexes, controls, events): one shared connection."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._redis = connection.redis
        self._keys = connection.keys
        self._scripts = connection.scripts

    async def _pipelined(self, build: Callable[[Any], None]) -> list[Any]:
        """Run the commands `build` queues in one round trip. After a Redis restart or SCRIPT
        FLUSH (NOSCRIPT) the scripts are loaded and the pipeline runs again: every pipeline here
        holds only scripts (all refused together when Redis forgot them) and reads."""
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            build(pipe)
            try:
                return list(await pipe.execute())
            except redis_errors.NoScriptError:
                if attempt:
                    raise
                for script in vars(self._scripts).values():
                    await self._redis.script_load(script.script)
        raise AssertionError("unreachable")


_SelfT = TypeVar("_SelfT", bound=StorePart)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def guarded(
    method: Callable[Concatenate[_SelfT, _P], Awaitable[_R]],
) -> Callable[Concatenate[_SelfT, _P], Coroutine[Any, Any, _R]]:
    """Turn an outage inside `method` into StateUnavailable (other errors pass unchanged)."""

    @functools.wraps(method)
    async def call(self: _SelfT, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(self, *args, **kwargs)
        except _UNREACHABLE as exc:
            raise self._conn.unavailable(exc) from exc

    return call
