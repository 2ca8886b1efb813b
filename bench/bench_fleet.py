"""Fleet simulator: one real scheduler driven by hundreds of simulated agents, no Celery.

    make bench-fleet                      # = .venv/bin/python bench/bench_fleet.py
    .venv/bin/python bench/bench_fleet.py [--scenarios throughput,storm,backlog] [--agents N]
        [--slots S] [--tasks M] [--storm-agents A] [--backlog P] [--window W] [--fleet-processes F]
        [--json-out FILE] [--compare FILE] [--profile FILE] [--quick] [--no-docs]

Proves the scheduler's own capacity: a private `redis-server` and `switchyard-scheduler` (one
queue, aging off; see bench/_fleet_procs.py) on free loopback ports, and the simulator in other
processes: agents with real AgentGateway streams whose workers pop their real Celery queues and
claim and report each attempt with the worker side's own code (bench/_fleet_sim.py), and a
client submitting tasks with random priorities (bench/_fleet_submit.py). The three scenarios
(bench/_fleet_scenarios.py) each get their own Redis and scheduler:

* throughput: K waiting plus M submitted tasks through N agents x S slots; tasks/s, the
  scheduler's CPU, round trips and Redis commands per task, and every hand-out checked for
  priority inversions (bench/_fleet_check.py);
* storm: A agents say hello at the same moment and heartbeat every second;
* order: the priority check again with 5 agents x 2 slots, so a SubmitBatch call holds more tasks
  than there are free slots (the submit round must hand out the best of the call, not the first);
* backlog: submit and hand-out rates at 1,000 and at P pending tasks, and the scheduler's RSS.

`--json-out` keeps the figures; `--compare FILE` puts an earlier run's figures beside them, by
default bench/_fleet_baseline.json (the "before" of issue 8); `--render FILE` shows a kept run
again (and writes the docs from it) without measuring. `--profile FILE` records the scheduler with py-spy during the
throughput run (raw collapsed stacks; such a run never writes the docs). Prints tables and
rewrites the `bench_fleet` section of docs/benchmarks.md (not with --quick, --no-docs or --profile).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _fleet_scenarios as scenarios  # noqa: E402
from bench._docs import (  # noqa: E402
    code_version,
    machine,
    markdown_table,
    now_utc,
    python_command,
    text_table,
    update_section,
)
from bench._fleet_procs import BenchError, profile_summary  # noqa: E402
from examples.local_stack import Stack  # noqa: E402

SCENARIOS = ("throughput", "order", "storm", "backlog")
BASELINE = ROOT / "bench" / "_fleet_baseline.json"
"""The "before" run of issue 8 (commit 6a3e61c), shown beside every new run unless --no-baseline."""


def _pct(value: float) -> str:
    return f"{value:.0f}%"


def throughput_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    order, cpu, seconds = res["order"], res["cpu"], res["window_seconds"]
    return [
        ("simulated agents x slots (fleet processes)", f"{res['agents']} x {res['slots']} ({res['fleet_processes']})"),
        ("tasks: waiting at the start + submitted during the run", f"{res.get('prefill', 0)} + {res['tasks']}"),
        ("SubmitBatch of, calls in flight", f"{res['batch']}, {res['in_flight']}"),
        ("tasks/s, start -> last success recorded", f"{res['rate']:.0f}"),
        ("tasks/s, steady (10th-90th percentile of successes)", f"{res['steady_rate']:.0f}"),
        ("SubmitBatch accepted tasks/s during the run", f"{res['submit_rate']:.0f}"),
        ("scheduler CPU per task", f"{res['sched_cpu_ms_per_task']:.2f} ms"),
        ("scheduler CPU, % of one core", _pct(res["sched_cpu_percent"])),
        ("scheduler round trips per task", f"{res['round_trips_per_task']:.2f}"),
        ("Redis commands per task (scripts' inner commands included)", f"{res['redis_commands_per_task']:.1f}"),
        ("priority inversions (same-call ones) / FIFO inversions; hand-outs checked",
         f"{order['priority_inversions']} ({order.get('same_call_inversions', '-')}) / {order['fifo_inversions']};"
         f" {order['checked']}"),
        ("Redis CPU, % of one core", _pct(100 * cpu["redis"] / seconds)),
        ("simulated fleet CPU, % of one core", _pct(100 * res["fleet_cpu"] / seconds)),
        ("submitter CPU (whole run)", f"{res['submitter_cpu']:.1f} s"),
        ("stale claims / worker-side Redis errors", f"{res['work']['stale']} / {res['work']['errors']}"),
        ("agents refused at their first hello (then retried)", str(sum(res["hello"]["refused"].values()))),
        ("scheduler RSS after the run", f"{res['rss_mib']:.0f} MiB"),
    ]


def order_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    order = res["order"]
    return [
        ("simulated agents x slots; tasks in SubmitBatch calls of", f"{res['agents']} x {res['slots']}; "
         f"{res['tasks']} in calls of {res['batch']}"),
        ("priority inversions (same-call ones) / FIFO inversions; hand-outs checked",
         f"{order['priority_inversions']} ({order.get('same_call_inversions', '-')}) / {order['fifo_inversions']};"
         f" {order['checked']}"),
        ("tasks/s, start -> last success recorded", f"{res['rate']:.0f}"),
    ]


def storm_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    hello = res["hello"]
    refused = ", ".join(f"{n} {code}" for code, n in sorted(hello["refused"].items())) or "none"
    return [
        ("agents saying hello at the same moment", str(res["agents"])),
        ("welcomed / refused", f"{hello['welcomed']} / {refused}"),
        ("every hello answered within", f"{hello['all_answered_seconds']:.2f} s"),
        ("every agent welcomed within (refused ones retry after 0.1-0.5 s)", f"{hello['all_welcomed_seconds']:.2f} s"),
        ("connected per ListWorkers afterwards", str(res["connected"])),
        ("heartbeats/s received", f"{res['heartbeats_per_second']:.0f}"),
        ("scheduler CPU while they heartbeat, % of one core", _pct(res["sched_cpu_percent"])),
        ("Redis CPU / simulated fleet CPU, % of one core",
         f"{_pct(res['redis_cpu_percent'])} / {_pct(res['fleet_cpu_percent'])}"),
        ("scheduler RSS before / with the fleet", f"{res['rss_before_mib']:.0f} / {res['rss_mib']:.0f} MiB"),
    ]


def backlog_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    base, rows = res["levels"][1], [("simulated agents x slots; window", f"{res['agents']} x {res['slots']}; {res['window']} tasks")]
    rows.append(("scheduler RSS, nothing pending", f"{res['levels'][0]['rss_mib']:.0f} MiB"))
    for level in res["levels"][1:]:
        at = f"at {level['pending']:,} pending"
        rows += [
            (f"SubmitBatch tasks/s {at} (x of 1k)", f"{level['submit_rate']:.0f} ({level['submit_rate'] / base['submit_rate']:.2f}x)"),
            (f"hand-outs/s {at} (x of 1k)", f"{level['handout_rate']:.0f} ({level['handout_rate'] / base['handout_rate']:.2f}x)"),
            (f"scheduler CPU per submit / per hand-out {at}",
             f"{level['submit_cpu_ms_per_task']:.2f} / {level['handout_cpu_ms_per_task']:.2f} ms"),
            (f"scheduler RSS / Redis memory {at}", f"{level['rss_mib']:.0f} / {level['redis_mib']:.0f} MiB"),
        ]
    rows.append(("fill rate to the largest backlog (SubmitBatch of 1000)", f"{res['levels'][-1]['fill_rate']:.0f} tasks/s"))
    return rows


def verdicts(run: dict[str, Any]) -> list[str]:
    """Issue 8's acceptance items 3 and 4, checked against one run's figures."""
    lines: list[str] = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"[{'met' if ok else 'NOT met'}] {text}")

    if "throughput" in run:
        res = run["throughput"]
        check(res["rate"] >= 2000, f">= 2,000 tasks/s through one scheduler: {res['rate']:.0f} tasks/s "
              f"({res['agents']} agents x {res['slots']} slots)")
    for name in ("throughput", "order"):
        if name in run:
            res = run[name]
            order = res["order"]
            check(order["priority_inversions"] == 0, f"no priority inversion ({res['agents']} x {res['slots']} slots): "
                  f"{order['priority_inversions']} in {order['checked']} hand-outs")
    if "storm" in run:
        res = run["storm"]
        check(res["hello"]["welcomed"] == res["agents"], f"{res['agents']} agents connecting at once all welcomed: "
              f"{res['hello']['welcomed']} at their first hello")
        check(res["sched_cpu_percent"] < 50, f"their 1 Hz heartbeats use < 50% of one core: "
              f"{res['sched_cpu_percent']:.0f}%")
    if "backlog" in run:
        small, large = run["backlog"]["levels"][1], run["backlog"]["levels"][-1]
        for key, what in (("submit_rate", "submit"), ("handout_rate", "hand-out")):
            ratio = large[key] / small[key]
            check(ratio >= 0.5, f"{what} rate at {large['pending']:,} pending within 2x of 1,000 pending: "
                  f"{large[key]:.0f} vs {small[key]:.0f} tasks/s ({ratio:.2f}x)")
        per_task = (large["rss_mib"] - small["rss_mib"]) * (1 << 20) / max(1, large["pending"] - small["pending"])
        lines.append(f"[figure] scheduler RSS {large['rss_mib']:.0f} MiB at {large['pending']:,} pending "
                     f"(~{per_task:.0f} bytes per pending task over the 1,000-pending level)")
    return lines


ROWS: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "throughput": throughput_rows, "order": order_rows, "storm": storm_rows, "backlog": backlog_rows,
}
TITLES = {
    "throughput": "Throughput and priority order",
    "order": "Priority order with fewer free slots than a SubmitBatch call holds",
    "storm": "1,000 agents connecting at once, heartbeating at 1 Hz",
    "backlog": "Rates and memory with a large backlog",
}


def table(name: str, runs: list[dict[str, Any]], render: Callable[..., str]) -> str:
    """One scenario's figures, one column per run (the earlier run first)."""
    present = [run for run in runs if name in run]
    columns = [dict(ROWS[name](run[name])) for run in present]
    labels = list(dict.fromkeys(label for run in present for label, _ in ROWS[name](run[name])))
    headers = ["figure", *(f"{run['label']} ({run['code']})" for run in present)]
    return render(headers, [[label, *(col.get(label, "-") for col in columns)] for label in labels])


def measure(options: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"label": options.label, "code": code_version(), "when": now_utc(),
                              "machine": machine(), "command": command_line(options)}
    for name in options.scenarios:
        stack = Stack(prefix=f"switchyard-fleet-{name}-", error=BenchError)
        try:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            if name == "throughput":
                result[name] = scenarios.throughput(stack, options, options.profile)
            elif name == "order":
                small = argparse.Namespace(**{**vars(options), "agents": 5, "slots": 2, "tasks": 3000, "prefill": 0})
                result[name] = scenarios.throughput(stack, small)
            else:
                result[name] = getattr(scenarios, name)(stack, options)
        except BenchError:
            stack.keep_logs = True
            raise
        finally:
            stack.stop()
    return result


def write_docs(options: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    latest = runs[-1]
    facts = latest["machine"]
    parts = [f"""## Fleet simulator: the scheduler's own capacity

Command: `{latest.get('command', 'make bench-fleet')}`{" (= `make bench-fleet`)" if latest.get('command', '').endswith("bench_fleet.py") else ""}; the "before" column comes from
[`bench/_fleet_baseline.json`](../bench/_fleet_baseline.json), measured the same way on that commit.
Measured {latest['when']} on {facts.get('nproc')} CPUs ({facts.get('cpu', '?')}), Python {facts.get('python')},
redis-server {facts.get('redis', '?')}; the machine is shared and noisy. Columns: {"; ".join(f"{r['label']} = {r['code']}, measured {r['when']}" for r in runs)}.

One `switchyard-scheduler` process on a private `redis-server` (no persistence), configured with one
queue and aging off, so every simulated worker can run every task and the effective priority is the
base priority. No Celery runs: the simulated fleet ([`bench/_fleet_sim.py`](../bench/_fleet_sim.py))
opens a real `AgentGateway.Connect` stream per agent (one channel each), heartbeats, pops each
worker's real Celery queue from Redis, and claims and reports every attempt with the worker side's
own `StateStore.claim` / `emit_succeeded`. A separate client process submits tasks with priorities
drawn uniformly from 1-10 ([`bench/_fleet_submit.py`](../bench/_fleet_submit.py)). Throughput: the
first tasks wait in the paused queue, then the queue is resumed while the rest are submitted; the
rate runs from the resume to the last success the scheduler recorded (`finished_at`). CPU is read
from `/proc/<pid>/stat` of each process; the simulator shares the 2 cores with the scheduler and Redis.

The priority check ([`bench/_fleet_check.py`](../bench/_fleet_check.py)) counts a hand-out as an
inversion when a task of higher priority was certainly pending and was left for a later round:
acknowledged to the submitter before the hand-out's round read its clock (`dispatched_at`), or
accepted in the same `SubmitBatch` call (atomic, so pending from the same moment) and handed out later.
Other pending tasks are not counted, so the count errs low, never high."""]
    parts.append("Issue 8, items 3 and 4, against the last column:\n\n"
                 + "\n".join(f"- {line}" for line in verdicts(latest)))
    for name in SCENARIOS:
        if any(name in run for run in runs):
            parts.append(f"### {TITLES[name]}\n\n{table(name, runs, markdown_table)}")
    update_section("bench_fleet", "\n\n".join(parts))


def command_line(options: argparse.Namespace) -> str:
    """How this run was started, without the flags that only name files or columns."""
    skip = ("--json-out", "--compare", "--label", "--no-docs", "--no-baseline", "--render")
    flags, given = [], list(options.given_flags)
    while given:
        flag = given.pop(0)
        if flag.startswith(skip):
            if "=" not in flag and given and not given[0].startswith("--") and flag not in ("--no-docs", "--no-baseline"):
                given.pop(0)
            continue
        flags.append(flag)
    return " ".join([python_command("bench/bench_fleet.py"), *flags])


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        type=lambda text: [s for s in text.split(",") if s])
    parser.add_argument("--agents", type=int, default=200, help="simulated agents (throughput)")
    parser.add_argument("--slots", type=int, default=4, help="slots per agent (throughput, backlog)")
    parser.add_argument("--tasks", type=int, default=20000, help="tasks submitted during the run (throughput)")
    parser.add_argument("--prefill", type=int, default=10000, help="tasks waiting when the run starts (throughput)")
    parser.add_argument("--batch", type=int, default=100, help="tasks per SubmitBatch")
    parser.add_argument("--in-flight", type=int, default=4, help="SubmitBatch calls in flight")
    parser.add_argument("--consumers", type=int, default=4, help="queue-consumer threads per fleet process")
    parser.add_argument("--fleet-processes", type=int, default=2,
                        help="processes the simulated agents are split over (the storm always uses one)")
    parser.add_argument("--storm-agents", type=int, default=1000)
    parser.add_argument("--storm-seconds", type=float, default=20.0, help="heartbeat window measured")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="the large pending level")
    parser.add_argument("--backlog-agents", type=int, default=100)
    parser.add_argument("--window", type=int, default=10000, help="tasks timed at each pending level")
    parser.add_argument("--label", default="now", help="this run's column name")
    parser.add_argument("--json-out", type=Path, help="write this run's figures here")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help=f"an earlier --json-out to show beside (default: {BASELINE.relative_to(ROOT)})")
    parser.add_argument("--no-baseline", action="store_true", help="do not show the stored baseline")
    parser.add_argument("--render", type=Path, help="measure nothing: show (and write to the docs) this --json-out")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the scheduler during throughput")
    parser.add_argument("--profile-seconds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small sizes; no docs")
    parser.add_argument("--no-docs", action="store_true")
    options = parser.parse_args(argv)
    options.given_flags = list(argv if argv is not None else sys.argv[1:])
    if not options.compare and not options.no_baseline and BASELINE.exists():
        options.compare = [BASELINE]
    unknown = set(options.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if options.quick:
        options.tasks, options.prefill, options.storm_agents, options.storm_seconds = 3000, 2000, 300, 5.0
        options.backlog, options.window, options.agents = 20_000, 2000, 50
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)

    def body() -> int:
        result = json.loads(options.render.read_text(encoding="utf-8")) if options.render else measure(options)
        if options.json_out:
            options.json_out.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
        runs = [json.loads(path.read_text(encoding="utf-8")) for path in options.compare] + [result]
        for name in SCENARIOS:
            if name in result:
                print(f"\n{TITLES[name]}\n{table(name, runs, text_table)}")
        print("\n" + "\n".join(verdicts(result)))
        if options.profile:
            print(f"\nscheduler profile (py-spy, {options.profile}):\n{profile_summary(options.profile)}")
        if not (options.quick or options.no_docs or options.profile):
            write_docs(options, runs)
            print("\ndocs/benchmarks.md: bench_fleet section updated")
        return 0

    return Stack(error=BenchError).run(body, (BenchError,))


if __name__ == "__main__":
    sys.exit(main())
