"""The submitting client of bench/bench_fleet.py, in its own process.

    python -m bench._fleet_submit --target HOST:PORT --count M [--batch B] [--in-flight F]
        [--priorities LO-HI] [--seed N] [--records FILE] [--first-call N] [--single]

Submits M tasks (`bench.fleet.noop`, no arguments) with priorities drawn uniformly from LO-HI,
as fast as the scheduler accepts them: `SubmitBatch` calls of B tasks (or, with `--single`,
`SubmitTask` calls) with F calls in flight over one channel. With `--records`, writes one line
per task, `task_id priority acked_at call`, where `acked_at` is `time.time()` when the reply
arrived (the simulator's proof that the task was pending from then on) and `call` numbers the
SubmitBatch call it came in (one atomic submission). Prints one JSON line at the end:
count, first send, last reply, rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc  # noqa: E402

TASK_NAME = "bench.fleet.noop"
_MESSAGE_LIMIT = 64 << 20


def parse_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


async def submit_all(options: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(options.seed)
    low, high = options.priorities
    size = 1 if options.single else options.batch
    chunks = [[rng.randint(low, high) for _ in range(min(size, options.count - start))]
              for start in range(0, options.count, size)]
    lines: list[str] = []
    retries = 0
    async with grpc.aio.insecure_channel(options.target, options=[
        ("grpc.max_send_message_length", _MESSAGE_LIMIT), ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
    ]) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)  # type: ignore[no-untyped-call]
        queue: asyncio.Queue[tuple[int, list[int]]] = asyncio.Queue()
        for number, chunk in enumerate(chunks, start=options.first_call):
            queue.put_nowait((number, chunk))

        async def one(priorities: list[int]) -> list[tuple[str, int]]:
            nonlocal retries
            requests = [scheduler_pb2.SubmitTaskRequest(task_name=TASK_NAME, priority=p) for p in priorities]
            for delay in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, None):
                try:
                    if options.single:
                        reply = await stub.SubmitTask(requests[0])
                        return [(reply.task_id, reply.priority)]
                    batch = await stub.SubmitBatch(scheduler_pb2.SubmitBatchRequest(tasks=requests))
                    return [(r.task_id, r.priority) for r in batch.results]
                except grpc.aio.AioRpcError as exc:
                    if delay is None or exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    retries += 1
                    await asyncio.sleep(delay)
            raise AssertionError("unreachable")

        async def lane() -> None:
            while not queue.empty():
                number, priorities = queue.get_nowait()
                accepted = await one(priorities)
                acked = repr(time.time())
                if options.records:
                    lines.extend(f"{task_id} {priority} {acked} {number}" for task_id, priority in accepted)

        first_send = time.time()
        await asyncio.gather(*(lane() for _ in range(options.in_flight)))
        last_ack = time.time()
    if options.records:
        with open(options.records, "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + ("\n" if lines else ""))
    elapsed = max(1e-9, last_ack - first_send)
    return {"count": options.count, "first_send": first_send, "last_ack": last_ack,
            "rate": options.count / elapsed, "retries": retries, "cpu": time.process_time()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--priorities", type=parse_range, default=(1, 10))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--records", default="")
    parser.add_argument("--first-call", type=int, default=0, help="number of the first call in --records")
    parser.add_argument("--single", action="store_true", help="SubmitTask calls instead of SubmitBatch")
    options = parser.parse_args(argv)
    summary = asyncio.run(submit_all(options))
    print(json.dumps({"event": "submitted", **summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
