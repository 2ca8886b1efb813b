"""The measurements of the dispatch benchmark, one method each, over stacks already running.

``Bench`` holds the bench's own counted Redis client, the raw Celery app (its producer counted)
and a ``Probe``; it measures idle latency (``sy_latency``, ``raw_latency``), sustained throughput
with per-task costs (``sy_throughput_*``, ``raw_throughput_*``), the ``SubmitTask`` call rate with
a fixed number of calls in flight (``submit_flood``), and ``SubmitBatch`` intake with the
scheduler's memory per pending task (``intake``). ``bench/bench_dispatch.py`` starts the
processes and calls these in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from switchyard import SchedulerClient, TaskView
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc

from bench import bench_echo
from bench._dispatch_probes import (
    Probe,
    Tally,
    count_kombu_redis,
    counting_client,
    per_task,
    rss_bytes,
)
from bench._docs import percentile
from examples.local_stack import Stack, StackError

RUNS_KEY_PREFIX = "bench:runs:"  # bench/bench_app.py writes here


class BenchError(StackError):
    """The benchmark cannot go on; the message says why and where to look."""


@dataclass
class SyPath:
    """One Switchyard stack: a scheduler and the agent-supervised worker it feeds."""

    key: str
    label: str
    client: SchedulerClient
    worker_id: str
    target: str
    scheduler_root: str
    """Name of the scheduler in the CPU roots (and the key of its metrics address)."""
    worker_root: str


STAGES = (
    "send -> accepted (gRPC in, validate)",
    "accepted -> dispatched (submit commit, plan, hand-out commit)",
    "dispatched -> claimed (Celery delivery, fenced claim)",
    "claimed -> user code",
)
RPC_STAGE = "SubmitTask RPC (client send -> reply)"


@dataclass
class LatencySample:
    latency: float
    """Recorded start of user code - client send time (seconds)."""
    stages: dict[str, float] = field(default_factory=dict)


class Bench:
    """The paths, up and connected, and the measurements over them."""

    def __init__(self, stack: Stack, redis_url: str, threads: int, batch_size: int,
                 timeout: float) -> None:
        self.stack = stack
        self.own, self.producer = Tally(), Tally()
        self.r = counting_client(redis_url, self.own)
        self.probe = Probe(self.r, self.own, self.producer)
        self.threads = threads
        self.batch_size = batch_size
        self.timeout = timeout
        count_kombu_redis(self.producer)  # before the app opens its first channel
        # bench_app reads the broker URL at import. The variable must not outlive the import:
        # processes started later inherit the environment, and Celery inside a scheduler would
        # take CELERY_BROKER_URL over its own setting.
        previous = os.environ.get("CELERY_BROKER_URL")
        os.environ["CELERY_BROKER_URL"] = redis_url
        try:
            from bench.bench_app import app
        finally:
            if previous is None:
                del os.environ["CELERY_BROKER_URL"]
            else:
                os.environ["CELERY_BROKER_URL"] = previous
        self.app = app

    def close(self) -> None:
        self.app.close()
        self.r.close()

    # records written by bench.noop

    @staticmethod
    def _key(phase: str) -> str:
        return RUNS_KEY_PREFIX + phase

    def _pop_record(self, phase: str) -> list[Any]:
        item = self.r.blpop([self._key(phase)], timeout=self.timeout)
        if item is None:
            self.stack.check_alive()
            raise BenchError(f"no task started within {self.timeout:.0f}s ({phase}); "
                             f"logs in {self.stack.log_dir}")
        return list(json.loads(item[1]))

    def _wait_records(self, phase: str, count: int) -> list[list[Any]]:
        deadline = time.monotonic() + self.timeout
        key = self._key(phase)
        while self.r.llen(key) < count:
            if time.monotonic() > deadline:
                self.stack.check_alive()
                raise BenchError(f"only {self.r.llen(key)} of {count} tasks ran within "
                                 f"{self.timeout:.0f}s ({phase}); logs in {self.stack.log_dir}")
            time.sleep(0.01)
        return [json.loads(raw) for raw in self.r.lrange(key, 0, -1)]

    # sending

    @staticmethod
    def sy_send(path: SyPath, phase: str) -> tuple[float, float, str]:
        sent = time.time()
        result = path.client.submit("bench.noop", args=[sent], kwargs={"phase": phase})
        return sent, time.time(), result.task_id

    def raw_send(self, phase: str, producer: Any = None) -> float:
        sent = time.time()
        self.app.send_task("bench.noop", args=[sent], kwargs={"phase": phase},
                           queue=self.raw_queue, producer=producer)
        return sent

    raw_queue = ""
    """The raw Celery worker's queue (set by the caller)."""

    # (a) latency on an idle fleet

    def sy_latency(self, path: SyPath, samples: int, phase: str = "") -> list[LatencySample]:
        phase = phase or f"lat-{path.key}"
        out = []
        for _ in range(samples):
            sent, returned, task_id = self.sy_send(path, phase)
            _id, _sent, started, _finished = self._pop_record(phase)
            view = path.client.wait(task_id, timeout=self.timeout)  # the fleet is idle again
            out.append(LatencySample(started - sent, self._stages(sent, returned, started, view)))
            time.sleep(0.01)
        return out

    @staticmethod
    def _stages(sent: float, returned: float, started: float, view: TaskView) -> dict[str, float]:
        def ts(value: Any) -> float | None:
            return value.timestamp() if value is not None else None

        submitted, dispatched, claimed = ts(view.submitted_at), ts(view.dispatched_at), ts(view.started_at)
        stages = {RPC_STAGE: returned - sent}
        if submitted and dispatched and claimed:
            for name, value in zip(STAGES, (submitted - sent, dispatched - submitted,
                                            claimed - dispatched, started - claimed), strict=True):
                stages[name] = value
        return stages

    def raw_latency(self, samples: int, phase: str = "lat-raw") -> list[LatencySample]:
        out = []
        for _ in range(samples):
            sent = self.raw_send(phase)
            _id, _sent, started, _finished = self._pop_record(phase)
            out.append(LatencySample(started - sent))
            time.sleep(0.01)
        return out

    # (b) sustained throughput, and what each task cost

    def _throughput(self, label: str, phase: str, count: int, submit: Callable[[], None],
                    confirm: Callable[[], None] | None = None, scheduler: str = "") -> dict[str, Any]:
        self.r.delete(self._key(phase))
        before = self.probe.read()
        own_before = time.process_time()
        first = time.time()
        submit()
        submitted = time.time()
        records = self._wait_records(phase, count)
        ran = self.probe.read()
        own_after = time.process_time()
        last_finished = max(rec[3] for rec in records)
        elapsed = last_finished - first
        result: dict[str, Any] = {
            "elapsed": elapsed,
            "rate": count / elapsed,
            "submit_rate": count / max(1e-9, submitted - first),
            "sojourn_p50": percentile([rec[2] - rec[1] for rec in records], 50),
        }
        for name, seconds in ran.cpu.items():
            result[f"cpu:{name}"] = (seconds - before.cpu[name]) / elapsed
        result["cpu:bench client"] = (own_after - own_before) / elapsed
        if confirm is not None:
            confirm()
            result["confirmed_rate"] = count / (time.time() - first)
        # Per task over the whole lifecycle: read once the scheduler has seen every task succeed.
        result["per_task"] = per_task(before, self.probe.read(), count, scheduler)
        self.r.delete(self._key(phase))
        print(f"  {label}: {result['rate']:.0f} tasks/s ({count} in {elapsed:.2f}s)", flush=True)
        return result

    @staticmethod
    def _completed(path: SyPath) -> int:
        return sum(q.completed for q in path.client.queues())

    def _sy_confirm(self, path: SyPath, count: int) -> Callable[[], None]:
        base = self._completed(path)

        def confirm() -> None:
            deadline = time.monotonic() + self.timeout
            while self._completed(path) < base + count:
                if time.monotonic() > deadline:
                    raise BenchError(f"{path.label}: the scheduler did not see every task succeed in time")
                time.sleep(0.02)
        return confirm

    def sy_throughput_batch(self, path: SyPath, count: int) -> dict[str, Any]:
        phase = f"tp-{path.key}-batch"

        def submit() -> None:
            for start in range(0, count, self.batch_size):
                sent = time.time()
                specs = [{"task_name": "bench.noop", "args": [sent], "kwargs": {"phase": phase}}
                         for _ in range(min(self.batch_size, count - start))]
                path.client.submit_batch(specs)

        confirm = self._sy_confirm(path, count)
        result = self._throughput(f"{path.label}, SubmitBatch x{self.batch_size}", phase, count,
                                  submit, confirm, path.scheduler_root)
        self.settle(path)
        return result

    def sy_throughput_threads(self, path: SyPath, count: int) -> dict[str, Any]:
        phase = f"tp-{path.key}-threads"

        def one(n: int) -> None:
            for _ in range(n):
                self.sy_send(path, phase)

        confirm = self._sy_confirm(path, count)
        result = self._throughput(f"{path.label}, SubmitTask x{self.threads} threads", phase, count,
                                  lambda: self._in_threads(one, count), confirm, path.scheduler_root)
        self.settle(path)
        return result

    def raw_throughput_loop(self, count: int) -> dict[str, Any]:
        phase = "tp-raw-loop"

        def submit() -> None:
            with self.app.producer_or_acquire() as producer:
                for _ in range(count):
                    self.raw_send(phase, producer)

        return self._throughput("raw Celery, send_task loop", phase, count, submit)

    def raw_throughput_threads(self, count: int) -> dict[str, Any]:
        phase = "tp-raw-threads"

        def one(n: int) -> None:
            for _ in range(n):
                self.raw_send(phase)

        return self._throughput(f"raw Celery, send_task x{self.threads} threads", phase, count,
                                lambda: self._in_threads(one, count))

    def _in_threads(self, work: Callable[[int], None], count: int) -> None:
        shares = [count // self.threads + (1 if i < count % self.threads else 0)
                  for i in range(self.threads)]
        errors: list[BaseException] = []

        def run(n: int) -> None:
            try:
                work(n)
            except BaseException as exc:  # re-raised below, in the calling thread
                errors.append(exc)

        workers = [threading.Thread(target=run, args=(n,), daemon=True) for n in shares]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        if errors:
            raise errors[0]

    def settle(self, path: SyPath) -> None:
        """Wait until the scheduler has nothing pending or in flight."""
        def idle() -> bool:
            return all(q.pending == 0 and q.processing == 0 for q in path.client.queues())

        self.stack.wait_for(f"{path.label} to drain", idle, self.timeout)

    # (c) SubmitTask calls per second with a fixed number in flight

    def submit_flood(self, target: str, calls: int, in_flight: int, phase: str) -> float:
        """Calls per second of ``bench_echo.flood`` against ``target`` (its records are dropped)."""
        seconds = asyncio.run(bench_echo.flood(target, calls, in_flight, phase, timeout=self.timeout))
        return calls / seconds

    def busy_echo_flood(self, target: str, calls: int, in_flight: int) -> dict[str, float]:
        """The flood against the echo service while the raw Celery worker runs ``calls`` tasks
        queued just before it: the work a flood against a live Switchyard puts on the same cores
        (each call there is a task the worker runs meanwhile). ``backlog_left``: of those tasks,
        how many had not started when the flood ended (0 means the worker went idle before the
        end, so part of the flood ran without the competition)."""
        phase = "rpc-echo-busy"
        self.r.delete(self._key(phase))
        with self.app.producer_or_acquire() as producer:
            for _ in range(calls):
                self.raw_send(phase, producer)
        rate = self.submit_flood(target, calls, in_flight, phase)
        backlog_left = calls - int(self.r.llen(self._key(phase)))
        self._wait_records(phase, calls)
        self.r.delete(self._key(phase))
        return {"rate": rate, "backlog_left": float(backlog_left)}

    def sy_flood(self, path: SyPath, calls: int, in_flight: int, paused_queue: str = "") -> float:
        """The flood against a Switchyard scheduler with its worker live (or its queue paused,
        so the scheduler only takes tasks in), then drained before the next measurement."""
        phase = f"rpc-{path.key}{'-paused' if paused_queue else ''}"
        if paused_queue:
            path.client.pause(paused_queue)
        try:
            rate = self.submit_flood(path.target, calls, in_flight, phase)
        finally:
            if paused_queue:
                path.client.resume(paused_queue)
        self.settle(path)
        self.r.delete(self._key(phase))
        return rate

    # (d) SubmitBatch intake and memory per pending task, on a scheduler without workers

    def intake(self, target: str, pid: int, total: int, per_call: int) -> dict[str, Any]:
        """Submit ``total`` tasks in SubmitBatch calls of ``per_call`` (requests built before the
        clock starts); each call's accepted tasks/s, and the scheduler's RSS after each call."""
        options = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]
        rates: list[float] = []
        rss: list[tuple[int, int]] = [(0, rss_bytes(pid))]
        redis_before = int(self.r.info("memory")["used_memory"])
        with grpc.insecure_channel(target, options=options) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)  # type: ignore[no-untyped-call]
            pending = 0
            while pending < total:
                n = min(per_call, total - pending)
                request = scheduler_pb2.SubmitBatchRequest(tasks=[
                    scheduler_pb2.SubmitTaskRequest(task_name="bench.noop", args_json=f"[{time.time()}]",
                                                    kwargs_json='{"phase": "intake"}')
                    for _ in range(n)])
                started = time.perf_counter()
                reply = stub.SubmitBatch(request, timeout=self.timeout)
                rates.append(n / (time.perf_counter() - started))
                if len(reply.results) != n:
                    raise BenchError(f"SubmitBatch of {n} answered {len(reply.results)} results")
                pending += n
                rss.append((pending, rss_bytes(pid)))
                print(f"  SubmitBatch x{n}: {rates[-1]:.0f} tasks/s, {pending} pending, "
                      f"scheduler RSS {rss[-1][1] / 2**20:.0f} MiB", flush=True)
        time.sleep(1.0)  # let anything the last call started finish before the final reading
        rss.append((pending, rss_bytes(pid)))
        redis_after = int(self.r.info("memory")["used_memory"])
        return {"per_call": per_call, "rates": rates, "rss": rss,
                "redis_bytes_per_task": (redis_after - redis_before) / total}
