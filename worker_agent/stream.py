"""The agent's side of `AgentGateway.Connect`: one long-lived bidirectional gRPC stream.

Each stream opens with `hello`, waits for the scheduler's `welcome`, then heartbeats every
`welcome.heartbeat_interval_seconds` with a sequence starting at 1 and the current load,
while a reader handles `drain` and `cancel`. Any failure — scheduler down, stream reset, a
half-open TCP connection caught by keepalive — ends the stream and a new one is opened after
an exponential backoff with jitter, forever, until the agent stops. Reconnecting with the
same worker id within the scheduler's grace period keeps the worker's in-flight tasks.

The stream knows nothing about Celery: the agent passes in how to build a hello, how to
sample load, and what to do on cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from switchyard.v1 import agent_pb2, agent_pb2_grpc, worker_pb2

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


@dataclass(frozen=True)
class Welcome:
    """What the scheduler told the agent in its latest welcome."""

    heartbeat_interval_seconds: float
    state_redis_url: str
    key_prefix: str


class WelcomeMissingError(RuntimeError):
    """The scheduler's first answer on a stream was not a welcome."""


def backoff_delays(initial: float, maximum: float, rng: random.Random | None = None) -> Any:
    """Endless reconnect delays: doubling from `initial` up to `maximum`, each jittered.

    Jitter takes each delay uniformly from [half, full] so a fleet of agents cut off by the
    same scheduler restart does not reconnect in lockstep.
    """
    rng = rng or random.Random()
    ceiling = initial
    while True:
        yield rng.uniform(ceiling / 2, ceiling)
        ceiling = min(maximum, ceiling * 2)


class AgentStream:
    """Keeps one Connect stream open to the scheduler for the life of the agent."""

    def __init__(
        self,
        target: str,
        build_hello: Callable[[], agent_pb2.AgentHello],
        sample_load: Callable[[], worker_pb2.WorkerLoad],
        on_cancel: Callable[[str, int], Coroutine[Any, Any, None]],
        reconnect_max_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
        reconnect_initial_seconds: float = INITIAL_BACKOFF_SECONDS,
        current_labels: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.target = target
        self.build_hello = build_hello
        self.sample_load = sample_load
        self.on_cancel = on_cancel
        self.current_labels = current_labels
        """Labels now (static + runtime); a change is sent with the next heartbeat."""
        self.reconnect_max_seconds = reconnect_max_seconds
        self.reconnect_initial_seconds = reconnect_initial_seconds
        self.welcome: Welcome | None = None
        """The latest welcome; None until the first stream is accepted."""
        self.first_welcome = asyncio.Event()
        self._call: Any = None
        self._write_lock = asyncio.Lock()
        self._stopping = False
        self._stream_welcomed = False
        self._cancel_tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Connect, and reconnect after every failure, until `close` is called."""
        delays = backoff_delays(self.reconnect_initial_seconds, self.reconnect_max_seconds)
        while not self._stopping:
            self._stream_welcomed = False
            try:
                async with grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS) as channel:
                    stub = agent_pb2_grpc.AgentGatewayStub(channel)  # type: ignore[no-untyped-call]
                    await self._run_stream(stub)
                if not self._stopping:
                    log.warning("scheduler %s closed the stream; reconnecting", self.target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    break
                reason = _describe(exc)
                if self._stream_welcomed:
                    log.warning("stream to scheduler %s lost (%s); reconnecting", self.target, reason)
                else:
                    log.warning("cannot reach scheduler %s (%s)", self.target, reason)
            finally:
                self._call = None
            if self._stopping:
                break
            if self._stream_welcomed:
                # A stream that was accepted earns a fast reconnect: start the backoff afresh.
                delays = backoff_delays(self.reconnect_initial_seconds, self.reconnect_max_seconds)
            delay = next(delays)
            log.info("reconnecting to scheduler %s in %.2f s", self.target, delay)
            await asyncio.sleep(delay)

    async def _run_stream(self, stub: Any) -> None:
        """One stream from hello to its end; returns when the scheduler ends it, raises on failure."""
        call = stub.Connect()
        await call.write(agent_pb2.ConnectRequest(hello=self.build_hello()))
        first = await call.read()
        if first is _EOF:
            raise ConnectionError("scheduler ended the stream before welcoming the agent")
        if first.WhichOneof("message") != "welcome":
            raise WelcomeMissingError(
                f"scheduler answered hello with {first.WhichOneof('message')!r}, expected welcome"
            )
        self._accept_welcome(first.welcome)
        self._stream_welcomed = True
        self._call = call
        heartbeats = asyncio.create_task(self._heartbeat(call), name="agent-heartbeat")
        try:
            while True:
                response = await call.read()
                if response is _EOF:
                    return
                self._handle(response)
        finally:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await heartbeats
            call.cancel()

    def _accept_welcome(self, welcome: agent_pb2.AgentWelcome) -> None:
        previous = self.welcome
        self.welcome = Welcome(
            heartbeat_interval_seconds=welcome.heartbeat_interval_seconds
            or DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
            state_redis_url=welcome.state_redis_url,
            key_prefix=welcome.key_prefix,
        )
        log.info(
            "welcomed by scheduler %s (heartbeat every %.2f s)",
            self.target, self.welcome.heartbeat_interval_seconds,
        )
        if welcome.rejoined_after_loss:
            log.warning("the scheduler had declared this worker lost; it rejoins with no tasks")
        if previous is not None and (
            previous.state_redis_url != self.welcome.state_redis_url
            or previous.key_prefix != self.welcome.key_prefix
        ):
            # The Celery worker's environment is fixed at start; it keeps the first values.
            log.warning(
                "scheduler now names state Redis %r prefix %r; the running worker keeps %r %r",
                self.welcome.state_redis_url, self.welcome.key_prefix,
                previous.state_redis_url, previous.key_prefix,
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
            self._accept_welcome(response.welcome)
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
