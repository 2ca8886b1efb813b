"""Dispatch benchmark: Switchyard against raw Celery, side by side, on one private Redis.

    make bench                                   # = .venv/bin/python bench/bench_dispatch.py
    .venv/bin/python bench/bench_dispatch.py [--latency-samples N] [--throughput-tasks M]
        [--threads T] [--batch-size B] [--rounds R] [--prefetch-variant P] [--quick] [--no-docs]

Starts, on free loopback ports: a private ``redis-server``; ``switchyard-scheduler`` (default
settings, that Redis); ``switchyard-agent --worker-id bench-1 --type cpu`` supervising
``celery -A bench.bench_app worker -P prefork -c 2``; and, for the baseline, a plain Celery
worker of the same kind (``-P prefork -c 2``, no agent) consuming ``sy.w.raw-1``. Both workers
run the same app (``bench/bench_app.py``) with the settings the agent forces (late acks,
prefetch multiplier 1, JSON), and both stay up for the whole run, so the two paths share the
machine's noise. The task ``bench.noop(sent_at)`` records when user code started.

Measured, each path in turn and interleaved:

(a) submit-to-start latency on an idle fleet: N sequential submissions, each waiting until the
    start is recorded (and, for Switchyard, until the scheduler has seen the task succeed)
    before the next; latency = recorded start time - client send time. Switchyard's samples
    are also split into stages using the task's own timestamps (GetTask/WatchTask).
(b) sustained throughput: M tasks submitted as fast as possible, tasks finished per second
    from the first submit to the last task's end. Switchyard: SubmitBatch in chunks of B from
    one thread, and one-by-one SubmitTask from T threads. Raw: send_task in a loop from one
    thread (one producer), and from T threads.

Throughput runs are repeated --rounds times (medians reported). --prefetch-variant P (default 2;
0 turns it off) adds a third stack, Switchyard again but with the scheduler's --dispatch-prefetch P
(its own Redis database), to show how much of the gap the late-binding round trip accounts for.

Prints a table and rewrites the `bench_dispatch` section of docs/benchmarks.md (not with
--quick or --no-docs). Every process is stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from switchyard import SchedulerClient, SwitchyardError, TaskView, Unavailable  # noqa: E402
from switchyard.wire import worker_queue  # noqa: E402

from bench._docs import (  # noqa: E402
    code_version,
    machine,
    markdown_table,
    mean,
    now_utc,
    percentile,
    text_table,
    update_section,
)
from examples.local_stack import Stack, StackError, child_env, free_port  # noqa: E402

SY_WORKER = "bench-1"
RAW_WORKER = "raw-1"
RAW_QUEUE = worker_queue(RAW_WORKER)
PREFETCH_WORKER = "bench-pf"
CELERY_ARGS = ["-A", "bench.bench_app", "worker", "-P", "prefork", "-c", "2", "--loglevel", "WARNING"]
RUNS_KEY_PREFIX = "bench:runs:"  # bench/bench_app.py writes here
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(StackError):
    """The benchmark cannot go on; the message says why and where to look."""


# --- CPU accounting -----------------------------------------------------------------------


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


# --- the paths ------------------------------------------------------------------------------


@dataclass
class SyPath:
    """One Switchyard stack: a scheduler and the agent-supervised worker it feeds."""

    key: str
    label: str
    client: SchedulerClient
    worker_id: str


@dataclass
class LatencySample:
    latency: float
    """Recorded start of user code - client send time (seconds)."""
    stages: dict[str, float] = field(default_factory=dict)


STAGES = (
    "send -> accepted (gRPC in, validate)",
    "accepted -> dispatched (submit commit, kick, plan, hand-out commit)",
    "dispatched -> claimed (publish, Celery fetch, fence claim)",
    "claimed -> user code",
)


class Bench:
    """The paths, up and connected, and the measurements over them."""

    def __init__(self, stack: Stack, record_url: str, raw_broker_url: str, threads: int,
                 batch_size: int, timeout: float) -> None:
        self.stack = stack
        self.r = redis.Redis.from_url(record_url)
        self.threads = threads
        self.batch_size = batch_size
        self.timeout = timeout
        os.environ["CELERY_BROKER_URL"] = raw_broker_url
        from bench.bench_app import app  # the broker URL is read at import

        self.app = app
        self.cpu_roots: dict[str, int] = {}

    def close(self) -> None:
        self.app.close()
        self.r.close()

    # records written by bench.noop

    def _key(self, phase: str) -> str:
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
        self.app.send_task("bench.noop", args=[sent], kwargs={"phase": phase}, queue=RAW_QUEUE,
                           producer=producer)
        return sent

    # (a) latency

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
        stages = {"SubmitTask RPC (client send -> reply)": returned - sent}
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

    # (b) throughput

    def _throughput(self, label: str, phase: str, count: int, submit: Callable[[], None],
                    confirm: Callable[[], None] | None = None) -> dict[str, float]:
        self.r.delete(self._key(phase))
        cpu_before = tree_cpu_seconds(self.cpu_roots)
        own_before = time.process_time()
        first = time.time()
        submit()
        submitted = time.time()
        records = self._wait_records(phase, count)
        cpu_after = tree_cpu_seconds(self.cpu_roots)
        own_after = time.process_time()
        last_finished = max(rec[3] for rec in records)
        elapsed = last_finished - first
        result = {
            "elapsed": elapsed,
            "rate": count / elapsed,
            "submit_rate": count / max(1e-9, submitted - first),
            "sojourn_p50": percentile([rec[2] - rec[1] for rec in records], 50),
        }
        for name in cpu_before:
            result[f"cpu:{name}"] = (cpu_after[name] - cpu_before[name]) / elapsed
        result["cpu:bench client"] = (own_after - own_before) / elapsed
        if confirm is not None:
            confirm()
            result["confirmed_rate"] = count / (time.time() - first)
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
                time.sleep(0.01)
        return confirm

    def sy_throughput_batch(self, path: SyPath, count: int) -> dict[str, float]:
        phase = f"tp-{path.key}-batch"

        def submit() -> None:
            for start in range(0, count, self.batch_size):
                sent = time.time()
                specs = [{"task_name": "bench.noop", "args": [sent], "kwargs": {"phase": phase}}
                         for _ in range(min(self.batch_size, count - start))]
                path.client.submit_batch(specs)

        confirm = self._sy_confirm(path, count)
        result = self._throughput(f"{path.label}, SubmitBatch x{self.batch_size}", phase, count,
                                  submit, confirm)
        self.settle(path)
        return result

    def sy_throughput_threads(self, path: SyPath, count: int) -> dict[str, float]:
        phase = f"tp-{path.key}-threads"

        def one(n: int) -> None:
            for _ in range(n):
                self.sy_send(path, phase)

        confirm = self._sy_confirm(path, count)
        result = self._throughput(f"{path.label}, SubmitTask x{self.threads} threads", phase, count,
                                  lambda: self._in_threads(one, count), confirm)
        self.settle(path)
        return result

    def raw_throughput_loop(self, count: int) -> dict[str, float]:
        phase = "tp-raw-loop"

        def submit() -> None:
            with self.app.producer_or_acquire() as producer:
                for _ in range(count):
                    self.raw_send(phase, producer)

        return self._throughput("raw Celery, send_task loop", phase, count, submit)

    def raw_throughput_threads(self, count: int) -> dict[str, float]:
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


def start_switchyard(stack: Stack, redis_url: str, record_url: str, worker_id: str,
                     extra: Sequence[str] = ()) -> tuple[str, int, int]:
    """A scheduler on `redis_url` and one agent-supervised worker; (target, scheduler pid, agent pid)."""
    grpc_port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{grpc_port}"
    scheduler = stack.start(
        f"scheduler-{worker_id}",
        [stack.executable("switchyard-scheduler"), "--redis-url", redis_url, "--listen", target,
         "--metrics-listen", f"127.0.0.1:{metrics_port}", *extra],
        child_env(),
    )
    agent = stack.start(
        f"agent-{worker_id}",
        [stack.executable("switchyard-agent"), "--scheduler", target, "--worker-id", worker_id,
         "--type", "cpu", "--", "celery", *CELERY_ARGS],
        child_env(CELERY_BROKER_URL=redis_url, BENCH_RECORD_URL=record_url),
    )
    return target, scheduler.popen.pid, agent.popen.pid


def start_raw(stack: Stack, redis_url: str) -> int:
    raw = stack.start(
        f"celery-{RAW_WORKER}",
        # -n and --without-mingle/--without-gossip: what the agent adds to its worker's command.
        [stack.executable("celery"), *CELERY_ARGS, "-Q", RAW_QUEUE, "-n", f"{RAW_WORKER}@%h",
         "--without-mingle", "--without-gossip"],
        child_env(CELERY_BROKER_URL=redis_url, BENCH_RECORD_URL=redis_url),
    )
    return raw.popen.pid


def wait_connected(stack: Stack, path: SyPath) -> None:
    def connected() -> bool:
        try:
            return any(w.worker_id == path.worker_id and w.status == "connected"
                       for w in path.client.workers())
        except Unavailable:
            return False

    stack.wait_for(f"{path.worker_id} to connect", connected, 60)


# --- report -------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass
class Results:
    latency: dict[str, list[LatencySample]]
    """Path key -> samples; "raw" is the baseline."""
    throughput: dict[tuple[str, str], list[dict[str, float]]]
    """(path key, "loop"/"batch"/"threads") -> one result per round."""
    labels: dict[str, str]


def run(options: argparse.Namespace, stack: Stack) -> int:
    facts = machine()
    print(f"Switchyard dispatch benchmark  ({facts['nproc']} CPUs, Python {facts['python']}, "
          f"redis {facts.get('redis', '?')})")
    redis_url = stack.start_redis()
    target, scheduler_pid, agent_pid = start_switchyard(stack, redis_url, redis_url, SY_WORKER)
    raw_pid = start_raw(stack, redis_url)
    cpu_roots = {"scheduler": scheduler_pid, "agent+celery": agent_pid, "raw celery": raw_pid,
                 "redis": stack.processes[0].popen.pid}
    extra_target = ""
    if options.prefetch_variant:
        # Its own database on the same redis-server: separate state, broker queues and stream.
        variant_url = redis_url[: -len("/0")] + "/1"
        extra_target, pid_s, pid_a = start_switchyard(
            stack, variant_url, redis_url, PREFETCH_WORKER,
            ["--dispatch-prefetch", str(options.prefetch_variant)])
        cpu_roots |= {"scheduler (prefetch)": pid_s, "agent+celery (prefetch)": pid_a}

    bench = Bench(stack, redis_url, redis_url, options.threads, options.batch_size, options.timeout)
    bench.cpu_roots = cpu_roots
    paths = [SyPath("sy", "Switchyard", SchedulerClient(target, timeout=30), SY_WORKER)]
    if extra_target:
        paths.append(SyPath("pf", f"Switchyard, dispatch_prefetch={options.prefetch_variant}",
                            SchedulerClient(extra_target, timeout=30), PREFETCH_WORKER))
    try:
        for path in paths:
            wait_connected(stack, path)
        print(f"fleet up: {', '.join(f'{p.label} ({p.worker_id})' for p in paths)}, "
              f"raw Celery ({RAW_WORKER}); every worker prefork -c 2; redis {redis_url}")

        # Warm-up: connections, pool children, imports, Lua script loading, on every path.
        bench.raw_latency(options.warmup, "warm-raw")
        for path in paths:
            bench.sy_latency(path, options.warmup, f"warm-{path.key}")

        n = options.latency_samples
        print(f"(a) submit-to-start latency, idle fleet, {n} sequential samples per path "
              "(interleaved in blocks of 25)")
        latency: dict[str, list[LatencySample]] = {"raw": []} | {p.key: [] for p in paths}
        runners: dict[str, Callable[[int], list[LatencySample]]] = {"raw": bench.raw_latency}
        for path in paths:
            runners[path.key] = lambda k, p=path: bench.sy_latency(p, k)  # type: ignore[misc]
        order = list(runners)
        turn = 0
        while any(len(v) < n for v in latency.values()):
            for key in order[turn % len(order):] + order[: turn % len(order)]:
                latency[key] += runners[key](min(25, n - len(latency[key]))) if len(latency[key]) < n else []
            turn += 1
        p50 = {key: median([s.latency for s in v]) for key, v in latency.items()}
        print("  p50: " + ", ".join(f"{key} {ms(v)} ms" for key, v in p50.items()))

        m = options.throughput_tasks
        print(f"(b) sustained throughput, {m} tasks per run, {options.rounds} round(s)")
        throughput: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round_no in range(options.rounds):
            print(f" round {round_no + 1}")
            throughput.setdefault(("raw", "loop"), []).append(bench.raw_throughput_loop(m))
            for path in paths:
                throughput.setdefault((path.key, "batch"), []).append(bench.sy_throughput_batch(path, m))
            throughput.setdefault(("raw", "threads"), []).append(bench.raw_throughput_threads(m))
            for path in paths:
                throughput.setdefault((path.key, "threads"), []).append(bench.sy_throughput_threads(path, m))
            stack.check_alive()
    finally:
        for path in paths:
            path.client.close()
        bench.close()

    labels = {"raw": "raw Celery"} | {p.key: p.label for p in paths}
    report(options, facts, Results(latency, throughput, labels))
    return 0


def report(options: argparse.Namespace, facts: dict[str, str], res: Results) -> None:
    lat = {key: [s.latency for s in samples] for key, samples in res.latency.items()}
    raw = lat["raw"]
    lat_headers = ["path", "samples", "p50 ms", "p99 ms", "mean ms", "p50 / raw p50", "p99 / raw p99"]
    lat_rows = [[res.labels[key], str(len(v)), ms(median(v)), ms(percentile(v, 99)), ms(mean(v)),
                 f"{median(v) / median(raw):.2f}x", f"{percentile(v, 99) / percentile(raw, 99):.2f}x"]
                for key, v in lat.items()]
    sy_samples = res.latency["sy"]
    stage_names = ["SubmitTask RPC (client send -> reply)", *STAGES]
    st_headers = ["Switchyard stage (task's own timestamps)", "p50 ms", "p99 ms"]
    st_rows = []
    for name in stage_names:
        values = [s.stages[name] for s in sy_samples if name in s.stages]
        if values:
            st_rows.append([name, ms(median(values)), ms(percentile(values, 99))])

    t, b = options.threads, options.batch_size
    how = {"loop": "send_task loop, 1 thread", "batch": f"SubmitBatch x{b}, 1 thread",
           "threads": f"one by one, {t} threads"}
    tp_headers = ["path", "submission", "tasks/s (median)", "min-max", "/ raw", "submit rate/s",
                  "send->start p50 ms"]
    tp_rows = []
    order = [("raw", "loop"), *[(k, "batch") for k in res.labels if k != "raw"],
             ("raw", "threads"), *[(k, "threads") for k in res.labels if k != "raw"]]
    raw_rate = {"loop": median([r["rate"] for r in res.throughput[("raw", "loop")]]),
                "threads": median([r["rate"] for r in res.throughput[("raw", "threads")]])}
    for key, kind in order:
        runs = res.throughput[(key, kind)]
        rates = [r["rate"] for r in runs]
        baseline = raw_rate["threads" if kind == "threads" else "loop"]
        submission = how[kind] if key == "raw" or kind != "threads" else f"SubmitTask, {t} threads"
        if key == "raw" and kind == "threads":
            submission = f"send_task, {t} threads"
        tp_rows.append([res.labels[key], submission, f"{median(rates):.0f}",
                        f"{min(rates):.0f}-{max(rates):.0f}", f"{median(rates) / baseline:.2f}x",
                        f"{median([r['submit_rate'] for r in runs]):.0f}",
                        ms(median([r["sojourn_p50"] for r in runs]))])
    confirmed = {(key, kind): median([r["confirmed_rate"] for r in runs])
                 for (key, kind), runs in res.throughput.items() if "confirmed_rate" in runs[0]}
    cpu_names = [k for k in res.throughput[("raw", "loop")][0] if k.startswith("cpu:")]
    cpu_headers = ["run", *[k[4:] for k in cpu_names]]
    cpu_rows = [[f"{res.labels[key]}, {kind}",
                 *[f"{100 * median([r[c] for r in res.throughput[(key, kind)]]):.0f}%" for c in cpu_names]]
                for key, kind in order]

    print()
    print(text_table(lat_headers, lat_rows))
    print()
    print(text_table(st_headers, st_rows))
    print()
    print(text_table(tp_headers, tp_rows))
    confirmed_text = ", ".join(f"{res.labels[key]} {kind}: {rate:.0f} tasks/s"
                               for (key, kind), rate in confirmed.items())
    print(f"until the scheduler has seen every task succeed: {confirmed_text}")
    print()
    print("CPU used during the throughput runs, % of one core (process trees, median over rounds):")
    print(text_table(cpu_headers, cpu_rows))

    if options.no_docs:
        print("\n(--no-docs / --quick: docs/benchmarks.md left unchanged)")
        return
    write_docs(options, facts, res, {
        "lat": (lat_headers, lat_rows), "stages": (st_headers, st_rows), "tp": (tp_headers, tp_rows),
        "cpu": (cpu_headers, cpu_rows)}, confirmed_text, raw_rate)
    print("\nwrote the bench_dispatch section of docs/benchmarks.md")


def command_line(options: argparse.Namespace) -> str:
    defaults = {"latency_samples": 200, "throughput_tasks": 2000, "threads": 4, "batch_size": 100,
                "rounds": 3, "prefetch_variant": 2}
    flags = [f"--{name.replace('_', '-')} {getattr(options, name)}" for name, default in defaults.items()
             if getattr(options, name) != default]
    if not flags:
        return "`make bench` (= `.venv/bin/python bench/bench_dispatch.py`)"
    return f"`.venv/bin/python bench/bench_dispatch.py {' '.join(flags)}`"


def write_docs(options: argparse.Namespace, facts: dict[str, str], res: Results,
               tables: dict[str, tuple[list[str], list[list[str]]]], confirmed_text: str,
               raw_rate: dict[str, float]) -> None:
    lat = {key: [s.latency for s in samples] for key, samples in res.latency.items()}
    sy_p50, raw_p50 = median(lat["sy"]), median(lat["raw"])
    stage = {row[0]: row[1] for row in tables["stages"][1]}

    def stage_p50(prefix: str) -> str:
        return next((value for name, value in stage.items() if name.startswith(prefix)), "?")

    sy_batch = median([r["rate"] for r in res.throughput[("sy", "batch")]])
    sy_threads = median([r["rate"] for r in res.throughput[("sy", "threads")]])
    raw_loop = raw_rate["loop"]
    sched_cpu = median([r["cpu:scheduler"] for r in res.throughput[("sy", "batch")]])
    sched_ms = median([r["cpu:scheduler"] / r["rate"] * 1000 for r in res.throughput[("sy", "batch")]])
    worker_ms = median([r["cpu:agent+celery"] / r["rate"] * 1000 for r in res.throughput[("sy", "batch")]])
    raw_ms = median([r["cpu:raw celery"] / r["rate"] * 1000 for r in res.throughput[("raw", "loop")]])
    per_slot_ms = 2 / sy_batch * 1000
    variant = ""
    if "pf" in res.labels:
        pf_batch = median([r["rate"] for r in res.throughput[("pf", "batch")]])
        pf_threads = median([r["rate"] for r in res.throughput[("pf", "threads")]])
        pf_p50 = median(lat["pf"])
        gain = pf_batch / sy_batch
        verdict = ("Hiding the round trip barely helps because the scheduler process is CPU-bound."
                   if gain < 1.25 else
                   "So a good part of the gap is the late-binding round trip itself, which prefetch hides "
                   "at the cost of exact ordering for the prefetched tasks.")
        variant = f"""
* {"The late-binding round trip is not what limits throughput here." if gain < 1.25 else "Prefetch matters here."} The `dispatch_prefetch={options.prefetch_variant}`
  stack (a second, otherwise identical scheduler + agent on its own Redis database, worker
  `{PREFETCH_WORKER}`; the scheduler may hand a worker {options.prefetch_variant} task(s) beyond its free slots, so the next
  task already waits in the worker's Celery queue when a slot frees) reached {pf_batch:.0f} tasks/s with
  SubmitBatch and {pf_threads:.0f} one by one, {pf_batch / sy_batch:.2f}x and {pf_threads / sy_threads:.2f}x the default stack;
  its idle latency p50 was {ms(pf_p50)} ms. {verdict}"""
    body = f"""## Dispatch: Switchyard vs raw Celery

Command: {command_line(options)}.
Code: {code_version()}. Measured {now_utc()} on {facts['nproc']} CPUs ({facts.get('cpu', '?')}), {facts['platform']},
Python {facts['python']}, redis-server {facts.get('redis', '?')}. The machine is shared and noisy:
read the medians and ratios, not single runs.

Setup, all in one run on one private `redis-server` (no persistence): `switchyard-scheduler` with
default settings (so `dispatch_prefetch=0`: strict late binding) and one
`switchyard-agent --worker-id {SY_WORKER} --type cpu -- celery -A bench.bench_app worker -P prefork -c 2`;
beside it the baseline, a plain `celery -A bench.bench_app worker -P prefork -c 2 -Q {RAW_QUEUE}`
(no agent) fed by `app.send_task("bench.noop", queue="{RAW_QUEUE}")`. Both workers run the same
app ([`bench/bench_app.py`](../bench/bench_app.py)) with the settings the agent forces (late acks,
prefetch multiplier 1, JSON) and stay up for the whole run. `bench.noop(sent_at)` records
`time.time()` when user code starts and returns at once.{" A third stack, identical but for the scheduler's `--dispatch-prefetch " + str(options.prefetch_variant) + "`, runs beside them (`--prefetch-variant`; 0 turns it off)." if "pf" in res.labels else ""}

### (a) Submit-to-start latency, idle fleet

{options.latency_samples} sequential submissions per path, each waiting for the start to be recorded
(and, for Switchyard, until the scheduler has seen the task succeed) before the next; the paths
alternate in blocks of 25. Latency = start recorded by the task - client send time.

{markdown_table(*tables['lat'])}

Where Switchyard's time goes, from the task's own timestamps (client send time, the scheduler's
`submitted_at` and `dispatched_at`, the worker's claim `started_at`, the task's recorded start;
one machine, one clock). The first row overlaps the others (the reply races the dispatch).

{markdown_table(*tables['stages'])}

### (b) Sustained throughput

{options.throughput_tasks} tasks per run, submitted as fast as possible; {options.rounds} rounds, the paths
interleaved within each round. Rate = tasks / (last task's end - first submit). "/ raw" compares
with the raw run of the same submission style (the loop for SubmitBatch). "send->start p50" is
the median time a task waited between its send and its start (mostly behind the backlog).

{markdown_table(*tables['tp'])}

Switchyard counted until the scheduler has seen every task succeed (polling ListQueues):
{confirmed_text}.

CPU used during the throughput runs, in % of one core (the machine has {facts['nproc']}), per process
tree, median over rounds:

{markdown_table(*tables['cpu'])}

### Interpretation

* Idle latency: Switchyard's median is {sy_p50 / raw_p50:.1f}x raw Celery's ({ms(sy_p50)} ms against
  {ms(raw_p50)} ms). Raw Celery pays one LPUSH and the worker's BRPOP + pool hand-off. Switchyard
  adds, in order: the gRPC `SubmitTask` call and validation (send -> accepted,
  {stage_p50('send ->')} ms median); the atomic Lua commit of the submission, the dispatch-loop
  kick, one placement round and a second Lua commit for the hand-out
  (accepted -> dispatched, {stage_p50('accepted ->')} ms); then the publish, which hops to the
  dispatcher's thread, plus Celery's delivery and the worker-side fence-claim Lua script
  (dispatched -> claimed, {stage_p50('dispatched ->')} ms: raw Celery's whole path plus the claim).
  Each step is a Redis round trip or a thread hop; no single one dominates, the sum does.
* Throughput: Switchyard completed {sy_batch:.0f} tasks/s with SubmitBatch against raw Celery's
  {raw_loop:.0f} ({sy_batch / raw_loop:.2f}x). The limit is the scheduler's CPU per task: its process
  ran at {100 * sched_cpu:.0f}% of one core, about {sched_ms:.1f} ms of CPU per task (a ceiling near
  {1000 / sched_ms:.0f} tasks/s for its single asyncio loop), against {worker_ms:.1f} ms per task for the
  agent + Celery worker and {raw_ms:.1f} ms per task for the raw worker. Per task the scheduler awaits
  several Redis calls: the submit commit, the hand-out commit,
  mark-published, the `started` and `succeeded` applies and the XACKs, and several of the Lua
  scripts return the whole task hash (for watchers), which redis-py parses (with hiredis). With 2 slots and the default `dispatch_prefetch=0`, {sy_batch:.0f} tasks/s is also
  {per_slot_ms:.1f} ms per task per slot: the late-binding round trip (worker XADD -> XREADGROUP,
  apply -> dispatch round -> hand-out commit -> publish -> Celery fetch -> claim) runs on that busy loop.{variant}
* SubmitBatch against one-by-one SubmitTask from {options.threads} threads: {sy_batch:.0f} against
  {sy_threads:.0f} tasks/s; intake is far faster than completion either way (see "submit rate"), and
  one-by-one submissions cost the scheduler more CPU per task, which it takes from dispatch.
* What Switchyard buys with this: exact priority order over everything still pending, per-worker
  placement, fencing of stale attempts and durable state in Redis. The fixed cost per task is a
  few milliseconds of scheduler CPU: negligible for tasks that run for seconds, dominant for a
  flood of no-op tasks like this one.
"""
    update_section("bench_dispatch", body)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--latency-samples", type=int, default=200, metavar="N",
                        help="sequential submissions per path for (a) (default 200)")
    parser.add_argument("--throughput-tasks", type=int, default=2000, metavar="M",
                        help="tasks per throughput run for (b) (default 2000)")
    parser.add_argument("--threads", type=int, default=4, metavar="T",
                        help="submitting threads for the one-by-one throughput runs (default 4)")
    parser.add_argument("--batch-size", type=int, default=100, metavar="B",
                        help="tasks per SubmitBatch call (default 100)")
    parser.add_argument("--warmup", type=int, default=10, metavar="K",
                        help="unmeasured tasks per path before measuring (default 10)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="seconds any single wait may take before the run fails (default 300)")
    parser.add_argument("--rounds", type=int, default=3, metavar="R",
                        help="throughput runs per path and submission style; medians reported (default 3)")
    parser.add_argument("--prefetch-variant", type=int, default=2, metavar="P",
                        help="also run a second Switchyard stack whose scheduler has --dispatch-prefetch P "
                             "(default 2; 0 turns it off)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20 latency samples, 200 tasks; implies --no-docs")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    options = parser.parse_args(argv)
    if options.quick:
        options.latency_samples = min(options.latency_samples, 20)
        options.throughput_tasks = min(options.throughput_tasks, 200)
        options.warmup = min(options.warmup, 3)
        options.rounds = 1
        options.no_docs = True
    for name in ("latency_samples", "throughput_tasks", "threads", "batch_size", "rounds"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    if shutil.which("redis-server") is None:
        print("error: redis-server is not on PATH; run `make deps-check`", file=sys.stderr)
        return 1
    stack = Stack(prefix="switchyard-bench-", error=BenchError)
    return stack.run(lambda: run(options, stack), (BenchError, SwitchyardError),
                     keep_logs_on_error=True)


if __name__ == "__main__":
    sys.exit(main())
