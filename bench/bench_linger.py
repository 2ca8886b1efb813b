"""Group commit's linger, measured: the SubmitTask flood against schedulers that differ only in it.

    .venv/bin/python bench/bench_linger.py [--calls C] [--rounds R] [--in-flight F]
        [--linger SECONDS ...]

Starts, on free loopback ports: a private ``redis-server``; one ``switchyard-scheduler`` per
``--linger`` value (default: 0, which turns lingering off, and the default setting), each on a
Redis database of its own, with no workers (so the scheduler only takes tasks in); and
``bench/bench_echo.py``, the bare ``grpc.aio`` echo. Then R rounds, each running
``bench_echo.flood`` (C SubmitTask calls, F in flight, one channel) against every server in
turn, the order rotated per round. Per server, the medians over the rounds of: calls/s, the
server's CPU per call, redis-server's CPU per call, and the scheduler's Redis round trips per call
(its ``switchyard_state_round_trips_total``). The machine is shared and noisy: compare the
servers of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from switchyard import SchedulerClient  # noqa: E402

from bench import bench_echo  # noqa: E402
from bench._dispatch_probes import scrape_round_trips  # noqa: E402
from bench._docs import code_version  # noqa: E402
from bench._fleet_procs import cpu_seconds  # noqa: E402
from bench.bench_dispatch import start_echo, start_scheduler, wait_serving  # noqa: E402
from examples.local_stack import Stack  # noqa: E402

DEFAULT_LINGERS = ("0", "default")


class Server:
    """One server under the flood and what it measured."""

    def __init__(self, label: str, target: str, pid: int, metrics: str = "") -> None:
        self.label, self.target, self.pid, self.metrics = label, target, pid, metrics
        self.rates: list[float] = []
        self.cpu_us: list[float] = []
        self.redis_us: list[float] = []
        self.round_trips: list[float] = []

    def flood(self, calls: int, in_flight: int, redis_pid: int) -> None:
        cpu, redis_cpu = cpu_seconds(self.pid), cpu_seconds(redis_pid)
        trips = scrape_round_trips(self.metrics) if self.metrics else None
        seconds = asyncio.run(bench_echo.flood(self.target, calls, in_flight, "linger"))
        self.rates.append(calls / seconds)
        self.cpu_us.append((cpu_seconds(self.pid) - cpu) / calls * 1e6)
        self.redis_us.append((cpu_seconds(redis_pid) - redis_cpu) / calls * 1e6)
        if trips is not None:
            self.round_trips.append(((scrape_round_trips(self.metrics) or 0.0) - trips) / calls)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(options: argparse.Namespace, stack: Stack) -> int:
    print(f"SubmitTask flood, {options.calls} calls, {options.in_flight} in flight, {options.rounds} rounds; "
          f"commit {code_version()}")
    url = stack.start_redis()
    redis_pid = stack.processes[-1].popen.pid
    servers: list[Server] = []
    for db, linger in enumerate(options.linger, start=1):
        extra = [] if linger == "default" else ["--commit-linger-seconds", linger]
        target, pid, metrics = start_scheduler(stack, f"{url.rsplit('/', 1)[0]}/{db}", f"linger-{linger}", extra)
        with SchedulerClient(target, timeout=30) as client:
            wait_serving(stack, client)
        servers.append(Server(f"scheduler, commit_linger_seconds {linger}", target, pid, metrics))
    echo_target = start_echo(stack)
    servers.append(Server("bare gRPC echo", echo_target, stack.processes[-1].popen.pid))
    for round_no in range(options.rounds):
        shift = round_no % len(servers)
        for server in servers[shift:] + servers[:shift]:
            server.flood(options.calls, options.in_flight, redis_pid)
            print(f"  round {round_no + 1}, {server.label}: {server.rates[-1]:,.0f} calls/s", flush=True)
        stack.check_alive()
    echo_rate = median(servers[-1].rates)
    print()
    print("| server | calls/s (median) | vs echo | server CPU per call, µs | Redis CPU per call, µs "
          "| round trips per call |")
    print("|---|---|---|---|---|---|")
    for server in servers:
        trips = f"{median(server.round_trips):.3f}" if server.round_trips else "-"
        print(f"| {server.label} | {median(server.rates):,.0f} | {median(server.rates) / echo_rate:.2f}x "
              f"| {median(server.cpu_us):.0f} | {median(server.redis_us):.0f} | {trips} |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000, metavar="C", help="calls per flood (default 4000)")
    parser.add_argument("--rounds", type=int, default=5, metavar="R", help="floods per server (default 5)")
    parser.add_argument("--in-flight", type=int, default=32, metavar="F", help="calls outstanding (default 32)")
    parser.add_argument("--linger", nargs="+", default=list(DEFAULT_LINGERS), metavar="SECONDS",
                        help="commit_linger_seconds of each scheduler; 'default' for the setting's default "
                             "(default: 0 default)")
    options = parser.parse_args(argv)
    stack = Stack(prefix="switchyard-bench-linger-")
    try:
        return run(options, stack)
    except KeyboardInterrupt:
        return 130
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
