"""The agent as a whole: a real `switchyard-agent` process supervising a real Celery worker,
talking to an in-process grpc.aio AgentGateway double (the scheduler's side of the stream) on
port 0, with a real redis-server for broker and state.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import redis
from celery import Celery
from switchyard.v1 import agent_pb2, agent_pb2_grpc
from switchyard.wire import (
    DEFAULT_KEY_PREFIX,
    FENCE_FIELD,
    HEADER_ATTEMPT,
    HEADER_PAYLOAD_REF,
    HEADER_TASK_ID,
    HEADER_WORKER_ID,
    Keys,
    fence_started,
    worker_queue,
)

from tests.support.redis_server import RedisServer, env_without_switchyard, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


class FakeGateway(agent_pb2_grpc.AgentGatewayServicer):
    """Records everything agents send; welcomes each stream; pushes commands on request."""

    def __init__(self, state_redis_url: str, heartbeat_interval: float = 0.2) -> None:
        self.state_redis_url = state_redis_url
        self.heartbeat_interval = heartbeat_interval
        self.received: list[tuple[int, agent_pb2.ConnectRequest]] = []
        self.streams = 0
        self.commands: asyncio.Queue[agent_pb2.ConnectResponse] | None = None
        self.lock = threading.Lock()

    async def Connect(self, request_iterator: Any, context: Any) -> None:
        with self.lock:
            self.streams += 1
            stream_no = self.streams
        self.commands = asyncio.Queue()
        hello = await context.read()
        with self.lock:
            self.received.append((stream_no, hello))
        await context.write(agent_pb2.ConnectResponse(welcome=agent_pb2.AgentWelcome(
            heartbeat_interval_seconds=self.heartbeat_interval,
            state_redis_url=self.state_redis_url, key_prefix=DEFAULT_KEY_PREFIX)))

        async def read_all() -> None:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:  # type: ignore[attr-defined]
                    return
                with self.lock:
                    self.received.append((stream_no, message))

        reader = asyncio.create_task(read_all())
        commands = self.commands
        while not reader.done():
            getter = asyncio.create_task(commands.get())
            done, _ = await asyncio.wait({reader, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await context.write(getter.result())
            else:
                getter.cancel()

    def messages(self, kind: str) -> list[Any]:
        with self.lock:
            return [getattr(m, kind) for _, m in self.received if m.WhichOneof("message") == kind]


class GatewayServer:
    """The fake gateway served by grpc.aio on its own event loop thread."""

    def __init__(self, gateway: FakeGateway, port: int = 0) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self.port = port
        self.server: Any = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.server = grpc.aio.server()
        agent_pb2_grpc.add_AgentGatewayServicer_to_server(self.gateway, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    def push(self, command: agent_pb2.ConnectResponse) -> None:
        queue = self.gateway.commands
        assert queue is not None
        self.loop.call_soon_threadsafe(queue.put_nowait, command)

    async def _shutdown(self) -> None:
        await self.server.stop(0)
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def start_agent(port: int, broker_url: str, log_path: Path, worker_id: str = "agent-t",
                extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    env = env_without_switchyard()
    env["AGENT_TEST_BROKER_URL"] = broker_url
    argv = [sys.executable, "-m", "worker_agent.main", "--scheduler", f"127.0.0.1:{port}",
            "--worker-id", worker_id, "--simulate-gpu", "1xA100:40960", "--labels", "zone=test",
            "--reconnect-max-seconds", "0.5", *(extra or []),
            "--", "celery", "-A", "tests.support.agent_app", "worker", "-P", "prefork", "-c", "1",
            "-l", "INFO"]
    with log_path.open("wb") as log_file:
        return subprocess.Popen(argv, env=env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)


def celery_children(agent: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(agent.pid).children()
    except psutil.NoSuchProcess:
        return []


@pytest.fixture()
def urls(redis_server: RedisServer) -> tuple[str, str]:
    # (broker, state): one Redis, as the agent's start-up broker check demands.
    redis_server.client().flushall()
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    return url, url


@pytest.fixture()
def agent_log(tmp_path: Path) -> Path:
    return tmp_path / "agent.log"


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture()
def gateway(urls: tuple[str, str]) -> Iterator[GatewayServer]:
    server = GatewayServer(FakeGateway(urls[1]))
    try:
        yield server
    finally:
        server.stop()


def test_agent_registers_heartbeats_and_reports_a_dead_worker(
        gateway: GatewayServer, urls: tuple[str, str], agent_log: Path) -> None:
    agent = start_agent(gateway.port, urls[0], agent_log)
    try:
        hello = wait_until(lambda: gateway.gateway.messages("hello"), timeout=15, message="hello")[0]
        assert hello.worker_id == "agent-t"
        assert hello.celery_queue == worker_queue("agent-t")
        assert hello.slots == 1
        assert hello.worker_type == 2  # WORKER_TYPE_GPU: simulated GPUs count as GPUs
        assert hello.capabilities.gpu_simulated is True
        assert [g.uuid for g in hello.capabilities.gpus] == ["SIM-GPU-0"]
        assert dict(hello.labels) == {"zone": "test"}
        # The Celery worker started first and named its tasks, so even the first hello has them.
        assert "agent_app.sleep" in hello.registered_tasks
        assert not any(name.startswith("celery.") for name in hello.registered_tasks)
        assert hello.celery_pid == celery_children(agent)[0].pid

        heartbeats = wait_until(lambda: len(gateway.gateway.messages("heartbeat")) >= 3 and
                                gateway.gateway.messages("heartbeat"), timeout=10, message="3 heartbeats")
        assert [h.sequence for h in heartbeats[:3]] == [1, 2, 3]
        assert [g.memory_total_mb for g in heartbeats[0].load.gpus] == [40960]

        # Celery consumes only after the welcome, which named the state Redis it was handed.
        child = wait_until(lambda: celery_children(agent), timeout=10, message="celery child")[0]
        assert child.environ()["SWITCHYARD_WORKER_ID"] == "agent-t"
        wait_until(lambda: "ready." in agent_log.read_text(errors="replace"), timeout=30, message="celery ready")
        assert f"releasing the Celery worker: state Redis {urls[1]}" in agent_log.read_text(errors="replace")

        child.send_signal(signal.SIGKILL)
        exited = wait_until(lambda: gateway.gateway.messages("worker_exited"), timeout=10,
                            message="worker_exited")[0]
        assert exited.exit_code == -signal.SIGKILL
        assert "SIGKILL" in exited.reason
        assert agent.wait(10) != 0
    finally:
        stop_process(agent)


def test_agent_waits_for_the_scheduler_then_runs_fenced_work_and_cancels(
        urls: tuple[str, str], agent_log: Path) -> None:
    port = free_port()
    agent = start_agent(port, urls[0], agent_log, worker_id="late", extra=["--log-level", "DEBUG"])
    server: GatewayServer | None = None
    try:
        # Scheduler unreachable: the agent keeps retrying, and its Celery worker, started and
        # waiting for the welcome, consumes nothing. Two failed connects (the repeat is logged at
        # DEBUG) prove it held across a retry, not just before the first one.
        wait_until(lambda: "still cannot reach scheduler" in agent_log.read_text(errors="replace"),
                   timeout=15, message="two failed connects")
        assert agent.poll() is None
        assert "ready." not in agent_log.read_text(errors="replace")

        server = GatewayServer(FakeGateway(urls[1]), port=port)
        wait_until(lambda: server.gateway.messages("hello"), timeout=15, message="hello after scheduler start")
        wait_until(lambda: "ready." in agent_log.read_text(errors="replace"), timeout=30, message="celery ready")

        state = redis.Redis.from_url(urls[1], decode_responses=True)
        keys = Keys(DEFAULT_KEY_PREFIX)
        publisher = Celery("publisher", broker=urls[0])
        # Subscribed before the hand-out, so the claim's announcement cannot slip past.
        claims = state.pubsub()
        claims.subscribe(keys.notify)
        confirmed = claims.get_message(timeout=10)
        assert confirmed is not None and confirmed["type"] == "subscribe", confirmed
        # Handed out as the scheduler's hand-out script records it: the fence is in the task hash.
        state.hset(keys.task("long"), mapping={"state": "dispatched", "attempt": "1", FENCE_FIELD: "1",
                                                   "watched": "1"})
        publisher.send_task("agent_app.sleep", args=[30], queue=worker_queue("late"), task_id="long-1",
                            headers={HEADER_TASK_ID: "long", HEADER_ATTEMPT: 1, HEADER_WORKER_ID: "late",
                                     HEADER_PAYLOAD_REF: 0}, serializer="json")
        announced = claims.get_message(timeout=15)
        assert announced is not None and announced["data"] == "started long 1 late", announced
        claims.close()
        assert state.hget(keys.task("long"), FENCE_FIELD) == fence_started(1)
        assert state.hget(keys.task("long"), "state") == "running"
        # Heartbeats count the running attempt, and name it.
        wait_until(lambda: (beats := server.gateway.messages("heartbeat")) and beats[-1].load.active_tasks == 1,
                   timeout=5, message="active_tasks == 1")
        listed = server.gateway.messages("heartbeat")[-1]
        assert listed.HasField("running")
        assert [(a.task_id, a.attempt) for a in listed.running.attempts] == [("long", 1)]

        state.hset(keys.task("long"), mapping={"state": "cancelled", FENCE_FIELD: "cancelled"})
        server.push(agent_pb2.ConnectResponse(cancel=agent_pb2.CancelCommand(task_id="long", attempt=1)))
        wait_until(lambda: "Task agent_app.sleep[long-1]" in agent_log.read_text(errors="replace")
                   and "WorkerLostError" in agent_log.read_text(errors="replace"),
                   timeout=10, message="pool child killed by cancel")
        # A cancelled attempt reports nothing: the agent removed its pid file before the kill.
        assert state.xrange(keys.events) == []
        wait_until(lambda: server.gateway.messages("heartbeat")[-1].load.active_tasks == 0,
                   timeout=10, message="active_tasks back to 0")
        emptied = server.gateway.messages("heartbeat")[-1]
        assert emptied.HasField("running") and list(emptied.running.attempts) == []

        server.push(agent_pb2.ConnectResponse(drain=agent_pb2.DrainCommand(reason="maintenance")))
        wait_until(lambda: "drains this worker: maintenance" in agent_log.read_text(errors="replace"),
                   timeout=5, message="drain logged")

        # Scheduler restart: the agent reconnects on its own, Celery keeps running, and the new
        # stream's hello names the running Celery pid and heartbeats count from 1 again.
        celery_pid = celery_children(agent)[0].pid
        server.stop()
        server = GatewayServer(FakeGateway(urls[1]), port=port)
        rejoined = wait_until(lambda: server.gateway.messages("hello"), timeout=15, message="hello again")[0]
        assert rejoined.celery_pid == celery_pid
        heartbeats = wait_until(lambda: server.gateway.messages("heartbeat"), timeout=5, message="heartbeat")
        assert heartbeats[0].sequence == 1
        assert celery_children(agent)[0].pid == celery_pid

        # Graceful stop: exit 0, Celery gone.
        children = celery_children(agent)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
        assert server.gateway.messages("worker_exited")
    finally:
        stop_process(agent)
        if server is not None:
            server.stop()


def test_celery_worker_stops_when_the_agent_is_killed(
        gateway: GatewayServer, urls: tuple[str, str], agent_log: Path) -> None:
    agent = start_agent(gateway.port, urls[0], agent_log, worker_id="orphan")
    try:
        wait_until(lambda: "ready." in agent_log.read_text(errors="replace"), timeout=30, message="celery ready")
        child = celery_children(agent)[0]
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        # No orphan keeps consuming the queue of a worker the scheduler will declare lost.
        wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
                   timeout=20, message="celery worker gone after its agent died")
    finally:
        stop_process(agent)
