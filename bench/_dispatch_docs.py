"""The `bench_dispatch` section of docs/benchmarks.md, written from a run's tables.

Only what the run measured is stated; the prose explains how each figure was obtained, so the
section stays true whatever protocol the measured code speaks.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench._dispatch_report import DEFAULTS, Table, before_after_table, headline, run_name
from bench._docs import markdown_table, update_section


def command_line(options: argparse.Namespace, res: dict[str, Any]) -> str:
    """The command that reproduces the run (its non-default settings, label and before file)."""
    opts = res["options"]
    flags = [f"--{name.replace('_', '-')} {opts[name]}" for name, default in DEFAULTS.items()
             if name in opts and opts[name] != default]
    if options.label:
        flags.append(f"--label '{options.label}'")
    if options.json:
        flags.append(f"--json {options.json}")
    if options.before:
        flags.append(f"--before {options.before}")
    if not flags:
        return "`make bench` (= `.venv/bin/python bench/bench_dispatch.py`)"
    return f"`.venv/bin/python bench/bench_dispatch.py {' '.join(flags)}`"


def write_docs(options: argparse.Namespace, res: dict[str, Any], built: dict[str, Table],
               before: dict[str, Any] | None) -> None:
    facts, opts = res["machine"], res["options"]
    figures = headline(res)
    background = res.get("background") or {}
    comparison = ""
    if before is not None:
        comparison = f"""
### Before and after

The headline figures of two runs of this benchmark on the same machine, each with the code it
measured (the earlier one from a git worktree of that commit with this `bench/` copied in, its
run saved with `--json` and passed here with `--before`). "X vs Y": Switchyard's figure against
the same run's raw Celery (or echo) figure.

{markdown_table(*before_after_table(before, res))}
"""
    pf = ""
    if "pf" in res["labels"]:
        pf = (f" A third stack, identical but for the scheduler's `--dispatch-prefetch "
              f"{opts['prefetch_variant']}`, runs beside them on its own Redis database (`--prefetch-variant`; "
              "0 turns it off).")
    intake = res.get("intake")
    intake_text = "Not measured in this run (`--intake-tasks 0`)." if not intake else (
        f"A scheduler of its own (its own Redis database, no workers, so nothing is handed out) takes "
        f"{intake['rss'][-1][0]:,} tasks in `SubmitBatch` calls of {intake['per_call']:,} (requests built "
        "before the clock starts; the time of each call is the time to accept its tasks). RSS is the "
        "scheduler process's VmRSS; growth per pending task is measured from after the first call "
        "(buffers warm) to the end, a second after the last call.")
    body = f"""## Dispatch: Switchyard vs raw Celery

Command: {command_line(options, res)}.
Code: {run_name(res)}. Measured {res['measured']} on {facts['nproc']} CPUs
({facts.get('cpu', '?')}), {facts['platform']}, Python {facts['python']}, redis-server {facts.get('redis', '?')}.
The machine is shared and noisy: read the medians and ratios, not single runs.
{comparison}
### Headline figures

{markdown_table(*built['headline'])}

Per-task figures are medians over the SubmitBatch throughput runs (raw Celery: its send_task
loop runs); the tables below give every run.

### Setup

All in one run on one private `redis-server` (no persistence): `switchyard-scheduler` with default
settings (metrics on, so its `switchyard_state_round_trips_total` can be scraped where it exists)
and one `switchyard-agent --worker-id bench-1 --type cpu -- celery -A bench.bench_app worker -P prefork -c 2`;
beside it the baseline, a plain `celery -A bench.bench_app worker -P prefork -c 2 -Q sy.w.raw-1`
(no agent) fed by `app.send_task("bench.noop", queue="sy.w.raw-1")`; and
[`bench/bench_echo.py`](../bench/bench_echo.py), a bare `grpc.aio` service answering
`Scheduler/SubmitTask` with a constant. Both workers run the same app
([`bench/bench_app.py`](../bench/bench_app.py)) with the settings the agent forces (late acks,
prefetch multiplier 1, JSON) and stay up for the whole run. `bench.noop(sent_at)` records
`time.time()` when user code starts (one RPUSH) and returns.{pf}

### (a) Submit-to-start latency, idle fleet

{opts['latency_samples']} sequential submissions per path, each waiting for the start to be recorded
(and, for Switchyard, until the scheduler has seen the task succeed) before the next; the paths
alternate in blocks of 25. Latency = start recorded by the task - client send time.

{markdown_table(*built['lat'])}

Where Switchyard's time goes, from the task's own timestamps (client send time, the scheduler's
`submitted_at` and `dispatched_at`, the worker's claim `started_at`, the task's recorded start;
one machine, one clock). The first row overlaps the others (the reply races the dispatch).

{markdown_table(*built['stages'])}

### (b) Sustained throughput, and what each task costs

{opts['throughput_tasks']} tasks per run, submitted as fast as possible; rounds: {opts['rounds']}, the paths
interleaved within each round. Rate = tasks / (last task's end - first submit). "/ raw" compares
with the raw run of the same submission style (the loop for SubmitBatch). "send->start p50" is
the median time a task waited between its send and its start (mostly behind the backlog).

{markdown_table(*built['tp'])}

CPU used during the throughput runs (first submit to last task's end), in % of one core (the
machine has {facts['nproc']}), per process tree, median over rounds:

{markdown_table(*built['cpu'])}

Per task, from the first submit until the scheduler has seen every task succeed (raw Celery:
until every task ran), median over rounds. CPU in ms per task from each process tree's own CPU
time (/proc). Redis commands: INFO `total_commands_processed` delta, which counts the commands
run inside Lua scripts (and the task's own RPUSH, 1 per task on both paths). Redis reads: INFO
`total_reads_processed` delta, read events on client sockets of every client (scheduler, agent,
workers, producer): about one per round trip. Round trips: the scheduler's own
`switchyard_state_round_trips_total`, requests on its state-store connection (n/a where the code
has no such counter; a separate kombu publishing connection, where the code has one, is not in
it, but is in the Redis reads); for raw Celery,
the producer's requests counted by a counting redis-py connection in the bench process. The
bench's own Redis traffic (polling for records, INFO) is subtracted; the idle background of every
stack ({background.get('commands_per_s', float('nan')):.0f} commands/s, {background.get('reads_per_s', float('nan')):.0f} reads/s) is not.

{markdown_table(*built['per_task'])}

By command (INFO commandstats deltas per task, commands inside scripts included):

{markdown_table(*built['cmdstats'])}

### (c) SubmitTask calls per second, {opts['in_flight']} in flight

The same client loop (`bench_echo.flood`: one `grpc.aio` channel, {opts['in_flight']} coroutines each
awaiting its call before sending the next) against the bare echo service and against the
scheduler, {opts['rpc_calls']} calls per run after 100 unmeasured ones; rounds: {opts['rounds']}, interleaved.
"worker live": the tasks are dispatched and run meanwhile; "queue paused": the scheduler only
takes them in (the queue is resumed and drained afterwards). "raw Celery worker running ... queued
tasks": the echo again, right after as many tasks as a run has calls were queued to the raw Celery
worker, so the same cores also run the tasks a live run hands out ({_backlog(res.get('rpc') or {})}).
Its column shows how much of the gap to the echo is the worker's share of the machine rather
than the scheduler's.

{markdown_table(*built['rpc'])}

### (d) SubmitBatch intake and memory per pending task

{intake_text}

{markdown_table(*built['intake'])}

### Reading the figures

* Idle latency: Switchyard's p50 is {_x(figures['lat_p50'])} raw Celery's; its p99 is {_v(figures['lat_p99'][0])} ms.
* Throughput: {_v(figures['tp_batch'][0], 0)} tasks/s with SubmitBatch, {_x(figures['tp_batch'])} raw Celery's
  send_task loop; one by one from {opts['threads']} threads {_x(figures['tp_threads'])} raw Celery's threads.
* Cost per task: the scheduler spent {_v(figures['sched_cpu'][0], 2)} ms of CPU per task over the whole
  lifecycle (one asyncio loop, so a ceiling near {_ceiling(figures['sched_cpu'][0])} tasks/s); Redis ran
  {_v(figures['redis_cmds'][0])} commands per task against raw Celery's {_v(figures['redis_cmds'][1])}; the scheduler made
  {_v(figures['round_trips'][0], 2)} round trips per task (raw Celery's producer {_v(figures['round_trips'][1], 2)}).
* SubmitTask with {opts['in_flight']} calls in flight reached {_x(figures['rpc'])} of a bare Python gRPC echo with
  the worker live ({_x(figures['rpc_paused'])} with the queue paused); with a raw Celery worker running the same
  number of tasks on the same cores, the echo itself reached {_x((figures['rpc_busy'][1], figures['rpc'][1]))} of its idle-machine rate, and
  Switchyard with the worker live {_x(figures['rpc_busy'])} of that.
* SubmitBatch accepted {_v(figures['batch_rate'][0], 0)} tasks/s per call; the scheduler grew by
  {_v(figures['rss_per_task'][0], 0)} bytes of RSS per pending task.
"""
    update_section("bench_dispatch", body)


def _v(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _x(pair: tuple[float | None, float | None]) -> str:
    value, other = pair
    return "n/a" if value is None or not other else f"{value / other:.2f}x"


def _backlog(rpc: dict[str, Any]) -> str:
    """Whether the raw worker stayed busy through every echo-busy flood, from its tasks left."""
    left = rpc.get("echo_busy_backlog_left") or []
    if not left:
        return "not measured"
    counts = ", ".join(f"{v:,.0f}" for v in left)
    if min(left) > 0:
        return f"the worker was still busy when every such flood ended: tasks not yet started then, per round, {counts}"
    return (f"in some rounds the worker finished its queue before the flood ended, so part of the flood ran "
            f"without it: tasks not yet started at the end, per round, {counts}")


def _ceiling(ms_per_task: float | None) -> str:
    return "n/a" if not ms_per_task else f"{1000 / ms_per_task:,.0f}"
