"""Dispatch benchmark: Switchyard against raw Celery (and a bare gRPC echo), side by side, on one Redis.

    make bench                                   # = .venv/bin/python bench/bench_dispatch.py
    .venv/bin/python bench/bench_dispatch.py [--latency-samples N] [--throughput-tasks M]
        [--threads T] [--batch-size B] [--rounds R] [--prefetch-variant P] [--rpc-calls C]
        [--in-flight F] [--intake-tasks I] [--intake-batch K] [--label L] [--json OUT]
        [--before BEFORE.json] [--from-json RUN.json] [--quick] [--no-docs]

Starts, on free loopback ports: a private ``redis-server``; ``switchyard-scheduler`` (default
settings, that Redis, metrics on) and ``switchyard-agent --worker-id bench-1 --type cpu``
supervising ``celery -A bench.bench_app worker -P prefork -c 2``; for the baseline a plain Celery
worker of the same kind (no agent) consuming ``sy.w.raw-1``; and ``bench/bench_echo.py``, a bare
``grpc.aio`` service answering ``Scheduler/SubmitTask`` with a constant. Both workers run the same
app (``bench/bench_app.py``) with the settings the agent forces and stay up for the whole run.
Processes are started by their console scripts, so the bench also runs against an older commit:
copy ``bench/`` into a worktree of it and run it with that worktree's virtualenv.

Measured, the paths interleaved:

(a) submit-to-start latency on an idle fleet: N sequential submissions, each waiting until the
    start is recorded before the next (Switchyard's samples also split into stages).
(b) sustained throughput, M tasks per run, --rounds runs: Switchyard with SubmitBatch x B from one
    thread and SubmitTask from T threads; raw Celery with send_task from one thread and from T.
    Per task over the whole run: CPU of each process tree, Redis commands (INFO, scripts' inner
    commands included; per command from INFO commandstats), Redis read events, the scheduler's
    own round trips (its ``switchyard_state_round_trips_total``; n/a where it has none) and the
    raw producer's round trips (counted in this process). The bench's own Redis traffic is
    subtracted.
(c) SubmitTask calls/s with F calls in flight (``bench_echo.flood``: one grpc.aio channel), the
    same client loop against the echo service and the scheduler (worker live, then queue paused),
    and against the echo again while the raw Celery worker runs C tasks queued just before (the
    CPU a live worker takes from the same cores when each call is a task it runs).
(d) SubmitBatch intake on a scheduler of its own with no workers (own Redis database): I tasks in
    calls of K; accepted tasks/s per call, and the scheduler's RSS growth per pending task.

--prefetch-variant P (default 2; 0 turns it off) adds a Switchyard stack whose scheduler runs with
--dispatch-prefetch P (own Redis database). --json OUT saves the run (every sample); --from-json
reports a saved run without measuring; --before adds a before/after table of the headline figures
(each with its label and commit) from a saved earlier run. Prints tables and rewrites the
`bench_dispatch` section of docs/benchmarks.md (not with --quick or --no-docs). Every process is
stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from redis import RedisError  # noqa: E402
from switchyard import SchedulerClient, SwitchyardError, Unavailable  # noqa: E402
from switchyard.v1 import scheduler_pb2_grpc  # noqa: E402
from switchyard.wire import worker_queue  # noqa: E402

from bench import bench_echo  # noqa: E402
from bench._dispatch_report import DEFAULTS, report  # noqa: E402
from bench._dispatch_runs import Bench, BenchError, LatencySample, SyPath  # noqa: E402
from bench._docs import code_version, machine, now_utc  # noqa: E402
from examples.local_stack import Stack, child_env, free_port  # noqa: E402

SY_WORKER = "bench-1"
RAW_WORKER = "raw-1"
RAW_QUEUE = worker_queue(RAW_WORKER)
PREFETCH_WORKER = "bench-pf"
CELERY_ARGS = ["-A", "bench.bench_app", "worker", "-P", "prefork", "-c", "2", "--loglevel", "WARNING"]



# --- processes ----------------------------------------------------------------------------------


def start_scheduler(stack: Stack, redis_url: str, name: str,
                    extra: Sequence[str] = ()) -> tuple[str, int, str]:
    """A scheduler on ``redis_url``: (gRPC target, pid, metrics HOST:PORT)."""
    target, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    process = stack.start(
        f"scheduler-{name}",
        [stack.executable("switchyard-scheduler"), "--redis-url", redis_url, "--listen", target,
         "--metrics-listen", metrics, *extra],
        child_env(),
    )
    return target, process.popen.pid, metrics


def start_agent(stack: Stack, target: str, worker_id: str, broker_url: str, record_url: str) -> int:
    agent = stack.start(
        f"agent-{worker_id}",
        [stack.executable("switchyard-agent"), "--scheduler", target, "--worker-id", worker_id,
         "--type", "cpu", "--", "celery", *CELERY_ARGS],
        child_env(CELERY_BROKER_URL=broker_url, BENCH_RECORD_URL=record_url),
    )
    return agent.popen.pid


def start_raw(stack: Stack, redis_url: str) -> int:
    raw = stack.start(
        f"celery-{RAW_WORKER}",
        # -n and --without-mingle/--without-gossip: what the agent adds to its worker's command.
        [stack.executable("celery"), *CELERY_ARGS, "-Q", RAW_QUEUE, "-n", f"{RAW_WORKER}@%h",
         "--without-mingle", "--without-gossip"],
        child_env(CELERY_BROKER_URL=redis_url, BENCH_RECORD_URL=redis_url),
    )
    return raw.popen.pid


def start_echo(stack: Stack) -> str:
    """``bench/bench_echo.py`` on a free port, answering; its target."""
    target = f"127.0.0.1:{free_port()}"
    stack.start("echo", [sys.executable, str(ROOT / "bench" / "bench_echo.py"), "--listen", target],
                child_env())
    channel = grpc.insecure_channel(target)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)  # type: ignore[no-untyped-call]

    def answers() -> bool:
        try:
            stub.SubmitTask(bench_echo.submit_request("probe"), timeout=1)
            return True
        except grpc.RpcError:
            return False

    stack.wait_for("the echo service to answer", answers, 30)
    channel.close()
    return target


def wait_serving(stack: Stack, client: SchedulerClient, worker_id: str = "") -> None:
    """Until the scheduler answers (and, given ``worker_id``, that worker is connected)."""
    def ready() -> bool:
        try:
            workers = client.workers()
        except Unavailable:
            return False
        return not worker_id or any(w.worker_id == worker_id and w.status == "connected" for w in workers)

    stack.wait_for(f"{worker_id or 'the scheduler'} to be ready", ready, 60)


# --- the run ------------------------------------------------------------------------------------


def run(options: argparse.Namespace, stack: Stack) -> int:
    facts = machine()
    print(f"Switchyard dispatch benchmark  ({facts['nproc']} CPUs, Python {facts['python']}, "
          f"redis {facts.get('redis', '?')}; {code_version()})")
    redis_url = stack.start_redis()
    bench = Bench(stack, redis_url, options.threads, options.batch_size, options.timeout)
    bench.raw_queue = RAW_QUEUE
    bench.probe.cpu_roots["redis"] = stack.processes[0].popen.pid
    paths = start_paths(options, stack, bench, redis_url)
    bench.probe.cpu_roots["raw celery"] = start_raw(stack, redis_url)
    echo_target = start_echo(stack)
    results: dict[str, Any] = {
        "label": options.label or code_version(), "code": code_version(), "measured": now_utc(),
        "machine": facts,
        "options": {k: v for k, v in vars(options).items() if k in DEFAULTS} | {"quick": options.quick},
        "labels": {"raw": "raw Celery"} | {p.key: p.label for p in paths},
        "roots": {"raw": {"worker": "raw celery"}}
        | {p.key: {"scheduler": p.scheduler_root, "worker": p.worker_root} for p in paths},
    }

    def save() -> None:  # after every phase, so a run that fails later keeps what it measured
        if options.json:
            Path(options.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")

    try:
        for path in paths:
            wait_serving(stack, path.client, path.worker_id)
        print(f"fleet up: {', '.join(f'{p.label} ({p.worker_id})' for p in paths)}, "
              f"raw Celery ({RAW_WORKER}), echo service; every worker prefork -c 2; redis {redis_url}")
        bench.raw_latency(options.warmup, "warm-raw")
        for path in paths:
            bench.sy_latency(path, options.warmup, f"warm-{path.key}")
        results["background"] = bench.probe.background(2.0 if options.quick else 5.0)
        print(f"idle background: {results['background']['commands_per_s']:.0f} Redis commands/s")
        results["latency"] = measure_latency(options, bench, paths)
        save()
        results["throughput"] = measure_throughput(options, bench, paths, stack)
        save()
        results["rpc"] = measure_rpc(options, bench, paths[0], echo_target)
        save()
        results["intake"] = measure_intake(options, bench, stack, redis_url[: -len("/0")] + "/2")
        save()
    finally:
        for path in paths:
            path.client.close()
        bench.close()
    if options.json:
        print(f"saved the run to {options.json}")
    report(options, results, load_before(options))
    return 0


def start_paths(options: argparse.Namespace, stack: Stack, bench: Bench, redis_url: str) -> list[SyPath]:
    """The Switchyard stacks (scheduler + agent-supervised worker), their processes in the probe."""
    variants: list[tuple[str, str, str, str, list[str]]] = [("sy", "Switchyard", SY_WORKER, redis_url, [])]
    if options.prefetch_variant:
        # Its own database on the same redis-server: separate state, broker queues and stream.
        variants.append(("pf", f"Switchyard, dispatch_prefetch={options.prefetch_variant}", PREFETCH_WORKER,
                         redis_url[: -len("/0")] + "/1", ["--dispatch-prefetch", str(options.prefetch_variant)]))
    paths = []
    for key, label, worker_id, url, extra in variants:
        suffix = "" if key == "sy" else " (prefetch)"
        target, pid, metrics = start_scheduler(stack, url, worker_id, extra)
        agent_pid = start_agent(stack, target, worker_id, url, redis_url)
        path = SyPath(key, label, SchedulerClient(target, timeout=30), worker_id, target,
                      f"scheduler{suffix}", f"agent+celery{suffix}")
        bench.probe.cpu_roots |= {path.scheduler_root: pid, path.worker_root: agent_pid}
        bench.probe.metrics[path.scheduler_root] = metrics
        paths.append(path)
    return paths


def measure_latency(options: argparse.Namespace, bench: Bench,
                    paths: list[SyPath]) -> dict[str, list[list[Any]]]:
    n = options.latency_samples
    print(f"(a) submit-to-start latency, idle fleet, {n} sequential samples per path "
          "(interleaved in blocks of 25)")
    latency: dict[str, list[LatencySample]] = {key: [] for key in ["raw", *(p.key for p in paths)]}
    runners: dict[str, Callable[[int], list[LatencySample]]] = {"raw": bench.raw_latency}
    for path in paths:
        runners[path.key] = lambda k, p=path: bench.sy_latency(p, k)  # type: ignore[misc]
    order, turn = list(runners), 0
    while any(len(v) < n for v in latency.values()):
        for key in order[turn % len(order):] + order[: turn % len(order)]:
            latency[key] += runners[key](min(25, n - len(latency[key]))) if len(latency[key]) < n else []
        turn += 1
    return {key: [[s.latency, s.stages] for s in samples] for key, samples in latency.items()}


def measure_throughput(options: argparse.Namespace, bench: Bench, paths: list[SyPath],
                       stack: Stack) -> dict[str, list[dict[str, Any]]]:
    m = options.throughput_tasks
    print(f"(b) sustained throughput, {m} tasks per run, {options.rounds} round(s)")
    out: dict[str, list[dict[str, Any]]] = {}
    for round_no in range(options.rounds):
        print(f" round {round_no + 1}")
        out.setdefault("raw/loop", []).append(bench.raw_throughput_loop(m))
        for path in paths:
            out.setdefault(f"{path.key}/batch", []).append(bench.sy_throughput_batch(path, m))
        out.setdefault("raw/threads", []).append(bench.raw_throughput_threads(m))
        for path in paths:
            out.setdefault(f"{path.key}/threads", []).append(bench.sy_throughput_threads(path, m))
        stack.check_alive()
    return out


def measure_rpc(options: argparse.Namespace, bench: Bench, path: SyPath, echo: str) -> dict[str, Any]:
    calls, flight = options.rpc_calls, options.in_flight
    print(f"(c) SubmitTask calls/s, {flight} in flight, {calls} calls per run, {options.rounds} round(s)")
    queue = path.client.submit("bench.noop", args=[time.time()], kwargs={"phase": "rpc-queue"}).queue
    bench.settle(path)
    backlog_left: list[float] = []

    def busy_echo() -> float:
        run = bench.busy_echo_flood(echo, calls, flight)
        backlog_left.append(run["backlog_left"])
        return run["rate"]

    runs: dict[str, Callable[[], float]] = {
        "echo": lambda: bench.submit_flood(echo, calls, flight, "rpc-echo"),
        "sy": lambda: bench.sy_flood(path, calls, flight),
        "sy-paused": lambda: bench.sy_flood(path, calls, flight, paused_queue=queue),
        "echo-busy": busy_echo,
    }
    rates: dict[str, list[float]] = {key: [] for key in runs}
    for round_no in range(options.rounds):
        order = list(runs)[round_no % len(runs):] + list(runs)[: round_no % len(runs)]
        for key in order:
            rates[key].append(runs[key]())
            print(f"  {key}: {rates[key][-1]:.0f} calls/s", flush=True)
    if min(backlog_left, default=1.0) <= 0:
        print("  note: the raw Celery worker finished its backlog before an echo-busy flood ended",
              flush=True)
    return {"calls": calls, "in_flight": flight, "queue": queue, "rates": rates,
            "echo_busy_backlog_left": backlog_left}


def measure_intake(options: argparse.Namespace, bench: Bench, stack: Stack,
                   url: str) -> dict[str, Any] | None:
    total, per_call = options.intake_tasks, options.intake_batch
    if total <= 0:
        return None
    print(f"(d) SubmitBatch intake, no workers: {total} tasks in calls of {per_call}")
    target, pid, _metrics = start_scheduler(stack, url, "intake")
    with SchedulerClient(target, timeout=30) as client:
        wait_serving(stack, client)
    return bench.intake(target, pid, total, per_call)


def load_before(options: argparse.Namespace) -> dict[str, Any] | None:
    if not options.before:
        return None
    loaded: dict[str, Any] = json.loads(Path(options.before).read_text(encoding="utf-8"))
    return loaded


# --- command line ------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--latency-samples", type=int, metavar="N", help="sequential submissions per path for (a)")
    add("--throughput-tasks", type=int, metavar="M", help="tasks per throughput run for (b)")
    add("--threads", type=int, metavar="T", help="submitting threads for the one-by-one runs of (b)")
    add("--batch-size", type=int, metavar="B", help="tasks per SubmitBatch call in (b)")
    add("--rounds", type=int, metavar="R", help="runs per path in (b) and (c); medians reported")
    add("--prefetch-variant", type=int, metavar="P",
        help="also run a Switchyard stack with --dispatch-prefetch P (0 turns it off)")
    add("--rpc-calls", type=int, metavar="C", help="SubmitTask calls per run in (c)")
    add("--in-flight", type=int, metavar="F", help="SubmitTask calls outstanding at once in (c)")
    add("--intake-tasks", type=int, metavar="I", help="tasks submitted in (d) (0 skips it)")
    add("--intake-batch", type=int, metavar="K", help="tasks per SubmitBatch call in (d)")
    add("--warmup", type=int, default=10, metavar="K", help="unmeasured tasks per path first (default 10)")
    add("--timeout", type=float, default=300.0, metavar="S",
        help="seconds any single wait may take before the run fails (default 300)")
    add("--label", default="", help="name of this run in tables (default: the commit)")
    add("--json", default="", metavar="OUT", help="save the run, every sample, as JSON")
    add("--before", default="", metavar="FILE",
        help="a saved run (--json) of the code before: adds a before/after table")
    add("--from-json", default="", metavar="FILE", help="report a saved run instead of measuring")
    add("--quick", action="store_true",
        help="smoke run (20 latency samples, 200 tasks, 1 round, 500 calls, 20,000 intake); implies --no-docs")
    add("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.set_defaults(**DEFAULTS)
    options = parser.parse_args(argv)
    if options.quick:
        quick = {"latency_samples": 20, "throughput_tasks": 200, "rounds": 1, "rpc_calls": 500,
                 "intake_tasks": 20_000, "warmup": 3}
        for name, value in quick.items():
            setattr(options, name, min(getattr(options, name), value))
        options.no_docs = True
    for name in ("latency_samples", "throughput_tasks", "threads", "batch_size", "rounds", "rpc_calls",
                 "in_flight", "intake_batch"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    if options.from_json:
        saved = json.loads(Path(options.from_json).read_text(encoding="utf-8"))
        report(options, saved, load_before(options))
        return 0
    if shutil.which("redis-server") is None:
        print("error: redis-server is not on PATH; run `make deps-check`", file=sys.stderr)
        return 1
    stack = Stack(prefix="switchyard-bench-", error=BenchError)
    return stack.run(lambda: run(options, stack), (BenchError, SwitchyardError, RedisError),
                     keep_logs_on_error=True)


if __name__ == "__main__":
    sys.exit(main())
