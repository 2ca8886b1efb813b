"""The Redis connection the store's parts share: client, key layout, the registered Lua
scripts, and how an outage reads.

Every public method of a part is wrapped in `guarded`, the one place where a connection-type
failure becomes `scheduler.errors.StateUnavailable`: its message names the server (never its
password), says what to check, and says the request can be retried.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript
from switchyard.redis_urls import async_client, display_url, password_of
from switchyard.wire import Keys

from scheduler.errors import LeadershipLost, StateUnavailable
from scheduler.state.lane import Lane

log = logging.getLogger("switchyard.scheduler.state")

FENCED_MARK = "FENCED fencing token"
"""How fence.lua's refusal starts (a pipeline's error quotes it after the failing command)."""
NO_REPLICAS_MARK = "NOREPLICAS"
"""How Redis refuses a write while fewer replicas than its `min-replicas-to-write` are in sync."""

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
    """A registered script whose calls carry the leader lease key and the fencing token, sent
    on the hot path's pipelined connection (`lane.Lane`)."""

    def __init__(self, script: AsyncScript, fence: Fence, lease_key: str, lane: Lane) -> None:
        self._script = script
        self._fence = fence
        self._lease_key = lease_key
        self._lane = lane

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    @property
    def script(self) -> str:
        return str(self._script.script)

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        """The call as a command, for `Lane.send` to write beside others (the fence checked now)."""
        self._fence.check()
        return ("EVALSHA", self._script.sha, len(keys) + 1, *keys, self._lease_key, *args, self._fence.token)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        command = self.command(keys, args)
        try:
            return await self._lane.execute(*command)
        except redis_errors.NoScriptError:  # Redis restarted or its scripts were flushed
            await self._lane.execute("SCRIPT", "LOAD", self._script.script)
            return await self._lane.execute(*command)

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue a call on a pipeline as a bare EVALSHA. (redis-py's own way sends SCRIPT EXISTS
        first, one more round trip per pipeline; `_pipelined` reloads on NOSCRIPT instead.)"""
        self._fence.check()
        pipe.evalsha(self.sha, len(keys) + 1, *keys, self._lease_key, *args, self._fence.token)


def _script_text(name: str) -> str:
    return resources.files("scheduler.state").joinpath("scripts").joinpath(f"{name}.lua").read_text(encoding="utf-8")


_PAIR_TEMPLATE = """
local function first_part(KEYS, ARGV)
{first}
end
local function second_part(KEYS, ARGV)
{second}
end
-- Two operations in one call (scheduler/state/connection.py, `pair_script`): ARGV[1] and
-- ARGV[2] = how many of the KEYS and of the remaining ARGV are the first operation's.
local function slice(list, first, last)
  local out = {{}}
  for i = first, last do out[#out + 1] = list[i] end
  return out
end
local first_keys, first_args = tonumber(ARGV[1]), tonumber(ARGV[2])
local first_reply = first_part(slice(KEYS, 1, first_keys), slice(ARGV, 3, 2 + first_args))
return {{first_reply, second_part(slice(KEYS, first_keys + 1, #KEYS), slice(ARGV, 3 + first_args, #ARGV))}}
"""


def pair_script(first: str, second: str) -> str:
    """One script running the operations `scripts/<first>.lua` then `scripts/<second>.lua`, each
    with its own KEYS and ARGV, behind one fence check: one EVALSHA and one lease read where a
    pipeline of the two would send two of each. Replies {first's reply, second's reply}."""
    return _PAIR_TEMPLATE.format(first=_script_text(first), second=_script_text(second))


@dataclass(frozen=True)
class Scripts:
    """The registered Lua scripts, one per atomic operation (and the pairs the hot path runs
    together: `pair_script`); each starts with fence.lua."""

    submit: FencedScript
    dispatch: FencedScript
    apply: FencedScript
    requeue: FencedScript
    cancel: FencedScript
    promote: FencedScript
    purge_dead: FencedScript
    watch: FencedScript
    submit_dispatch: FencedScript
    """submit.lua then dispatch.lua: a submission handed out in its own round (sync match)."""
    apply_dispatch: FencedScript
    """apply.lua then dispatch.lua: reports applied and the slots they free handed out again."""

    @classmethod
    def register(cls, client: aioredis.Redis, fence: Fence, lease_key: str, lane: Lane) -> Scripts:
        """Register every `scripts/<operation>.lua` shipped with this package on `client`, their
        calls sent on `lane`."""
        prologue = _script_text("fence")
        texts = {name: _script_text(name) for name in cls.__dataclass_fields__ if "_dispatch" not in name}
        texts["submit_dispatch"] = pair_script("submit", "dispatch")
        texts["apply_dispatch"] = pair_script("apply", "dispatch")
        return cls(**{
            name: FencedScript(client.register_script(prologue + text), fence, lease_key, lane)
            for name, text in texts.items()
        })


def _reason(exc: BaseException) -> str:
    """The cause in a few words: the system's wording for a socket error (redis-py wraps it as
    "Error 111 connecting to host:port. Connect call failed ..."), else the error's own text."""
    cause: BaseException | None = exc
    for _depth in range(4):
        if cause is None:
            break
        if isinstance(cause, ssl.SSLError):
            # Its errno is OpenSSL's, not the system's: strerror would say "Operation not permitted".
            detail = getattr(cause, "verify_message", None) or cause.reason or str(cause)
            return f"TLS handshake failed: {detail}"
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

    @classmethod
    def add(cls) -> None:
        """One request written (redis-py's connections and the lanes both count here)."""
        cls.count += 1


def _counting(connection_class: type[Any]) -> type[Any]:
    """`connection_class` that counts each request it writes in `RoundTrips.count`, and writes
    without a per-request task.

    redis-py bounds every write by its socket timeout with `asyncio.wait_for`, which on Python
    3.11 creates a Task, a timer and their callbacks for each command: a tenth of the
    scheduler's CPU per task. A request the socket takes at once (every one but a very large
    SubmitBatch) has nothing to wait for; only a write that leaves data buffered waits for the
    buffer to drain, bounded by the same timeout, with redis-py's own errors.
    """

    class CountingConnection(connection_class):  # type: ignore[misc]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            RoundTrips.add()
            if not self.is_connected or not self.socket_timeout or isinstance(command, str):
                await super().send_packed_command(command, check_health)
                return
            if check_health:
                await self.check_health()
            writer = self._writer
            try:
                writer.writelines([command] if isinstance(command, bytes) else command)
                if writer.transport.get_write_buffer_size():
                    async with asyncio.timeout(self.socket_timeout):
                        await writer.drain()
            except TimeoutError:
                await self.disconnect(nowait=True)
                raise redis_errors.TimeoutError("Timeout writing to socket") from None
            except OSError as exc:
                await self.disconnect(nowait=True)
                raise redis_errors.ConnectionError(f"Error while writing to socket: {exc}") from exc
            except BaseException:
                await self.disconnect(nowait=True)
                raise

    CountingConnection.__name__ = f"Counting{connection_class.__name__}"
    return CountingConnection


class ReplicaWait:
    """How an acknowledged submission waits for replicas (Redis `WAIT`), and how often that
    wait ran out.

    Redis replicates asynchronously: a primary that dies loses the writes its replicas had not
    received yet. Ending the submission's pipeline with `WAIT replicas timeout` holds its answer
    until that many replicas have its writes, so a failover to one of them keeps it. When the
    wait runs out (a replica down or lagging) the submission is still answered as accepted —
    its writes are on the primary, and refusing them would make clients submit again — and the
    shortfall is counted (`switchyard_submit_replica_timeouts_total`) and logged at most once
    per `WARN_INTERVAL_SECONDS`.

    After a shortfall, later submissions wait only `SHORT_WAIT_MS` until a wait succeeds again:
    with its replica gone (say, promoted by the failover that just happened) every submission
    would otherwise pay the whole timeout, while a replica back in sync answers within
    milliseconds. Those short waits that run out are counted too.
    """

    WARN_INTERVAL_SECONDS = 60.0
    SHORT_WAIT_MS = 10

    def __init__(self, replicas: int = 0, timeout_seconds: float = 1.0) -> None:
        self.replicas = replicas
        """Replicas to wait for (0: no wait)."""
        self.timeout_ms = max(1, round(timeout_seconds * 1000))
        self.timeouts = 0
        """Submissions answered before `replicas` replicas had them (a process-wide count)."""
        self.short = False
        """True from a shortfall until a wait succeeds again: waits are SHORT_WAIT_MS meanwhile."""
        self._warned_at = -math.inf
        self._since_warning = 0
        self._warned = False

    def queue(self, pipe: Any) -> None:
        """Queue the WAIT after the pipeline's writes (it covers this connection's writes)."""
        if self.replicas:
            pipe.wait(self.replicas, min(self.SHORT_WAIT_MS, self.timeout_ms) if self.short else self.timeout_ms)

    def reached(self, acknowledged: int, location: str) -> None:
        """Record the WAIT's answer: how many replicas had the writes in time."""
        if acknowledged >= self.replicas:
            self.short = False
            if self._warned:  # one line per warning, however often a replica flaps
                self._warned = False
                log.info("replicas of %s in sync again: submissions wait up to %d ms for %d replica(s) again",
                         location, self.timeout_ms, self.replicas)
            return
        self.timeouts += 1
        self._since_warning += 1
        now = time.monotonic()
        if now - self._warned_at >= self.WARN_INTERVAL_SECONDS:
            log.warning(
                "%d submission(s) accepted with only %d of %d replica(s) in sync within %d ms: a failover of "
                "%s now could lose them; until a replica catches up, submissions wait at most %d ms; check the "
                "replicas (INFO replication) or lower submit_wait_replicas",
                self._since_warning, acknowledged, self.replicas, self.timeout_ms, location,
                min(self.SHORT_WAIT_MS, self.timeout_ms))
            self._warned_at, self._since_warning, self._warned = now, 0, True
        self.short = True


class Connection:
    """What the four parts share: the client, the key layout, the scripts, and how to word
    an outage."""

    def __init__(self, redis_url: str, prefix: str, replica_wait: ReplicaWait | None = None) -> None:
        # A bounded pool that makes callers wait for a free connection: redis-py's default pool
        # raises MaxConnectionsError beyond 100 connections, which a burst of agent hellos or
        # submissions reaches; waiting costs a little latency, failing costs the request. A
        # redis+sentinel:// URL gets the same pool, asking the Sentinels for the primary.
        self.redis: aioredis.Redis = async_client(
            redis_url, max_connections=POOL_MAX_CONNECTIONS, pool_timeout=POOL_WAIT_SECONDS,
            decode_responses=True, health_check_interval=10, socket_keepalive=True, retry_on_timeout=True,
            socket_connect_timeout=SOCKET_CONNECT_SECONDS, socket_timeout=SOCKET_SECONDS,
        )
        pool = self.redis.connection_pool
        pool.connection_class = _counting(pool.connection_class)
        self.keys = Keys(prefix)
        self.fence = Fence()
        self.replica_wait = replica_wait or ReplicaWait()
        self.lane = Lane(pool, SOCKET_SECONDS, on_write=RoundTrips.add)
        """The hot path's script calls (`FencedScript`)."""
        self.stream_lane = Lane(pool, SOCKET_SECONDS, on_write=RoundTrips.add, drop_on_cancel=True)
        """The lifecycle stream's blocking reads (`store.RedisEventLog`), off the scripts' connection."""
        self.scripts = Scripts.register(self.redis, self.fence, self.keys.leader, self.lane)
        self.lease_script = self.redis.register_script(_script_text("lease"))
        self._password = password_of(redis_url)
        # Credentials (user:password@, ?password=) are left out on purpose: this text reaches
        # logs and clients.
        self.location = display_url(redis_url)

    def unavailable(self, exc: BaseException) -> StateUnavailable:
        """The domain error for an outage, with what an operator should check."""
        reason = _reason(exc)
        if self._password:
            reason = reason.replace(self._password, "***")
        if NO_REPLICAS_MARK in str(exc):
            # The error quotes the refused command (a pipeline's, with its arguments): left out.
            return StateUnavailable(
                f"the state store at {self.location} refuses writes: fewer replicas are in sync than its "
                "min-replicas-to-write; check the replicas (INFO replication) — the request can be retried")
        if isinstance(exc, redis_errors.BusyLoadingError):
            problem, advice = f"the state store at {self.location} is still loading its data", "wait until it has loaded"
        elif isinstance(exc, redis_errors.ReadOnlyError):
            problem, advice = f"the state store at {self.location} is a read-only replica", "point redis_url at the primary"
        elif isinstance(exc, redis_errors.AuthenticationError):
            problem, advice = f"the state store at {self.location} refused the login", "check the password in redis_url"
        else:
            problem, advice = f"cannot reach the state store at {self.location}", "check that Redis is running and reachable"
            if self.location.startswith("rediss://"):
                advice += " and that the TLS options of redis_url (ssl_ca_certs, ssl_certfile, ssl_keyfile) fit it"
        return StateUnavailable(f"{problem} ({reason}); {advice} — the request can be retried")


def queue_script(pipe: Any, script: FencedScript, keys: list[str], args: list[Any]) -> None:
    """Queue a fenced script call on a pipeline (one bare EVALSHA)."""
    script.queue(pipe, keys, args)


def pair_call(first_keys: Sequence[Any], first_args: Sequence[Any], second_keys: Sequence[Any],
              second_args: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """The KEYS and ARGV of a `pair_script` call from those of its two operations."""
    return [*first_keys, *second_keys], [len(first_keys), len(first_args), *first_args, *second_args]


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
        holds only scripts (all refused together when Redis forgot them) and reads.

        Errors come back as values and the first is raised as it is: redis-py's own raising
        quotes the failed command, shortened with textwrap, which for a SubmitBatch of 10,000
        tasks took seconds of this process's only thread (enough to miss a lease renewal)."""
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            build(pipe)
            replies = list(await pipe.execute(raise_on_error=False))
            errors = [reply for reply in replies if isinstance(reply, Exception)]
            if not errors:
                return replies
            if attempt or not isinstance(errors[0], redis_errors.NoScriptError):
                raise errors[0]
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
            if NO_REPLICAS_MARK in str(exc):
                raise self._conn.unavailable(exc) from exc
            raise

    return call
