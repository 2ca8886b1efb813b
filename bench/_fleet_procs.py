"""Process plumbing of bench/bench_fleet.py: starting the scheduler and the simulator's processes,
reading their JSON lines, and measuring CPU, memory and Redis work from the outside.

CPU is read from `/proc/<pid>/stat` (user + system time of that one process), memory from
`/proc/<pid>/status` (VmRSS); the scheduler is one process, so these are its own figures.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc

from examples.local_stack import Process, Stack, StackError, child_env, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
QUEUE = "fleet"
"""The one queue every simulated task goes to."""
CONFIG = f"""\
# bench/bench_fleet.py: one queue and no aging, so every worker can run every task and the
# effective priority is the base priority (the simulator checks the order exactly).
queues:
  - {{name: {QUEUE}, class: cpu, default_priority: 5}}
class_queues: {{gpu_intensive: {QUEUE}, mixed: {QUEUE}, cpu: {QUEUE}, io: {QUEUE}}}
aging: {{enabled: false}}
"""


class BenchError(StackError):
    """The benchmark cannot go on; the message says why and where to look."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by one process."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    """Resident set size of one process, MiB."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class CpuMeter:
    """CPU seconds used by named processes between `start` and `stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._at = 0.0
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.seconds = 0.0

    def start(self) -> CpuMeter:
        self._at = time.monotonic()
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> CpuMeter:
        self.seconds = time.monotonic() - self._at
        self.used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        return self

    def percent(self, name: str) -> float:
        """Share of one core the process used over the window, in %."""
        return 100 * self.used[name] / max(1e-9, self.seconds)


def json_lines(process: Process) -> list[dict[str, Any]]:
    """Every JSON line a child wrote to its log so far."""
    out: list[dict[str, Any]] = []
    with open(process.log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    return out


def wait_event(stack: Stack, process: Process, event: str, timeout: float) -> dict[str, Any]:
    """The first JSON line of type `event` the child writes (fails if it dies or times out)."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in json_lines(process) if e.get("event") == event]
        return bool(found)

    stack.wait_for(f"{process.name} to report {event!r}", seen, timeout)
    return found[0]


def last_event(process: Process, event: str) -> dict[str, Any] | None:
    matching = [e for e in json_lines(process) if e.get("event") == event]
    return matching[-1] if matching else None


def python_child(stack: Stack, name: str, module: str, *args: str) -> Process:
    """Start `python -m <module> args` from the repository root."""
    return stack.start(name, [sys.executable, "-m", module, *args], child_env())


def run_child(stack: Stack, name: str, module: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run a child to completion; its last JSON line."""
    process = python_child(stack, name, module, *args)
    try:
        code = process.popen.wait(timeout)
    except Exception as exc:
        raise BenchError(f"{name} did not finish within {timeout:.0f}s; see {process.log_path}") from exc
    lines = json_lines(process)
    if code != 0 or not lines:
        raise BenchError(f"{name} exited with status {code}; see {process.log_path}")
    stack.processes.remove(process)
    process.log_file.close()
    return lines[-1]


@dataclass
class Scheduler:
    """A started `switchyard-scheduler` and how to reach it."""

    process: Process
    target: str
    metrics_url: str
    redis_url: str
    stub: scheduler_pb2_grpc.SchedulerStub

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def queue(self) -> scheduler_pb2.QueueStats:
        reply = self.stub.ListQueues(scheduler_pb2.ListQueuesRequest(), timeout=30)
        return next(q for q in reply.queues if q.name == QUEUE)

    def round_trips(self) -> float:
        """The scheduler's own count of requests sent to Redis (commands, pipelines, scripts)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:
            text = reply.read().decode()
        found = re.search(r"^switchyard_state_round_trips_total ([0-9.e+]+)$", text, re.M)
        return float(found.group(1)) if found else float("nan")

    def wait_queue(self, stack: Stack, what: str, done: Callable[[scheduler_pb2.QueueStats], bool],
                   timeout: float, interval: float = 0.1) -> float:
        """Poll ListQueues until `done` holds; the time.time() it first held."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stack.check_alive()
            if done(self.queue()):
                return time.time()
            time.sleep(interval)
        raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {stack.log_dir}")


def start_scheduler(stack: Stack, redis_url: str, *extra: str) -> Scheduler:
    """A scheduler on free ports with the bench's config file; returns once it answers."""
    config = stack.temp_dir / "fleet.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    target = f"127.0.0.1:{free_port()}"
    metrics = f"127.0.0.1:{free_port()}"
    process = stack.start("scheduler", [
        stack.executable("switchyard-scheduler"), "--redis-url", redis_url, "--listen", target,
        "--metrics-listen", metrics, "--config", str(config), *extra,
    ], child_env())
    channel = grpc.insecure_channel(target)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)  # type: ignore[no-untyped-call]
    scheduler = Scheduler(process, target, f"http://{metrics}/metrics", redis_url, stub)

    def answers() -> bool:
        try:
            scheduler.queue()
            return True
        except grpc.RpcError:
            return False

    stack.wait_for("the scheduler to answer ListQueues", answers, 30)
    return scheduler


def redis_facts(redis_url: str) -> dict[str, float]:
    """Redis's own counters: commands processed (scripts' inner commands included), memory, pid."""
    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("stats")
        memory = client.info("memory")
        server = client.info("server")
    finally:
        client.close()
    return {"commands": float(stats["total_commands_processed"]),
            "used_memory_mib": float(memory["used_memory"]) / (1 << 20),
            "pid": float(server["process_id"])}




def profile_summary(path: Path, top: int = 15) -> str:
    """The busiest functions of a py-spy raw profile (collapsed stacks): own time and time
    including callees, in % of samples."""
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # "function (file:line)" -> "function (file)": lines of one function add up.
        frames = [frame.rsplit(":", 1)[0] + ")" if ":" in frame else frame for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inside[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples; own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("including callees:")
    skip = ("<module>", "run ", "cli ", "Runner.", "BaseEventLoop.", "Handle._run", "Thread.", "_worker ")
    busy = [(frame, n) for frame, n in inside.most_common() if not frame.startswith(skip)]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in busy[:top * 2]]
    return "\n".join(lines)
