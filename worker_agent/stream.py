"""The agent's side of `AgentGateway.Connect`: one long-lived bidirectional gRPC stream to the leader.

Each stream opens with `hello`, waits for the scheduler's `welcome`, then heartbeats every
`welcome.heartbeat_interval_seconds` with a sequence starting at 1 and the current load,
while a reader handles `drain` and `cancel`. Any failure — scheduler down, stream reset, a
half-open TCP connection caught by keepalive, leadership moving elsewhere — ends the stream and
a new one is opened, forever, until the agent stops. Reconnecting with the same worker id within
the scheduler's grace period keeps the worker's in-flight tasks; the Celery worker and its
running tasks are never touched by any of this.

Several schedulers may share one Redis, one of them leading (`--scheduler a:1,b:2`). A standby
answers UNAVAILABLE with the leader's address in the `switchyard-leader` trailing metadata
(`switchyard.wire.LEADER_METADATA_KEY`); so does a leader that hands over, when it closes the
stream. Which address to try next, and how long to wait first, is `LeaderFinder`'s call: a named
leader is tried at once, then the configured addresses in turn, and after a whole round of
failures the wait grows exponentially with jitter up to a cap (5 s by default). The log gets one
line per change — "lost the scheduler at X: ...; reconnecting", "connected to leader Y", and a
failure only when it is new in the current outage — not one per attempt.

Security (docs/security.md): with TLS settings every attempt opens a TLS channel, reading the
certificate files again (a renewed agent certificate is used from the next reconnect on); with a
token, each stream carries it as `authorization: Bearer <token>`, read again from its file at each
attempt. A scheduler that refuses the token (UNAUTHENTICATED, PERMISSION_DENIED) is retried with
backoff like any failure, so a re-issued token heals the agent without a restart; the refusal is
logged as an error that says what to check. The token itself is never logged.

The stream knows nothing about Celery: the agent passes in how to build a hello, how to
sample load, and what to do on cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from switchyard.redis_urls import display_url
from switchyard.security import TlsSettings, TokenSource, warn_plaintext_token
from switchyard.v1 import agent_pb2, agent_pb2_grpc, worker_pb2
from switchyard.wire import DEFAULT_SCHEDULER_PORT, LEADER_METADATA_KEY

log = logging.getLogger("switchyard.agent.stream")

# grpc.aio's end-of-stream sentinel; the stubs do not declare it.
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]

# Client keepalive: a half-open TCP stream is detected within ~15 s instead of hours. The
# scheduler must permit pings this often (grpc.http2.min_ping_interval_without_data_ms).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

INITIAL_BACKOFF_SECONDS = 0.2
DEFAULT_MAX_BACKOFF_SECONDS = 5.0
# Used only until the first welcome says otherwise.
DEFAULT_HEARTBEAT_INTERVAL_SECONDS = 5.0
# How long a final worker_exited report may take before the agent gives up on it.
WORKER_EXITED_SEND_TIMEOUT_SECONDS = 3.0
OPEN_TIMEOUT_SECONDS = 10.0
"""Longest wait from hello to welcome: an address that black-holes packets is given up on."""

ADDRESS_FORM = "HOST:PORT[,HOST:PORT...]"
"""How scheduler addresses are written (the port may be left out: it is then 50051)."""


@dataclass(frozen=True)
class Welcome:
    """What the scheduler told the agent in its latest welcome."""

    heartbeat_interval_seconds: float
    state_redis_url: str
    key_prefix: str


class WelcomeMissingError(RuntimeError):
    """The scheduler's first answer on a stream was not a welcome."""


def address_problem(address: str) -> str | None:
    """Why `address` is not HOST:PORT (an IPv6 host in brackets), or None when it is."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        return "expected HOST:PORT"
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        return "write an IPv6 host in brackets, e.g. [::1]:50051"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"port {port!r} is not a number from 1 to 65535"
    return None


def with_default_port(address: str) -> str:
    """`address` with the scheduler's port (50051) when it names a host only: `sched` ->
    `sched:50051`, `[::1]` -> `[::1]:50051` (gRPC itself would dial 443)."""
    if address.startswith("[") and address.endswith("]"):
        return f"{address}:{DEFAULT_SCHEDULER_PORT}"
    return address if ":" in address else f"{address}:{DEFAULT_SCHEDULER_PORT}"


def parse_scheduler_addresses(text: str) -> tuple[str, ...]:
    """`host:port,host:port` as addresses in the order given, duplicates dropped; a host
    without a port gets the scheduler's default port.

    Raises ValueError naming the bad address; an empty list is an error too.
    """
    addresses: list[str] = []
    for address in (part.strip() for part in text.split(",")):
        if not address:
            continue
        address = with_default_port(address)
        problem = address_problem(address)
        if problem is not None:
            raise ValueError(f"invalid scheduler address {address!r}: {problem} (give {ADDRESS_FORM})")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ValueError(f"no scheduler address given (give {ADDRESS_FORM})")
    return tuple(addresses)


def backoff_delays(initial: float, maximum: float, rng: random.Random | None = None) -> Iterator[float]:
    """Endless reconnect delays: doubling from `initial` up to `maximum`, each jittered.

    Jitter takes each delay uniformly from [half, full] so a fleet of agents cut off by the
    same scheduler restart does not reconnect in lockstep.
    """
    rng = rng or random.Random()
    ceiling = initial
    while True:
        yield rng.uniform(ceiling / 2, ceiling)
        ceiling = min(maximum, ceiling * 2)


class LeaderFinder:
    """Which scheduler address to try next, and how long to wait before trying it.

    * A leader named by a refusal (or by a stream closed on hand-over) is tried next, at once —
      but only once per wait, so two schedulers that name each other cannot make a tight loop.
    * Otherwise the addresses are tried in turn, starting with the last one that welcomed the
      agent; moving on to the next untried address costs no wait.
    * After every address failed in a round, each new round waits the next backoff delay
      (doubling, jittered, capped); a welcome resets the backoff.
    * After an accepted stream ends, the same scheduler is tried first, after the shortest wait.
    """

    def __init__(self, addresses: Sequence[str], initial_seconds: float = INITIAL_BACKOFF_SECONDS,
                 max_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS, rng: random.Random | None = None) -> None:
        if not addresses:
            raise ValueError("at least one scheduler address is needed")
        self.addresses = tuple(addresses)
        self._initial, self._max, self._rng = initial_seconds, max_seconds, rng
        self._delays = backoff_delays(initial_seconds, max_seconds, rng)
        self._preferred = self.addresses[0]
        self._tried: set[str] = set()
        self._next: str | None = None
        """An address to try before the round goes on (a named leader, or the one just lost)."""
        self._next_waits = False
        self._free_hint = True
        self._started = False

    def _round(self) -> list[str]:
        return [self._preferred, *(a for a in self.addresses if a != self._preferred)]

    def next_attempt(self) -> tuple[str, float]:
        """The address to try now and the seconds to wait before trying it."""
        if self._next is not None:
            address, waits = self._next, self._next_waits
            self._next, self._next_waits = None, False
            return address, self._wait() if waits else 0.0
        untried = [a for a in self._round() if a not in self._tried]
        if not untried:
            # A whole round failed: start the next one after the backoff.
            self._tried.clear()
            return self._round()[0], self._wait()
        first_ever = not self._started
        self._started = True
        return untried[0], 0.0 if first_ever or self._tried else self._wait()

    def _wait(self) -> float:
        self._free_hint = True
        return next(self._delays)

    def failed(self, address: str, leader: str | None = None) -> None:
        """`address` could not be reached or refused; `leader` is the address it named, if any."""
        self._started = True
        self._tried.add(address)
        if leader is not None and leader != address:
            self._next = leader
            # A second named leader in a row waits: schedulers that disagree must not spin us.
            self._next_waits = not self._free_hint
            self._free_hint = False

    def connected(self, address: str) -> None:
        """`address` welcomed the agent: it is the leader; start afresh from it next time."""
        self._preferred = address
        self._tried.clear()
        self._next, self._next_waits, self._free_hint = None, False, True
        self._delays = backoff_delays(self._initial, self._max, self._rng)

    def lost(self, address: str, leader: str | None = None) -> None:
        """An accepted stream to `address` ended; `leader` is the new leader it named, if any."""
        self.connected(address)
        if leader is not None and leader != address:
            self._next, self._next_waits = leader, False
        else:
            # Most losses are a restart or a blip of that same scheduler: retry it, briefly later.
            self._next, self._next_waits = address, True


def leader_named_by(exc: BaseException) -> str | None:
    """The leader's address in an UNAVAILABLE answer's trailing metadata, if a valid one is there."""
    if not isinstance(exc, grpc.aio.AioRpcError) or exc.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    # grpc.aio hands back a Metadata object, typed as a tuple of pairs; both iterate as pairs.
    pairs: Any = exc.trailing_metadata() or ()
    for key, value in pairs:
        if key == LEADER_METADATA_KEY:
            address = value.decode() if isinstance(value, bytes) else str(value)
            return address if address_problem(address) is None else None
    return None


class AgentStream:
    """Keeps one Connect stream open to the leading scheduler for the life of the agent."""

    def __init__(
        self,
        addresses: Sequence[str],
        build_hello: Callable[[], agent_pb2.AgentHello],
        sample_load: Callable[[], worker_pb2.WorkerLoad],
        on_cancel: Callable[[str, int], Coroutine[Any, Any, None]],
        reconnect_max_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
        reconnect_initial_seconds: float = INITIAL_BACKOFF_SECONDS,
        current_labels: Callable[[], dict[str, str]] | None = None,
        tls: TlsSettings | None = None,
        token: TokenSource | None = None,
        running_attempts: Callable[[], Sequence[tuple[str, int]] | None] | None = None,
    ) -> None:
        self.finder = LeaderFinder(addresses, reconnect_initial_seconds, reconnect_max_seconds)
        self.tls = tls
        """TLS settings for every channel; None: plaintext."""
        self.token = token
        """The agent's token, sent with every stream; None: none."""
        self.target = self.finder.addresses[0]
        """The address tried or connected to most recently."""
        self.build_hello = build_hello
        self.sample_load = sample_load
        self.on_cancel = on_cancel
        self.current_labels = current_labels
        """Labels now (static + runtime); a change is sent with the next heartbeat."""
        self.running_attempts = running_attempts
        """The attempts executing now, sent with every heartbeat (None from it: not known)."""
        self.welcome: Welcome | None = None
        """The latest welcome; None until the first stream is accepted."""
        self.first_welcome = asyncio.Event()
        self._call: Any = None
        self._write_lock = asyncio.Lock()
        self._stopping = False
        self._stream_welcomed = False
        self._cancel_tasks: set[asyncio.Task[None]] = set()
        self._failures_logged: set[tuple[str, str]] = set()
        """(address, failure) pairs already logged in the current outage."""

    async def run(self) -> None:
        """Connect, and reconnect after every failure, until `close` is called."""
        while not self._stopping:
            address, delay = self.finder.next_attempt()
            if delay > 0:
                log.debug("next try: scheduler at %s in %.2f s", address, delay)
                await asyncio.sleep(delay)
                if self._stopping:
                    break
            self.target = address
            self._stream_welcomed = False
            failure: BaseException | None = None
            try:
                async with self._open_channel(address) as channel:
                    stub = agent_pb2_grpc.AgentGatewayStub(channel)  # type: ignore[no-untyped-call]
                    await self._run_stream(stub, address)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = exc
            finally:
                self._call = None
            if self._stopping:
                break
            self._after_stream(address, failure)

    def _open_channel(self, address: str) -> grpc.aio.Channel:
        """A channel to `address`: TLS with the certificate files as they are now, or plaintext."""
        if self.tls is not None:
            return grpc.aio.secure_channel(address, self.tls.credentials(),
                                           options=[*CHANNEL_OPTIONS, *self.tls.channel_options()])
        if self.token is not None:
            warn_plaintext_token(address, self.token, log)
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)

    def _after_stream(self, address: str, failure: BaseException | None) -> None:
        """Log what happened to the attempt at `address` (once per change) and plan the next."""
        leader = leader_named_by(failure) if failure is not None else None
        reason = _describe(failure) if failure is not None else "it ended the stream"
        follow = f"; the leader is at {leader}" if leader is not None and leader != address else ""
        if self._stream_welcomed:
            log.warning("lost the scheduler at %s: %s%s; reconnecting", address, reason, follow)
            self.finder.lost(address, leader)
            return
        self.finder.failed(address, leader)
        key = (address, f"{_failure_kind(failure)} {leader or ''}")
        if key in self._failures_logged:
            log.debug("still cannot reach scheduler at %s: %s%s", address, reason, follow)
            return
        self._failures_logged.add(key)
        if _refused_credentials(failure):
            log.error("scheduler at %s refused this agent (%s): check the agent's token (--token-file, %s) "
                      "and, with mTLS, its certificate; both must be bound to this worker id; retrying with backoff",
                      address, reason, self.token.origin if self.token else "none given")
        elif leader is not None:
            log.info("scheduler at %s is not the leader (%s); trying the leader at %s", address, reason, leader)
        else:
            log.warning("cannot reach scheduler at %s (%s); retrying with backoff", address, reason)

    async def _run_stream(self, stub: Any, address: str) -> None:
        """One stream from hello to its end; returns when the scheduler ends it, raises on failure."""
        call = stub.Connect(metadata=self.token.metadata() if self.token is not None else None)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
                await call.write(agent_pb2.ConnectRequest(hello=self.build_hello()))
                first = await call.read()
            if first is _EOF:
                raise ConnectionError("scheduler ended the stream before welcoming the agent")
            if first.WhichOneof("message") != "welcome":
                raise WelcomeMissingError(
                    f"scheduler answered hello with {first.WhichOneof('message')!r}, expected welcome"
                )
            self._accept_welcome(first.welcome, address)
            self._stream_welcomed = True
            self._call = call
            heartbeats = asyncio.create_task(self._heartbeat(call), name="agent-heartbeat")
            reader = asyncio.create_task(self._read_all(call), name="agent-reader")
            try:
                # Whichever ends first ends the stream: a failed heartbeat write as much as a read.
                done, _ = await asyncio.wait({heartbeats, reader}, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
            finally:
                for task in (heartbeats, reader):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        finally:
            call.cancel()

    async def _read_all(self, call: Any) -> None:
        while True:
            response = await call.read()
            if response is _EOF:
                return
            self._handle(response)

    def _accept_welcome(self, welcome: agent_pb2.AgentWelcome, address: str) -> None:
        previous = self.welcome
        self.welcome = Welcome(
            heartbeat_interval_seconds=welcome.heartbeat_interval_seconds
            or DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
            state_redis_url=welcome.state_redis_url,
            key_prefix=welcome.key_prefix,
        )
        self.finder.connected(address)
        self._failures_logged.clear()
        log.info("connected to leader %s (heartbeat every %.2f s)", address, self.welcome.heartbeat_interval_seconds)
        if welcome.rejoined_after_loss:
            log.warning("the scheduler had declared this worker lost; it rejoins with no tasks")
        if previous is not None and (
            previous.state_redis_url != self.welcome.state_redis_url
            or previous.key_prefix != self.welcome.key_prefix
        ):
            # The Celery worker's state Redis is fixed at its start; it keeps the first values.
            log.warning(
                "scheduler now names state Redis %r prefix %r; the running worker keeps %r %r",
                display_url(self.welcome.state_redis_url), self.welcome.key_prefix,
                display_url(previous.state_redis_url), previous.key_prefix,
            )
        self.first_welcome.set()

    async def _heartbeat(self, call: Any) -> None:
        sequence = 0
        # The hello carried the labels of that moment; send the full set again only on change.
        sent_labels = self.current_labels() if self.current_labels else {}
        while True:
            interval = self.welcome.heartbeat_interval_seconds if self.welcome else DEFAULT_HEARTBEAT_INTERVAL_SECONDS
            await asyncio.sleep(interval)
            sequence += 1
            heartbeat = agent_pb2.AgentHeartbeat(sequence=sequence, load=self.sample_load())
            running = self.running_attempts() if self.running_attempts else None
            if running is not None:
                heartbeat.running.SetInParent()
                heartbeat.running.attempts.extend(
                    agent_pb2.RunningAttempt(task_id=task_id, attempt=attempt) for task_id, attempt in running)
            labels = self.current_labels() if self.current_labels else sent_labels
            if labels != sent_labels:
                heartbeat.labels.update(labels)
                heartbeat.labels_replaced = True
                sent_labels = labels
            async with self._write_lock:
                await call.write(agent_pb2.ConnectRequest(heartbeat=heartbeat))

    def _handle(self, response: agent_pb2.ConnectResponse) -> None:
        kind = response.WhichOneof("message")
        if kind == "drain":
            # Nothing to do locally: the scheduler simply stops handing work to this worker.
            log.info("scheduler drains this worker: %s", response.drain.reason or "no reason given")
        elif kind == "cancel":
            task_id, attempt = response.cancel.task_id, response.cancel.attempt
            log.info("scheduler cancels task %s attempt %d", task_id, attempt)
            cancel: asyncio.Task[None] = asyncio.create_task(self.on_cancel(task_id, attempt), name=f"cancel-{task_id}")
            # Keep a reference until done, or the task may be garbage-collected mid-flight.
            self._cancel_tasks.add(cancel)
            cancel.add_done_callback(self._cancel_tasks.discard)
        elif kind == "welcome":
            self._accept_welcome(response.welcome, self.target)
        else:
            log.warning("ignoring unknown message %r from the scheduler", kind)

    async def send_worker_exited(self, exit_code: int, reason: str) -> bool:
        """Report that the Celery worker exited, if a stream is open; True when it was written."""
        call = self._call
        if call is None:
            log.warning("not connected: could not report that the Celery worker exited (%s)", reason)
            return False
        message = agent_pb2.ConnectRequest(
            worker_exited=agent_pb2.WorkerExited(exit_code=exit_code, reason=reason)
        )
        try:
            async with asyncio.timeout(WORKER_EXITED_SEND_TIMEOUT_SECONDS), self._write_lock:
                await call.write(message)
                await call.done_writing()
            return True
        except Exception as exc:
            log.warning("could not report that the Celery worker exited: %s", _describe(exc))
            return False

    async def close(self) -> None:
        """Stop reconnecting and end the current stream."""
        self._stopping = True
        call = self._call
        if call is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0), self._write_lock:
                    await call.done_writing()
            call.cancel()


def _refused_credentials(exc: BaseException | None) -> bool:
    """True when the scheduler refused the agent's token or identity."""
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def _failure_kind(exc: BaseException | None) -> str:
    """What kind of failure `exc` is, for "have we said this already?" (details vary per try)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    return type(exc).__name__


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, TimeoutError):
        return f"no welcome within {OPEN_TIMEOUT_SECONDS:g} s"
    return f"{type(exc).__name__}: {exc}"
