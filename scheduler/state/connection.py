"""The Redis connection the store's parts share: client, key layout, the registered Lua
scripts, and how an outage reads.

Every public method of a part is wrapped in `guarded`, the one place where a connection-type
failure becomes `scheduler.errors.StateUnavailable`: its message names the server (never its
password), says what to check, and says the request can be retried.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript
from switchyard.wire import Keys

from scheduler.errors import LeadershipLost, StateUnavailable

FENCED_MARK = "FENCED fencing token"
"""How fence.lua's refusal starts (a pipeline's error quotes it after the failing command)."""

_UNREACHABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError, OSError,
)
"""Failures that mean "the state store is not usable right now", not "the request is wrong"."""


class Fence:
    """The fencing token this process writes with, and until when its lease surely holds.

    Every state-changing script carries the token (fence.lua refuses it once another scheduler
    holds the lease). Before a write leaves the process, `check` also refuses it locally when
    the lease may have expired by this process's own clock (after a long pause, say), so a
    deposed leader stops even before Redis tells it. The default — an empty token, valid for
    ever — is no fencing: the state-store tests and tools that run without a leader.
    """

    def __init__(self) -> None:
        self.token = ""
        self.valid_until = math.inf
        self.on_lost: Callable[[], None] = lambda: None

    def hold(self, token: str, valid_until: float) -> None:
        """Write with `token`, which surely holds the lease until monotonic time `valid_until`."""
        self.token, self.valid_until = token, valid_until

    def drop(self) -> None:
        """Stop writing: every later write is refused until `hold` is called again."""
        self.token, self.valid_until = "-", -math.inf

    def check(self) -> None:
        """Raise LeadershipLost unless a write may go out now."""
        if time.monotonic() > self.valid_until:
            self.on_lost()
            raise LeadershipLost("this scheduler no longer holds the leader lease (it could not renew it in "
                                 "time); the request can be retried on the leader")

    def refused(self) -> LeadershipLost:
        """The error for a write Redis refused as fenced (another scheduler leads now)."""
        self.on_lost()
        return LeadershipLost("this scheduler was deposed: another scheduler holds the leader lease now; "
                              "the request can be retried on the leader")


class FencedScript:
    """A registered script whose calls carry the leader lease key and the fencing token."""

    def __init__(self, script: AsyncScript, fence: Fence, lease_key: str) -> None:
        self._script = script
        self._fence = fence
        self._lease_key = lease_key

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    @property
    def script(self) -> str:
        return str(self._script.script)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        self._fence.check()
        return await self._script(keys=[*keys, self._lease_key], args=[*args, self._fence.token])

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue a call on a pipeline as a bare EVALSHA. (redis-py's own way sends SCRIPT EXISTS
        first, one more round trip per pipeline; `_pipelined` reloads on NOSCRIPT instead.)"""
        self._fence.check()
        pipe.evalsha(self.sha, len(keys) + 1, *keys, self._lease_key, *args, self._fence.token)


def _script_text(name: str) -> str:
    return resources.files("scheduler.state").joinpath("scripts").joinpath(f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Scripts:
    """The registered Lua scripts, one per atomic operation; each starts with fence.lua."""

    submit: FencedScript
    dispatch: FencedScript
    apply: FencedScript
    requeue: FencedScript
    cancel: FencedScript
    promote: FencedScript
    purge_dead: FencedScript

    @classmethod
    def register(cls, client: aioredis.Redis, fence: Fence, lease_key: str) -> Scripts:
        """Register every `scripts/<operation>.lua` shipped with this package on `client`."""
        prologue = _script_text("fence")
        return cls(**{
            name: FencedScript(client.register_script(prologue + _script_text(name)), fence, lease_key)
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
SOCKET_CONNECT_SECONDS = 2.0
"""How long connecting to Redis may take before it counts as unreachable."""
SOCKET_SECONDS = 15.0
"""How long one reply may take (a hung Redis must not hang a request for ever); well above the
longest blocking read (stream reads block 0.5 s) and a large recovery read."""
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
            socket_connect_timeout=SOCKET_CONNECT_SECONDS, socket_timeout=SOCKET_SECONDS,
        )
        pool.connection_class = _counting(pool.connection_class)
        self.redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self.keys = Keys(prefix)
        self.fence = Fence()
        self.scripts = Scripts.register(self.redis, self.fence, self.keys.leader)
        self.lease_script = self.redis.register_script(_script_text("lease"))
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


def queue_script(pipe: Any, script: FencedScript, keys: list[str], args: list[Any]) -> None:
    """Queue a fenced script call on a pipeline (one bare EVALSHA)."""
    script.queue(pipe, keys, args)


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
                await self._redis.script_load(self._conn.lease_script.script)
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
        except redis_errors.ResponseError as exc:
            if FENCED_MARK in str(exc):
                raise self._conn.fence.refused() from exc
            raise

    return call
