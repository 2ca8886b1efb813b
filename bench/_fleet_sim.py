"""The simulated fleet of bench/bench_fleet.py: many agents and their workers in one process, no Celery.

    python -m bench._fleet_sim --target HOST:PORT --redis-url URL --agents N --slots S
        [--id-prefix sim] [--channels C] [--consumers K] [--no-work]

Agents: each opens its own `AgentGateway.Connect` stream (over its own channel with the real
agent's keepalive options, unless `--channels` shares fewer), sends a hello with S slots, reads
the welcome and then heartbeats at the interval the welcome names. All hellos are sent at the
same moment, after every channel is connected, and each stream's first answer is counted
(welcome, or the gRPC status that refused it) — no retries, so a refusal shows.

Workers: K consumer threads share the agents' Celery queues (`switchyard.wire.worker_queue`),
pop them with BLMPOP (kombu's Redis transport LPUSHes, consumers take from the right), read the
`sy_*` headers of kombu's JSON envelope, claim each attempt with the worker side's own
`StateStore.claim` and report success with `StateStore.emit_succeeded` — the same calls and so
the same protocol as `worker_agent/celery_hooks.py`, only without running user code.

Stdout carries JSON lines: `hello` once every agent has its first answer, `progress` every
half second, `final` after SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import redis  # noqa: E402
from switchyard.v1 import agent_pb2, agent_pb2_grpc, worker_pb2  # noqa: E402
from switchyard.wire import (  # noqa: E402
    DEFAULT_KEY_PREFIX,
    HEADER_ATTEMPT,
    HEADER_PAYLOAD_REF,
    HEADER_TASK_ID,
    worker_queue,
)

from worker_agent.attempts import Attempt  # noqa: E402
from worker_agent.state_client import StateStore  # noqa: E402
from worker_agent.stream import CHANNEL_OPTIONS  # noqa: E402

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]
PROGRESS_SECONDS = 0.5


def emit(event: str, **fields: Any) -> None:
    """One JSON line for the orchestrator."""
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


# --- workers: queue consumers ------------------------------------------------------------------


def attempt_of(raw: str, worker_id: str) -> Attempt:
    """The attempt named by a kombu Redis-transport envelope (JSON with a `headers` object)."""
    headers = json.loads(raw)["headers"]
    return Attempt(
        task_id=str(headers[HEADER_TASK_ID]),
        attempt=int(headers[HEADER_ATTEMPT]),
        worker_id=worker_id,
        payload_by_reference=str(headers.get(HEADER_PAYLOAD_REF) or "0") in ("1", "true", "True"),
    )


@dataclass
class WorkCounts:
    """What the consumer threads did; updated under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    succeeded: int = 0
    stale: int = 0
    errors: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    last_error: str = ""

    def add(self, succeeded: int, stale: int, at: float) -> None:
        with self.lock:
            self.succeeded += succeeded
            self.stale += stale
            if succeeded:
                self.first_at = self.first_at or at
                self.last_at = at


def consume(redis_url: str, prefix: str, worker_ids: Sequence[str], slots: int,
            counts: WorkCounts, stop: threading.Event) -> None:
    """Pop, claim and report for the given workers' queues until `stop` is set."""
    store = StateStore(redis_url, prefix)
    popper = redis.Redis.from_url(redis_url, decode_responses=True)
    owner = {worker_queue(w): w for w in worker_ids}
    keys = list(owner)
    turn = 0
    while not stop.is_set():
        # Rotate the key order so the first queues do not starve the rest (BLMPOP serves the
        # first non-empty list).
        turn = (turn + 1) % len(keys)
        order = keys[turn:] + keys[:turn]
        try:
            popped = popper.blmpop(1, len(order), *order, direction="RIGHT", count=slots)
        except redis.RedisError as exc:
            with counts.lock:
                counts.errors += 1
                counts.last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
            continue
        if not popped:
            continue
        queue, messages = popped
        succeeded = stale = 0
        for raw in messages:
            attempt = attempt_of(raw, owner[queue])
            if store.claim(attempt):
                store.emit_succeeded(attempt, None)
                succeeded += 1
            else:
                stale += 1
        counts.add(succeeded, stale, time.time())


# --- agents: the gRPC streams ------------------------------------------------------------------


@dataclass
class StreamCounts:
    """First answers to the hellos and what the streams did afterwards."""

    welcomed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    refusal_examples: dict[str, str] = field(default_factory=dict)
    heartbeats: int = 0
    commands: int = 0
    ended: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    eventually_welcomed: int = 0
    hello_latencies: list[float] = field(default_factory=list)


def hello_of(worker_id: str, slots: int) -> agent_pb2.AgentHello:
    return agent_pb2.AgentHello(
        worker_id=worker_id, worker_type=worker_pb2.WORKER_TYPE_CPU, slots=slots,
        celery_queue=worker_queue(worker_id), agent_version="bench-fleet",
        capabilities=worker_pb2.WorkerCapabilities(cpu_count=slots, memory_total_mb=4096,
                                                   hostname=worker_id),
    )


async def agent(channel: grpc.aio.Channel, worker_id: str, slots: int, go: asyncio.Event,
                counts: StreamCounts, all_answered: asyncio.Event, total: int) -> None:
    """One simulated agent: hello at `go`, then heartbeats until cancelled. A refused hello is
    counted (first answers only) and retried after a jittered backoff, as the real agent does."""
    stub = agent_pb2_grpc.AgentGatewayStub(channel)  # type: ignore[no-untyped-call]
    await go.wait()
    first_try = True
    while True:
        sent = time.monotonic()
        call = stub.Connect()
        try:
            await call.write(agent_pb2.ConnectRequest(hello=hello_of(worker_id, slots)))
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            first = exc
        welcomed = not isinstance(first, grpc.aio.AioRpcError) and first is not _EOF and first.HasField("welcome")
        if first_try:
            first_try = False
            counts.answered += 1
            if welcomed:
                counts.welcomed += 1
                counts.hello_latencies.append(time.monotonic() - sent)
            else:
                code = first.code().name if isinstance(first, grpc.aio.AioRpcError) else "NO_WELCOME"
                counts.refused[code] += 1
                counts.refusal_examples.setdefault(
                    code, str(first.details() if isinstance(first, grpc.aio.AioRpcError) else first))
            if counts.answered == total:
                all_answered.set()
        if welcomed:
            break
        call.cancel()
        await asyncio.sleep(random.uniform(0.1, 0.5))
    counts.eventually_welcomed += 1
    interval = first.welcome.heartbeat_interval_seconds or 1.0
    reader = asyncio.create_task(_read_commands(call, counts))
    sequence = 0
    try:
        while not reader.done():
            await asyncio.sleep(interval)
            sequence += 1
            # As a real agent's: its running attempts listed (none: the simulated claims and
            # reports are made by the consumer threads, in well under the scheduler's grace).
            await call.write(agent_pb2.ConnectRequest(heartbeat=agent_pb2.AgentHeartbeat(
                sequence=sequence, load=worker_pb2.WorkerLoad(active_tasks=0), running=agent_pb2.RunningAttempts())))
            counts.heartbeats += 1
    except grpc.aio.AioRpcError as exc:
        counts.ended[exc.code().name] += 1
    finally:
        reader.cancel()
        call.cancel()


async def _read_commands(call: Any, counts: StreamCounts) -> None:
    try:
        while (message := await call.read()) is not _EOF:
            counts.commands += 1
            del message
        counts.ended["EOF"] += 1
    except grpc.aio.AioRpcError as exc:
        counts.ended[exc.code().name] += 1


async def run_fleet(options: argparse.Namespace) -> None:
    worker_ids = [f"{options.id_prefix}-{n:04d}" for n in range(options.agents)]
    channel_count = options.channels or options.agents
    channels = [grpc.aio.insecure_channel(options.target, options=CHANNEL_OPTIONS) for _ in range(channel_count)]
    await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 60) for c in channels))
    counts = StreamCounts()
    go, all_answered = asyncio.Event(), asyncio.Event()
    agents = [asyncio.create_task(agent(channels[n % channel_count], worker_id, options.slots, go, counts,
                                        all_answered, len(worker_ids)))
              for n, worker_id in enumerate(worker_ids)]
    await asyncio.sleep(0.2)  # every agent task is parked on `go`
    started = time.monotonic()
    go.set()
    await all_answered.wait()
    latencies = sorted(counts.hello_latencies)
    emit("hello", agents=len(worker_ids), channels=channel_count, welcomed=counts.welcomed,
         refused=dict(counts.refused), refusal_examples=counts.refusal_examples,
         all_answered_seconds=round(time.monotonic() - started, 3),
         hello_p50_ms=round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
         hello_max_ms=round(latencies[-1] * 1000, 1) if latencies else None)

    while counts.eventually_welcomed < len(worker_ids):
        await asyncio.sleep(0.05)
    emit("all_welcomed", agents=len(worker_ids), seconds=round(time.monotonic() - started, 3))

    work = WorkCounts()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    if options.work:
        shards = [worker_ids[k::options.consumers] for k in range(options.consumers)]
        for shard in filter(None, shards):
            thread = threading.Thread(target=consume, daemon=True, args=(
                options.redis_url, options.key_prefix, shard, options.slots, work, stop))
            thread.start()
            threads.append(thread)

    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), PROGRESS_SECONDS)
        with work.lock:
            emit("progress", succeeded=work.succeeded, stale=work.stale, errors=work.errors,
                 heartbeats=counts.heartbeats)
    stop.set()
    for thread in threads:
        thread.join(5)
    for task in agents:
        task.cancel()
    await asyncio.gather(*agents, return_exceptions=True)
    emit("final", succeeded=work.succeeded, stale=work.stale, errors=work.errors,
         last_error=work.last_error, first_success_at=work.first_at, last_success_at=work.last_at,
         heartbeats=counts.heartbeats, commands=counts.commands, ended=dict(counts.ended))
    await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="scheduler gRPC address")
    parser.add_argument("--redis-url", required=True, help="state Redis (also the broker)")
    parser.add_argument("--key-prefix", default=DEFAULT_KEY_PREFIX)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--slots", type=int, default=4, help="slots per agent (its Celery --concurrency)")
    parser.add_argument("--id-prefix", default="sim")
    parser.add_argument("--channels", type=int, default=0, help="gRPC channels shared by the agents (0 = one each)")
    parser.add_argument("--consumers", type=int, default=4, help="queue-consumer threads")
    parser.add_argument("--no-work", dest="work", action="store_false", help="streams only: consume nothing")
    options = parser.parse_args(argv)
    asyncio.run(run_fleet(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
