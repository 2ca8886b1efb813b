"""What the dispatch benchmark reads around each run: CPU time, Redis counters, round trips, RSS.

* CPU: utime + stime of named process trees from /proc (the scheduler, the agent with its Celery
  worker, the raw Celery worker, redis-server).
* Redis: INFO ``total_commands_processed`` (commands run inside Lua scripts count too),
  ``total_reads_processed`` (read events on client sockets: about one per round trip, of every
  client), ``used_memory`` and the per-command ``calls`` of INFO commandstats.
* The bench's own traffic, subtracted from the Redis figures: its record client counts what it
  sends (``Tally``), and so does the raw Celery producer in this process (kombu's redis channel
  gets a counting connection class), which gives raw Celery's round trips per task.
* The scheduler's own round trips: the Prometheus counter ``switchyard_state_round_trips_total``
  on its metrics port (None where the scheduler does not expose it: older commits).
* RSS: VmRSS from /proc/<pid>/status.

``Probe.read`` takes all of them at once; ``per_task`` turns two readings into figures per task.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROUND_TRIPS_METRIC = "switchyard_state_round_trips_total"


# --- CPU and memory of processes --------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime ticks) for every process we can read."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                raw = stat.read()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def tree_cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named root process and its live descendants."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _ticks) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, float] = {}
    for name, root in roots.items():
        total, stack = 0, [root]
        while stack:
            pid = stack.pop()
            if pid in table:
                total += table[pid][1]
            stack.extend(children.get(pid, ()))
        out[name] = total / CLK_TCK
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for pid {pid}")


# --- counting our own Redis traffic -----------------------------------------------------------


class Tally:
    """Round trips (and commands by name) a redis-py connection class sent; thread-safe."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.commands: Counter[str] = Counter()
        self._lock = threading.Lock()

    def trip(self) -> None:
        with self._lock:
            self.round_trips += 1

    def command(self, name: Any) -> None:
        text = name.decode() if isinstance(name, bytes) else str(name)
        with self._lock:
            self.commands[text.lower()] += 1

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self._lock:
            return self.round_trips, dict(self.commands)


def counting_connection(base: type[Any], tally: Tally) -> type[Any]:
    """``base`` (a redis-py connection class) that records in ``tally`` every request it sends:
    one round trip per packed send (a pipeline is one), one command per ``send_command``."""

    class CountingConnection(base):  # type: ignore[misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            tally.trip()
            super().send_packed_command(command, check_health)

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            if args:
                tally.command(args[0])
            super().send_command(*args, **kwargs)

    return CountingConnection


def counting_client(url: str, tally: Tally) -> redis.Redis:
    """A redis-py client whose every request is recorded in ``tally``. No socket timeout:
    its blocking reads carry their own (redis-py 8 would cut them at 5 s by default)."""
    client = redis.Redis.from_url(url, socket_timeout=None)
    pool = client.connection_pool
    pool.connection_class = counting_connection(pool.connection_class, tally)
    return client


def count_kombu_redis(tally: Tally) -> None:
    """Make every kombu redis channel opened from now on in this process count into ``tally``
    (the raw Celery producer's round trips)."""
    from kombu.transport import redis as kombu_redis

    kombu_redis.Channel.connection_class = counting_connection(redis.Connection, tally)


# --- the scheduler's own counter --------------------------------------------------------------


def scrape_round_trips(metrics_address: str) -> float | None:
    """The scheduler's ``switchyard_state_round_trips_total``, or None where it has none."""
    try:
        with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    found = re.search(rf"^{ROUND_TRIPS_METRIC} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


# --- one reading, and figures per task ---------------------------------------------------------


@dataclass
class Reading:
    """Every counter at one moment."""

    cpu: dict[str, float]
    redis: dict[str, int]
    cmdstats: dict[str, int]
    own_round_trips: int
    own_commands: dict[str, int]
    producer_round_trips: int
    scheduler_round_trips: dict[str, float | None] = field(default_factory=dict)


class Probe:
    """Reads the counters: ``r`` is the bench's own (counted) client of the shared Redis."""

    def __init__(self, r: redis.Redis, own: Tally, producer: Tally) -> None:
        self.r = r
        self.own = own
        self.producer = producer
        self.cpu_roots: dict[str, int] = {}
        self.metrics: dict[str, str] = {}
        """Path key -> the scheduler's metrics HOST:PORT."""

    def read(self) -> Reading:
        cpu = tree_cpu_seconds(self.cpu_roots)
        trips = {key: scrape_round_trips(address) for key, address in self.metrics.items()}
        info = self.r.info()
        cmdstats = {name.removeprefix("cmdstat_"): int(stats["calls"])
                    for name, stats in self.r.info("commandstats").items()}
        own_trips, own_commands = self.own.snapshot()
        return Reading(
            cpu=cpu,
            redis={key: int(info.get(key, 0)) for key in
                   ("total_commands_processed", "total_reads_processed", "used_memory")},
            cmdstats=cmdstats,
            own_round_trips=own_trips,
            own_commands=own_commands,
            producer_round_trips=self.producer.snapshot()[0],
            scheduler_round_trips=trips,
        )

    def background(self, seconds: float) -> dict[str, float]:
        """Redis commands and reads per second with every stack idle (the floor under a run)."""
        before = self.read()
        time.sleep(seconds)
        after = self.read()
        per = per_task(before, after, 1)
        return {"commands_per_s": per["redis_commands"] / seconds,
                "reads_per_s": per["redis_reads"] / seconds}


def per_task(before: Reading, after: Reading, count: int, scheduler: str = "") -> dict[str, Any]:
    """Figures per task between two readings, the bench's own Redis traffic taken out.

    Keys: ``redis_commands``, ``redis_reads``, ``producer_round_trips``, ``scheduler_round_trips``
    (None if the scheduler does not count them, or for raw Celery), ``cpu_ms:<root>`` and
    ``cmdstats`` (command name -> calls per task).
    """
    own_trips = after.own_round_trips - before.own_round_trips
    own_commands = Counter(after.own_commands)
    own_commands.subtract(before.own_commands)
    commands = (after.redis["total_commands_processed"] - before.redis["total_commands_processed"]
                - sum(own_commands.values()))
    reads = after.redis["total_reads_processed"] - before.redis["total_reads_processed"] - own_trips
    out: dict[str, Any] = {
        "redis_commands": commands / count,
        "redis_reads": reads / count,
        "producer_round_trips": (after.producer_round_trips - before.producer_round_trips) / count,
        "scheduler_round_trips": None,
    }
    if scheduler:
        start, end = before.scheduler_round_trips.get(scheduler), after.scheduler_round_trips.get(scheduler)
        if start is not None and end is not None:
            out["scheduler_round_trips"] = (end - start) / count
    for name, seconds in after.cpu.items():
        out[f"cpu_ms:{name}"] = (seconds - before.cpu.get(name, 0.0)) * 1000 / count
    stats: dict[str, float] = {}
    for name, calls in after.cmdstats.items():
        delta = calls - before.cmdstats.get(name, 0) - own_commands.get(name, 0)
        if delta > 0:
            stats[name] = delta / count
    out["cmdstats"] = stats
    return out
