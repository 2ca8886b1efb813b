"""A bare Python gRPC echo service with the scheduler's ``SubmitTask`` signature, and the client
loop the dispatch benchmark drives both it and the real scheduler with.

    .venv/bin/python bench/bench_echo.py --listen 127.0.0.1:PORT     # serve until SIGTERM/SIGINT

The server implements ``switchyard.v1.Scheduler/SubmitTask`` on a plain ``grpc.aio`` server
(default event loop, no options, no interceptors) and answers every call with one fixed
``SubmitTaskResponse`` without doing anything: the ceiling a Python gRPC service of this shape
reaches on the machine. ``flood`` is the client: one ``grpc.aio`` channel, ``in_flight``
coroutines each sending ``SubmitTask`` and awaiting the reply before the next, so exactly
``in_flight`` calls are outstanding; the benchmark runs the very same function against the
echo server and against ``switchyard-scheduler``, so the two figures differ by the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc  # noqa: E402

_REPLY = scheduler_pb2.SubmitTaskResponse(task_id="echo", queue="echo", priority=5)


class EchoScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """``SubmitTask`` answered with a constant; every other method is left unimplemented."""

    async def SubmitTask(self, request: Any, context: Any) -> Any:
        return _REPLY


async def serve(listen: str) -> None:
    """Serve the echo service on ``listen`` until SIGTERM or SIGINT."""
    server = grpc.aio.server()
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(EchoScheduler(), server)  # type: ignore[no-untyped-call]
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"bench_echo: cannot listen on {listen}")
    await server.start()
    print(f"echo SubmitTask serving on {listen}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def submit_request(phase: str) -> Any:
    """What the benchmark submits: ``bench.noop(time.time(), phase=phase)``, as the client does."""
    return scheduler_pb2.SubmitTaskRequest(
        task_name="bench.noop", args_json=json.dumps([time.time()]),
        kwargs_json=json.dumps({"phase": phase}),
    )


async def flood(target: str, calls: int, in_flight: int, phase: str, warmup: int = 100,
                timeout: float = 60.0) -> float:
    """Send ``calls`` SubmitTask calls with ``in_flight`` outstanding at any time, after
    ``warmup`` unmeasured ones on the same channel; the seconds the measured calls took."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)  # type: ignore[no-untyped-call]

        async def run(total: int) -> None:
            left = total

            async def one_by_one() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await stub.SubmitTask(submit_request(phase), timeout=timeout)

            await asyncio.gather(*(one_by_one() for _ in range(min(in_flight, total))))

        await run(warmup)
        started = time.perf_counter()
        await run(calls)
        return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    options = parser.parse_args(argv)
    asyncio.run(serve(options.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
