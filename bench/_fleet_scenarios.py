"""The three measurements of bench/bench_fleet.py, each on its own Redis and scheduler.

* `throughput`: N agents x S slots; K tasks with random priorities wait in the paused queue, then
  the queue is resumed while M more are submitted as fast as the scheduler takes them; tasks/s
  through the scheduler (from the resume to the last success it recorded), its CPU, round trips
  and Redis commands per task, and the priority check over every hand-out (bench/_fleet_check.py).
* `storm`: many agents say hello at the same moment, then heartbeat every second; how many were
  welcomed, and the scheduler's CPU while they heartbeat.
* `backlog`: with the queue paused, fill to each pending level (1,000 and then 1,000,000), then
  time a window of W submissions and, with the queue resumed, a window of W hand-outs (tasks
  handed out and reported finished); the scheduler's RSS at each level.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from switchyard.v1 import scheduler_pb2

from bench._docs import percentile
from bench._fleet_check import HandOutRecord, count_inversions
from bench._fleet_procs import (
    QUEUE,
    CpuMeter,
    Scheduler,
    last_event,
    python_child,
    redis_facts,
    rss_mib,
    run_child,
    start_scheduler,
    wait_event,
)
from examples.local_stack import Process, Stack


def start_fleet(stack: Stack, sched: Scheduler, options: argparse.Namespace, agents: int, slots: int,
                *extra: str, prefix: str = "sim", processes: int = 0) -> list[Process]:
    """The simulated fleet, split over `processes` (default `--fleet-processes`) processes."""
    count = max(1, min(processes or options.fleet_processes, agents))
    fleet = [python_child(stack, f"fleet-{n}", "bench._fleet_sim", "--target", sched.target,
                          "--redis-url", sched.redis_url, "--agents", str(agents // count + (n < agents % count)),
                          "--slots", str(slots), "--id-prefix", f"{prefix}{n}",
                          "--consumers", str(options.consumers), *extra)
             for n in range(count)]
    return fleet


def hellos(stack: Stack, fleet: list[Process], timeout: float) -> dict[str, Any]:
    """The fleet's first answers to its hellos, added up, once every agent is welcomed (refused
    agents retry)."""
    total: dict[str, Any] = {"welcomed": 0, "refused": {}, "examples": {}, "all_answered_seconds": 0.0,
                             "hello_max_ms": 0.0}
    for process in fleet:
        hello = wait_event(stack, process, "hello", timeout)
        total["welcomed"] += hello["welcomed"]
        for code, count in hello["refused"].items():
            total["refused"][code] = total["refused"].get(code, 0) + count
        total["examples"].update(hello["refusal_examples"])
        total["all_answered_seconds"] = max(total["all_answered_seconds"], hello["all_answered_seconds"])
        total["hello_max_ms"] = max(total["hello_max_ms"], hello["hello_max_ms"] or 0.0)
    total["all_welcomed_seconds"] = max(wait_event(stack, p, "all_welcomed", timeout)["seconds"] for p in fleet)
    return total


def stop_fleet(stack: Stack, fleet: list[Process]) -> dict[str, int]:
    """SIGTERM the fleet; what its workers did (succeeded, stale claims, Redis errors)."""
    for process in fleet:
        process.popen.send_signal(signal.SIGTERM)
    totals = {"succeeded": 0, "stale": 0, "errors": 0}
    for process in fleet:
        process.popen.wait(30)
        final = last_event(process, "final") or {}
        for key in totals:
            totals[key] += int(final.get(key, 0))
    return totals


def pids(sched: Scheduler, fleet: list[Process]) -> dict[str, int]:
    out = {"scheduler": sched.pid, "redis": int(redis_facts(sched.redis_url)["pid"])}
    out |= {f"fleet-{n}": p.popen.pid for n, p in enumerate(fleet)}
    return out


def fleet_cpu(meter: CpuMeter) -> float:
    return sum(v for k, v in meter.used.items() if k.startswith("fleet-"))


async def _load_records(redis_url: str, task_ids: list[str]) -> list[Any]:
    """Task records through the scheduler's own store code (one pipeline per thousand)."""
    from scheduler.state.store import RedisState

    state = RedisState(redis_url, "sy")
    try:
        out: list[Any] = []
        for start in range(0, len(task_ids), 1000):
            out += await state.tasks.load(task_ids[start:start + 1000])
        return out
    finally:
        await state.close()


def throughput(stack: Stack, options: argparse.Namespace, profile: Path | None = None) -> dict[str, Any]:
    """M tasks through N agents x S slots; rate, cost per task and the priority check."""
    redis_url = stack.start_redis()
    sched = start_scheduler(stack, redis_url)
    fleet = start_fleet(stack, sched, options, options.agents, options.slots)
    hello = hellos(stack, fleet, 120)
    records = stack.temp_dir / "records.txt"
    submit = ("bench._fleet_submit", "--target", sched.target, "--batch", str(options.batch),
              "--in-flight", str(options.in_flight), "--records", str(records))
    prefill, m = options.prefill, options.tasks
    # A standing backlog from the start, so the order is tested under load; then the rest is
    # submitted while the fleet works (the backlog may drain and submissions be matched at once).
    sched.stub.PauseQueue(scheduler_pb2.PauseQueueRequest(queue=QUEUE), timeout=30)
    if prefill:
        run_child(stack, "prefill", *submit, "--count", str(prefill), "--seed", "2",
                  "--first-call", str(10**6), timeout=prefill / 20 + 120)
    meter = CpuMeter(pids(sched, fleet)).start()
    trips0, commands0 = sched.round_trips(), redis_facts(redis_url)["commands"]
    spy = None
    if profile is not None:
        # Not one of the stack's children: it ends on its own, which the stack would call a failure.
        spy = subprocess.Popen([stack.executable("py-spy"), "record", "--pid", str(sched.pid), "--rate", "250",
                                "--duration", str(options.profile_seconds), "--format", "raw", "-o", str(profile),
                                "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.time()
    sched.stub.ResumeQueue(scheduler_pb2.ResumeQueueRequest(queue=QUEUE), timeout=30)
    submitted = run_child(stack, "submitter", *submit, "--count", str(m), timeout=m / 20 + 120)
    total = prefill + m
    sched.wait_queue(stack, f"{total} tasks to succeed", lambda q: q.completed >= total,
                     timeout=total / 20 + 120, interval=0.2)
    meter.stop()
    trips, commands = sched.round_trips() - trips0, redis_facts(redis_url)["commands"] - commands0
    rss = rss_mib(sched.pid)
    work = stop_fleet(stack, fleet)
    if spy is not None:
        spy.wait(options.profile_seconds + 60)
    lines = [line.split() for line in records.read_text(encoding="utf-8").splitlines() if line]
    loaded = {r.task_id: r for r in asyncio.run(_load_records(redis_url, [line[0] for line in lines]))}
    checked = [HandOutRecord(tid, int(prio), loaded[tid].seq, float(acked), loaded[tid].dispatched_at, int(call))
               for tid, prio, acked, call in lines if tid in loaded]
    order = count_inversions(checked)
    finished = sorted(r.finished_at for r in loaded.values() if r.finished_at)
    return {
        "agents": options.agents, "slots": options.slots, "tasks": m, "prefill": prefill, "batch": options.batch,
        "in_flight": options.in_flight, "fleet_processes": len(fleet), "consumers": options.consumers,
        "hello": hello, "work": work, "submit_rate": submitted["rate"], "submitter_cpu": submitted.get("cpu", 0.0),
        "rate": len(finished) / max(1e-9, finished[-1] - began) if finished else 0.0,
        "steady_rate": 0.8 * len(finished) / max(1e-9, percentile(finished, 90) - percentile(finished, 10)),
        "window_seconds": meter.seconds, "cpu": meter.used, "fleet_cpu": fleet_cpu(meter),
        "sched_cpu_ms_per_task": 1000 * meter.used["scheduler"] / total,
        "sched_cpu_percent": meter.percent("scheduler"),
        "round_trips_per_task": trips / total, "redis_commands_per_task": commands / total,
        "rss_mib": rss, "order": asdict(order), "finished": len(finished),
    }


def storm(stack: Stack, options: argparse.Namespace) -> dict[str, Any]:
    """`--storm-agents` hellos at once, then heartbeats at 1 Hz for `--storm-seconds`."""
    redis_url = stack.start_redis()
    sched = start_scheduler(stack, redis_url, "--heartbeat-interval-seconds", "1")
    rss_before = rss_mib(sched.pid)
    # One process, so that every hello really leaves at the same moment.
    fleet = start_fleet(stack, sched, options, options.storm_agents, 1, "--no-work", prefix="storm", processes=1)
    hello = hellos(stack, fleet, 300)
    time.sleep(3)  # past the burst of first heartbeats
    beats0 = sum((last_event(p, "progress") or {}).get("heartbeats", 0) for p in fleet)
    meter = CpuMeter(pids(sched, fleet)).start()
    time.sleep(options.storm_seconds)
    meter.stop()
    beats = sum((last_event(p, "progress") or {}).get("heartbeats", 0) for p in fleet) - beats0
    reply = sched.stub.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=30)
    connected = sum(w.status == scheduler_pb2.WORKER_STATUS_CONNECTED for w in reply.workers)
    rss = rss_mib(sched.pid)
    stop_fleet(stack, fleet)
    return {
        "agents": options.storm_agents, "fleet_processes": len(fleet), "hello": hello, "connected": connected,
        "window_seconds": meter.seconds, "heartbeats_per_second": beats / meter.seconds,
        "sched_cpu_percent": meter.percent("scheduler"), "redis_cpu_percent": meter.percent("redis"),
        "fleet_cpu_percent": 100 * fleet_cpu(meter) / meter.seconds,
        "rss_before_mib": rss_before, "rss_mib": rss,
    }


def _submit(stack: Stack, sched: Scheduler, count: int, batch: int, name: str) -> dict[str, Any]:
    return run_child(stack, name, "bench._fleet_submit", "--target", sched.target, "--count", str(count),
                     "--batch", str(batch), "--in-flight", "4", timeout=count / 200 + 120)


def backlog(stack: Stack, options: argparse.Namespace) -> dict[str, Any]:
    """Submit and hand-out rates at 1,000 pending and at `--backlog` pending, and RSS at each."""
    redis_url = stack.start_redis()
    sched = start_scheduler(stack, redis_url)
    fleet = start_fleet(stack, sched, options, options.backlog_agents, options.slots)
    hellos(stack, fleet, 120)
    sched.stub.PauseQueue(scheduler_pb2.PauseQueueRequest(queue=QUEUE), timeout=30)
    window = options.window
    levels: list[dict[str, Any]] = [{"pending": 0, "rss_mib": rss_mib(sched.pid)}]
    for level in (1000, options.backlog):
        missing = level - sched.queue().pending
        filled = _submit(stack, sched, missing, 1000, f"fill-{level}") if missing > 0 else {"rate": 0.0}
        facts = {"pending": sched.queue().pending, "fill_rate": filled["rate"], "rss_mib": rss_mib(sched.pid),
                 "redis_mib": redis_facts(redis_url)["used_memory_mib"]}
        meter = CpuMeter({"scheduler": sched.pid}).start()
        facts["submit_rate"] = _submit(stack, sched, window, options.batch, f"submit-{level}")["rate"]
        facts["submit_cpu_ms_per_task"] = 1000 * meter.stop().used["scheduler"] / window
        done_before = sched.queue().completed
        meter.start()
        began = time.time()
        sched.stub.ResumeQueue(scheduler_pb2.ResumeQueueRequest(queue=QUEUE), timeout=30)
        ended = sched.wait_queue(stack, f"{window} hand-outs at {level} pending",
                                 lambda q, target=done_before + window: q.completed >= target,
                                 timeout=window / 20 + 120, interval=0.05)
        sched.stub.PauseQueue(scheduler_pb2.PauseQueueRequest(queue=QUEUE), timeout=30)
        facts["handout_cpu_ms_per_task"] = 1000 * meter.stop().used["scheduler"] / window
        facts["handout_rate"] = window / max(1e-9, ended - began)
        sched.wait_queue(stack, "hand-outs in flight to finish", lambda q: q.processing == 0, timeout=120)
        facts["rss_after_mib"] = rss_mib(sched.pid)
        levels.append(facts)
    work = stop_fleet(stack, fleet)
    return {"agents": options.backlog_agents, "slots": options.slots, "window": window, "levels": levels,
            "work": work}
