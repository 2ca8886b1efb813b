"""A fleet reconnecting at once: 1,000 agents that say hello at the same moment are all welcomed.

Before issue 8 each hello wrote its registration with its own concurrent Redis call, so a burst
opened a Redis connection per stream until redis-py's pool refused (`MaxConnectionsError`) and
8-14 % of the agents were turned away. The real scheduler runs in-process on a real Redis; the
agents are bare Connect streams (hello, then silence) sharing a few channels, all released
together once every stream is parked at the starting line.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
from switchyard.v1 import agent_pb2, agent_pb2_grpc, scheduler_pb2, worker_pb2
from switchyard.wire import Keys, worker_queue

from tests.support.inproc import InProcessScheduler
from tests.support.redis_server import RedisServer

AGENTS = 1000
CHANNELS = 20


def _hello(worker_id: str) -> agent_pb2.ConnectRequest:
    return agent_pb2.ConnectRequest(hello=agent_pb2.AgentHello(
        worker_id=worker_id, worker_type=worker_pb2.WORKER_TYPE_CPU, slots=1,
        celery_queue=worker_queue(worker_id)))


async def _storm(target: str, check: Any) -> tuple[Counter[str], Any]:
    """Open AGENTS streams at once; the first answer of each, and `check()` while all are open."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    go = asyncio.Event()
    answers: Counter[str] = Counter()
    calls: list[Any] = []

    async def agent(n: int) -> None:
        stub = agent_pb2_grpc.AgentGatewayStub(channels[n % CHANNELS])  # type: ignore[no-untyped-call]
        await go.wait()
        call = stub.Connect()
        calls.append(call)
        try:
            await call.write(_hello(f"scale-{n:04d}"))
            first = await call.read()
            answers[first.WhichOneof("message") or "nothing"] += 1
        except grpc.aio.AioRpcError as exc:
            answers[f"{exc.code().name}: {exc.details()}"] += 1

    agents = [asyncio.create_task(agent(n)) for n in range(AGENTS)]
    await asyncio.sleep(0)  # every agent is parked on `go`
    go.set()
    await asyncio.gather(*agents)
    try:
        seen = await asyncio.to_thread(check)
    finally:
        for call in calls:
            call.cancel()
        await asyncio.gather(*(channel.close() for channel in channels))
    return answers, seen


def test_a_thousand_agents_saying_hello_at_once_are_all_welcomed(make_scheduler: Any, fresh_redis: RedisServer) -> None:
    # These agents never heartbeat: a timeout longer than the storm keeps the first ones from
    # being declared lost before the last is welcomed on a busy machine.
    scheduler: InProcessScheduler = make_scheduler(heartbeat_timeout_seconds=120.0, lost_grace_seconds=120.0)

    def connected_workers() -> int:
        reply = scheduler.stub.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=30)
        return sum(w.status == scheduler_pb2.WORKER_STATUS_CONNECTED for w in reply.workers)

    answers, connected = asyncio.run(_storm(scheduler.target, connected_workers))

    assert answers == Counter({"welcome": AGENTS})
    assert connected == AGENTS
    # Every registration is durable: a restarted scheduler knows whose in-flight ledgers it finds.
    assert fresh_redis.client().hlen(Keys().workers) == AGENTS
