"""An in-process scheduler on port 0 and a protocol-level worker, for integration tests.

`InProcessScheduler` runs the real scheduler (engine, store, dispatcher, gRPC server) on an
event loop in a background thread. `ProtocolWorker` is a worker stripped to its wire protocol:
it registers over the real AgentGateway stream, consumes its real Celery queue from Redis
with kombu, and claims/reports attempts exactly as docs/wire-contract.md says — with the
test deciding when each task starts and ends.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import redis
from kombu import Connection, Consumer, Exchange, Queue
from switchyard.v1 import agent_pb2, agent_pb2_grpc, scheduler_pb2_grpc, worker_pb2
from switchyard.wire import HEADER_ATTEMPT, HEADER_TASK_ID, Keys, claim_script, worker_queue

from scheduler.main import Scheduler, start
from scheduler.metrics import Metrics
from scheduler.settings import Settings


async def _cancel_leftovers() -> None:
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


class InProcessScheduler:
    """The real scheduler, served from a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = replace(settings, listen="127.0.0.1:0", metrics_listen="")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.running: Scheduler | None = None
        self.channel: grpc.Channel | None = None
        # Our own handle on the scheduler's metrics: tests wait on its counters as events.
        self.metrics = Metrics()

    def start(self) -> InProcessScheduler:
        self.thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start(self.settings, self.metrics), self.loop).result(30)
        self.channel = grpc.insecure_channel(
            self.target, options=[("grpc.max_send_message_length", 32 << 20),
                                  ("grpc.max_receive_message_length", 32 << 20)])
        return self

    @property
    def target(self) -> str:
        assert self.running is not None
        return f"127.0.0.1:{self.running.port}"

    @property
    def stub(self) -> scheduler_pb2_grpc.SchedulerStub:
        assert self.channel is not None
        return scheduler_pb2_grpc.SchedulerStub(self.channel)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def metric(self, sample: str) -> float:
        """Current value of one unlabelled metric sample (`switchyard_stale_reports_total`); 0
        before it exists."""
        return self.metrics.registry.get_sample_value(sample) or 0.0

    def wait_metric(self, sample: str, at_least: float, timeout: float = 10.0) -> float:
        """Wait until a counter sample reaches `at_least` (an event the scheduler counts itself);
        fail with its last value on timeout. Returns the value reached."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(sample)) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{sample} still {value} after {timeout}s, waited for >= {at_least}")
            time.sleep(0.02)
        return value

    def stop(self) -> None:
        if not self.loop.is_running():
            return
        if self.channel is not None:
            self.channel.close()
        if self.running is not None:
            self.call(self.running.stop(grace=0))
        self.call(_cancel_leftovers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Delivery:
    """One Celery message a protocol worker received."""

    task_id: str
    attempt: int
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]
    received_at: float = 0.0


class ProtocolWorker:
    """A worker speaking the real protocol, driven step by step by a test."""

    def __init__(self, target: str, worker_id: str, broker_url: str, state_url: str, *,
                 worker_type: int = worker_pb2.WORKER_TYPE_CPU, slots: int = 1,
                 gpus: tuple[int, ...] = (), labels: dict[str, str] | None = None,
                 prefix: str = "sy", heartbeat_interval: float = 0.2,
                 metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.worker_id = worker_id
        self.metadata = metadata  # sent on Connect (an agent token: `authorization: Bearer ...`)
        self.queue_name = worker_queue(worker_id)
        self.keys = Keys(prefix)
        self.heartbeat_interval = heartbeat_interval
        self._outgoing: queue.Queue[agent_pb2.ConnectRequest | None] = queue.Queue()
        self.commands: list[agent_pb2.ConnectResponse] = []
        self.deliveries: list[Delivery] = []
        self._stop = threading.Event()
        self.redis = redis.Redis.from_url(state_url, decode_responses=True)
        self._claim = self.redis.register_script(claim_script())
        self.hello = agent_pb2.AgentHello(
            worker_id=worker_id, worker_type=worker_type, slots=slots, labels=labels or {},
            celery_queue=self.queue_name,
            capabilities=worker_pb2.WorkerCapabilities(
                cpu_count=2, gpu_simulated=bool(gpus),
                gpus=[worker_pb2.GpuDevice(index=i, name="SIM", uuid=f"SIM-GPU-{i}",
                                           memory_total_mb=mb, memory_free_mb=mb) for i, mb in enumerate(gpus)],
            ),
        )
        self._channel = grpc.insecure_channel(target)
        self._broker = Connection(broker_url)
        self._threads: list[threading.Thread] = []
        self.heartbeating = True
        self.stream_error: grpc.RpcError | None = None

    # stream -----------------------------------------------------------------------------
    def _requests(self) -> Iterator[agent_pb2.ConnectRequest]:
        yield agent_pb2.ConnectRequest(hello=self.hello)
        while True:
            item = self._outgoing.get()
            if item is None:
                return
            yield item

    def connect(self) -> ProtocolWorker:
        stub = agent_pb2_grpc.AgentGatewayStub(self._channel)
        self._responses = stub.Connect(self._requests(), metadata=self.metadata or None)
        welcome = next(self._responses)
        assert welcome.HasField("welcome"), welcome
        self.welcome = welcome.welcome
        for target in (self._read_commands, self._heartbeat, self._consume):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read_commands(self) -> None:
        try:
            for message in self._responses:
                self.commands.append(message)
        except grpc.RpcError as exc:
            self.stream_error = exc  # how the scheduler ended the stream

    def _heartbeat(self) -> None:
        sequence = 0
        while not self._stop.wait(self.heartbeat_interval):
            if self.heartbeating:
                sequence += 1
                self._outgoing.put(agent_pb2.ConnectRequest(heartbeat=agent_pb2.AgentHeartbeat(sequence=sequence)))

    def _consume(self) -> None:
        exchange = Exchange(self.queue_name, type="direct")
        q = Queue(self.queue_name, exchange, routing_key=self.queue_name)

        def on_message(body: Any, message: Any) -> None:
            args, kwargs, _embed = body
            headers = message.headers
            self.deliveries.append(Delivery(headers[HEADER_TASK_ID], int(headers[HEADER_ATTEMPT]),
                                            headers["task"], args, kwargs, headers, time.time()))
            message.ack()

        with self._broker.clone() as conn, Consumer(conn, queues=[q], callbacks=[on_message], accept=["json"]):
            while not self._stop.is_set():
                try:
                    conn.drain_events(timeout=0.1)
                except TimeoutError:
                    pass
                except OSError:
                    if self._stop.is_set():
                        return
                    time.sleep(0.1)

    # task steps ---------------------------------------------------------------------------
    def claim(self, delivery: Delivery) -> bool:
        """Run the claim script; True when this attempt may run."""
        keys = [self.keys.task(delivery.task_id), self.keys.notify]
        return self._claim(keys=keys, args=[delivery.attempt, self.worker_id, delivery.task_id, repr(time.time()),
                                            "0"]) != 0

    def report(self, delivery: Delivery, kind: str, **fields: str) -> None:
        self.redis.xadd(self.keys.events, {
            "type": kind, "task_id": delivery.task_id, "attempt": str(delivery.attempt),
            "worker_id": self.worker_id, "ts": repr(time.time()), **fields,
        })

    def succeed(self, delivery: Delivery, result: Any = None) -> None:
        self.report(delivery, "succeeded", result_json=json.dumps(result))

    def fail(self, delivery: Delivery, error: str = "ValueError: boom") -> None:
        self.report(delivery, "failed", error=error, traceback="Traceback ...", error_type="ValueError")

    def exited(self, code: int = -9) -> None:
        self._outgoing.put(agent_pb2.ConnectRequest(worker_exited=agent_pb2.WorkerExited(exit_code=code, reason="killed")))

    def disconnect(self) -> None:
        """Drop the stream (like a crashed agent), leaving the Celery queue alone."""
        self._stop.set()
        self._outgoing.put(None)
        self._channel.close()

    def join(self) -> None:
        """Wait until the stream and the queue consumer have really stopped."""
        for thread in self._threads:
            thread.join(5)

    def close(self) -> None:
        self.disconnect()
        self.join()
        self._broker.release()
        self.redis.close()
