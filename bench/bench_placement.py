"""Placement benchmark: how long one placement round of the pure core takes.

    .venv/bin/python bench/bench_placement.py [--workers 10,100,1000] [--pending 100000]
        [--rounds 30] [--case-budget 20] [--quick] [--no-docs]

Times `scheduler.core.placement.plan(...)` -- what the scheduler's dispatch loop runs on every
kick -- over random fleets (mixed cpu / gpu / hybrid workers, random slots, GPUs, GPU memory and
labels) and a backlog of pending tasks (a mix of classes, priorities, GPU-memory requests and
label constraints, pre-sorted by `order_key` as the engine's pending index yields them).
Inputs are rebuilt for every round outside the timed region (fresh seed per round); only the
`plan` call is timed. Cases per fleet size:

* few-free    every worker busy except ~10% that have one free slot (steady state: a few
              slots free up between rounds);
* all-free    every slot free (a fleet that just connected, or a burst after a drain);
* full        no free slot anywhere (the round must exit at once);
* blocked-head-5k / -20k  the 5,000 / 20,000 highest-priority tasks require a GPU while only CPU
              workers have free slots; behind them the usual mix. Shows the signature memo
              (one rejection scan per distinct task shape, not per task) and what happens when
              the unplaceable head is longer than `plan`'s `max_examined` (10,000).

Side by side too, the views a round is planned on (`--views-rounds`, 0 to skip): the engine
builds one `WorkerView` per worker from its `scheduler.fleet.Worker` before every round
(`Fleet.views`). Timed over the few-free fleet of each size: the first call, and calls after
~10% of the workers had an attempt end and another start since the previous one (the steady
state between rounds), and after none changed.

Rounds per case stop at --rounds or when the case has used --case-budget seconds (at least 3
rounds, unless one round alone took longer than the budget: then 1).

Side by side, on the same inputs and in the same run, each case also times the worker-by-worker
scan `plan` used before the shape index (`scheduler.core.placement.reference.plan_reference`
with the default `max_scored_workers=64`; --scan-rounds rounds at most, 0 to skip), and the
table quotes the figures the script measured at commit BEFORE_COMMIT, before the shape index.
Rewrites the `bench_placement` section of docs/benchmarks.md (not with --quick or --no-docs).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._docs import (  # noqa: E402
    code_version,
    machine,
    markdown_table,
    now_utc,
    percentile,
    text_table,
    update_section,
)
from scheduler.core.model import (  # noqa: E402
    GpuNeed,
    GpuView,
    PendingTask,
    Plan,
    TaskClass,
    WorkerType,
    WorkerView,
)
from scheduler.core.placement import plan  # noqa: E402
from scheduler.core.placement.reference import plan_reference  # noqa: E402
from scheduler.fleet import Fleet, Gpu, InFlight, Worker  # noqa: E402

ZONES = ("eu", "us", "ap")
GPU_MEMORY_MB = (16384, 24576, 40960, 81920)
QUEUE_OF = {TaskClass.GPU_INTENSIVE: "gpu_priority", TaskClass.MIXED: "gpu_fallback",
            TaskClass.CPU: "cpu_standard", TaskClass.IO: "cpu_standard"}
NEED_OF = {TaskClass.GPU_INTENSIVE: GpuNeed.REQUIRED, TaskClass.MIXED: GpuNeed.PREFERRED,
           TaskClass.CPU: GpuNeed.NONE, TaskClass.IO: GpuNeed.NONE}
CLASS_MIX = ((TaskClass.CPU, 45), (TaskClass.GPU_INTENSIVE, 30), (TaskClass.MIXED, 15), (TaskClass.IO, 10))
PRIORITY_MIX = ((10, 2), (8, 15), (5, 55), (3, 18), (1, 10))

BEFORE_COMMIT = "6a3e61c"
BEFORE = {  # (case, workers) -> (p50 ms, assignments), from this script's defaults at BEFORE_COMMIT
    ("few-free", 10): (0.212, 1), ("all-free", 10): (3.1, 43), ("full", 10): (0.080, 0),
    ("blocked-head-5k", 10): (6.9, 13), ("blocked-head-20k", 10): (22.6, 13),
    ("few-free", 100): (1.2, 9), ("all-free", 100): (156, 439), ("full", 100): (0.165, 0),
    ("blocked-head-5k", 100): (46.5, 136), ("blocked-head-20k", 100): (62.8, 137),
    ("few-free", 1000): (32.9, 102), ("all-free", 1000): (331, 512), ("full", 1000): (0.615, 0),
    ("blocked-head-5k", 1000): (320, 512), ("blocked-head-20k", 1000): (335, 512),
}
"""What the script measured before the shape index (worker-by-worker scan), on the same 2-CPU machine."""


# --- inputs -------------------------------------------------------------------------------


def make_fleet(rng: random.Random, size: int, occupancy: str) -> list[WorkerView]:
    """A random fleet. occupancy: few-free | all-free | full | cpu-free-only."""
    kinds = rng.choices((WorkerType.CPU, WorkerType.GPU, WorkerType.HYBRID), weights=(50, 30, 20), k=size)
    fleet = []
    for i, kind in enumerate(kinds):
        slots = rng.randint(1, 8)
        gpus: tuple[GpuView, ...] = ()
        if kind is not WorkerType.CPU:
            total = rng.choice(GPU_MEMORY_MB)
            gpus = tuple(GpuView(g, total, rng.randint(total // 4, total), utilization_percent=rng.randint(0, 100))
                         for g in range(rng.choice((1, 1, 2, 4, 8))))
        labels = {"zone": rng.choice(ZONES)}
        if rng.random() < 0.2:
            labels["model"] = "whisper-large"
        if occupancy == "all-free":
            in_flight = 0
        elif occupancy == "full":
            in_flight = slots
        elif occupancy == "few-free":
            in_flight = slots - 1 if rng.random() < 0.1 else slots
        elif occupancy == "cpu-free-only":
            in_flight = rng.randint(0, slots - 1) if kind is WorkerType.CPU else slots
        else:
            raise ValueError(occupancy)
        fleet.append(WorkerView(f"w{i:05d}", kind, slots, in_flight, accepting=rng.random() > 0.02,
                                gpus=gpus, labels=labels))
    return fleet


def make_task(rng: random.Random, seq: int, task_class: TaskClass | None = None,
              priority: int | None = None) -> PendingTask:
    cls = task_class or rng.choices([c for c, _ in CLASS_MIX], weights=[w for _, w in CLASS_MIX])[0]
    prio = priority or rng.choices([p for p, _ in PRIORITY_MIX], weights=[w for _, w in PRIORITY_MIX])[0]
    gpu_memory = 0
    if cls is TaskClass.GPU_INTENSIVE and rng.random() < 0.4:
        gpu_memory = rng.choice((4096, 8192, 16384, 24576))
    labels: tuple[tuple[str, str], ...] = ()
    if rng.random() < 0.1:
        labels = (("zone", rng.choice(ZONES)),)
    return PendingTask(f"t{seq:07d}", QUEUE_OF[cls], prio, seq, cls, NEED_OF[cls], gpu_memory, labels,
                       submitted_at=1_700_000_000.0 + seq * 0.001)


def make_backlog(rng: random.Random, size: int, blocked_head: int = 0) -> list[PendingTask]:
    """`size` pending tasks in order; the first `blocked_head` are GPU-required at priority 10."""
    tasks = [make_task(rng, seq, TaskClass.GPU_INTENSIVE, 10) for seq in range(blocked_head)]
    tasks += [make_task(rng, seq, priority=rng.choice((1, 3, 5, 8)))
              for seq in range(blocked_head, size)] if blocked_head else \
        [make_task(rng, seq) for seq in range(size)]
    tasks.sort(key=lambda t: t.order_key)
    return tasks


@dataclass(frozen=True)
class Case:
    name: str
    occupancy: str
    blocked_head: int = 0


CASES = (
    Case("few-free", "few-free"),
    Case("all-free", "all-free"),
    Case("full", "full"),
    Case("blocked-head-5k", "cpu-free-only", 5_000),
    Case("blocked-head-20k", "cpu-free-only", 20_000),
)


@dataclass
class Outcome:
    case: Case
    workers: int
    pending: int
    times: list[float]
    assignments: list[int]
    waiting: list[int]
    free_slots: list[int]
    scan_times: list[float]
    """The same rounds' inputs through the worker-by-worker scan (the first --scan-rounds)."""
    scan_assignments: list[int]


def timed(planner: Callable[..., Plan], backlog: list[PendingTask], fleet: list[WorkerView]) -> tuple[float, Plan]:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = planner(backlog, fleet)
        return time.perf_counter() - t0, result
    finally:
        gc.enable()


def measure(case: Case, workers: int, pending: int, rounds: int, budget: float, seed: int, scan_rounds: int,
            progress: Callable[[str], None]) -> Outcome:
    outcome = Outcome(case, workers, pending, [], [], [], [], [], [])
    spent = 0.0
    round_no = 0
    # At least 3 rounds, unless a single round already took more than the whole budget.
    while round_no < rounds and (round_no < 3 or spent < budget) and not (round_no >= 1 and spent > budget):
        rng = random.Random(seed * 1_000_003 + round_no)
        started = time.perf_counter()
        fleet = make_fleet(rng, workers, case.occupancy)
        backlog = make_backlog(rng, pending, case.blocked_head)
        elapsed, result = timed(plan, backlog, fleet)
        outcome.times.append(elapsed)
        outcome.assignments.append(len(result.assignments))
        outcome.waiting.append(len(result.waiting))
        outcome.free_slots.append(sum(max(0, w.slots - w.in_flight) for w in fleet if w.accepting))
        spent += time.perf_counter() - started
        if round_no < scan_rounds:
            elapsed, result = timed(plan_reference, backlog, fleet)
            outcome.scan_times.append(elapsed)
            outcome.scan_assignments.append(len(result.assignments))
        round_no += 1
    scan = f"; scan p50 {ms(percentile(outcome.scan_times, 50))} ms" if outcome.scan_times else ""
    progress(f"  {case.name:<17} {workers:>5} workers: p50 {ms(percentile(outcome.times, 50))} ms "
             f"over {len(outcome.times)} rounds, {outcome.assignments[0]} assignments{scan}")
    return outcome


@dataclass
class ViewsOutcome:
    workers: int
    first: list[float]
    changed: list[float]
    """Calls after ~10% of the workers had an attempt end and another start."""
    unchanged: list[float]
    changed_workers: int


def engine_fleet(views: Sequence[WorkerView]) -> Fleet:
    """The scheduler's own records of these workers (what `Fleet.views` reads)."""
    fleet = Fleet()
    for v in views:
        worker = Worker(v.worker_id, v.worker_type, v.slots, labels=dict(v.labels), connected=True,
                        draining=not v.accepting,
                        gpus=[Gpu(g.index, "gpu", f"{v.worker_id}-{g.index}", g.memory_total_mb, g.memory_free_mb,
                                  g.utilization_percent) for g in v.gpus])
        for n in range(v.in_flight):
            task_id = f"{v.worker_id}-{n}"
            worker.in_flight[task_id] = InFlight(task_id, 1, "cpu_standard")
        fleet.add(worker)
    return fleet


def timed_views(fleet: Fleet) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fleet.views(1_700_000_000.0)
        return time.perf_counter() - t0
    finally:
        gc.enable()


def measure_views(workers: int, rounds: int, seed: int, progress: Callable[[str], None]) -> ViewsOutcome:
    outcome = ViewsOutcome(workers, [], [], [], 0)
    for round_no in range(rounds):
        rng = random.Random(seed * 1_000_003 + round_no)
        fleet = engine_fleet(make_fleet(rng, workers, "few-free"))
        outcome.first.append(timed_views(fleet))
        outcome.unchanged.append(timed_views(fleet))
        busy = [w for w in fleet if w.in_flight]
        moved = rng.sample(busy, max(1, len(busy) // 10))
        for n, worker in enumerate(moved):  # one attempt ends, another starts
            worker.in_flight.pop(next(iter(worker.in_flight)))
            worker.in_flight[f"next-{round_no}-{n}"] = InFlight(f"next-{round_no}-{n}", 1, "cpu_standard")
        outcome.changed_workers = len(moved)
        outcome.changed.append(timed_views(fleet))
    progress(f"  views            {workers:>5} workers: first {ms(percentile(outcome.first, 50))} ms, "
             f"{outcome.changed_workers} changed {ms(percentile(outcome.changed, 50))} ms, "
             f"none changed {ms(percentile(outcome.unchanged, 50))} ms (p50 of {rounds})")
    return outcome


VIEWS_HEADERS = ["workers", "calls", "first call p50 ms", "workers changed", "after those changes p50 ms",
                 "none changed p50 ms"]


def views_rows(outcomes: Sequence[ViewsOutcome]) -> list[list[str]]:
    return [[str(o.workers), str(len(o.first)), ms(percentile(o.first, 50)), str(o.changed_workers),
             ms(percentile(o.changed, 50)), ms(percentile(o.unchanged, 50))] for o in outcomes]


# --- report -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def median(values: Sequence[int]) -> int:
    return sorted(values)[len(values) // 2]


def per_assignment(p50: float, assigned: int) -> str:
    return f"{p50 / assigned * 1e6:.0f}" if assigned else "-"


def rows(outcomes: Sequence[Outcome], with_before: bool) -> list[list[str]]:
    """Table rows; the BEFORE figures only when the run used the inputs they were measured on."""
    out = []
    for o in outcomes:
        assigned, p50 = median(o.assignments), percentile(o.times, 50)
        scan = ["-", "-"]
        if o.scan_times:
            scan_p50 = percentile(o.scan_times, 50)
            scan = [ms(scan_p50), per_assignment(scan_p50, median(o.scan_assignments))]
        before = BEFORE.get((o.case.name, o.workers)) if with_before else None
        out.append([
            o.case.name, str(o.workers), str(median(o.free_slots)),
            str(len(o.times)), ms(p50), ms(percentile(o.times, 99)),
            str(assigned), str(median(o.waiting)), per_assignment(p50, assigned), *scan,
            f"{before[0]:g}" if before else "-", per_assignment(before[0] / 1000, before[1]) if before else "-",
        ])
    return out


HEADERS = ["case", "workers", "free slots", "rounds", "p50 ms", "p99 ms", "assignments",
           "waiting (examined, unplaced)", "µs per assignment", "scan p50 ms", "scan µs per assignment",
           f"before p50 ms ({BEFORE_COMMIT})", f"before µs per assignment ({BEFORE_COMMIT})"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workers", default="10,100,1000", help="fleet sizes (default 10,100,1000)")
    parser.add_argument("--pending", type=int, default=100_000, help="pending tasks (default 100000)")
    parser.add_argument("--rounds", type=int, default=30, help="rounds per case at most (default 30)")
    parser.add_argument("--case-budget", type=float, default=15.0, metavar="S",
                        help="seconds per case (inputs included) after which rounds stop (default 15)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scan-rounds", type=int, default=5, metavar="N",
                        help="rounds per case also timed through the worker-by-worker scan (default 5; 0 = none)")
    parser.add_argument("--views-rounds", type=int, default=30, metavar="N",
                        help="fleets per size whose engine views are timed (default 30; 0 = none)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10,100 workers, 10000 pending, 3 rounds; "
                        "implies --no-docs")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    options = parser.parse_args(argv)
    if options.quick:
        options.workers, options.pending, options.rounds, options.no_docs = "10,100", 10_000, 3, True
        options.scan_rounds = min(options.scan_rounds, 1)
        options.views_rounds = min(options.views_rounds, 3)
    sizes = [int(x) for x in options.workers.split(",") if x.strip()]
    facts = machine()
    print(f"Switchyard placement benchmark  ({facts['nproc']} CPUs, Python {facts['python']}); "
          f"{options.pending} pending tasks")
    outcomes = []
    for size in sizes:
        for case in CASES:
            outcomes.append(measure(case, size, options.pending, options.rounds, options.case_budget,
                                    options.seed, options.scan_rounds, lambda line: print(line, flush=True)))
    views = [measure_views(size, options.views_rounds, options.seed, lambda line: print(line, flush=True))
             for size in sizes] if options.views_rounds else []
    table = rows(outcomes, with_before=(options.pending, options.seed) == (100_000, 42))
    print()
    print(text_table(HEADERS, table))
    if views:
        print()
        print(text_table(VIEWS_HEADERS, views_rows(views)))
    if options.no_docs:
        print("\n(--no-docs / --quick: docs/benchmarks.md left unchanged)")
        return 0
    write_docs(options, facts, outcomes, table, views)
    print("\nwrote the bench_placement section of docs/benchmarks.md")
    return 0


def write_docs(options: argparse.Namespace, facts: dict[str, str], outcomes: Sequence[Outcome],
               table: list[list[str]], views: Sequence[ViewsOutcome]) -> None:
    defaults = {"workers": "10,100,1000", "pending": 100_000, "rounds": 30, "case_budget": 15.0, "seed": 42,
                "scan_rounds": 5, "views_rounds": 30}
    flags = [f"--{k.replace('_', '-')} {getattr(options, k)}" for k, v in defaults.items() if getattr(options, k) != v]
    command = " ".join([".venv/bin/python bench/bench_placement.py", *flags])

    def find(name: str, workers: int) -> Outcome | None:
        return next((o for o in outcomes if o.case.name == name and o.workers == workers), None)

    biggest = max(o.workers for o in outcomes)
    notes = []
    full = find("full", biggest)
    if full:
        notes.append(f"* **Full fleet**: the round exits before looking at the backlog: "
                     f"{ms(percentile(full.times, 50))} ms p50 at {biggest} workers, whatever the backlog.")
    few, allfree = find("few-free", biggest), find("all-free", biggest)
    if few and allfree:
        assigned = median(allfree.assignments)
        per = percentile(allfree.times, 50) / assigned * 1e6 if assigned else float("nan")
        scan = ""
        if allfree.scan_times and median(allfree.scan_assignments):
            scan_per = percentile(allfree.scan_times, 50) / median(allfree.scan_assignments) * 1e6
            scan = (f"; the worker-by-worker scan it replaces took {ms(percentile(allfree.scan_times, 50))} ms "
                    f"({scan_per:.0f} µs per assignment) for the same rounds, {scan_per / per:.0f}x as long")
        before = BEFORE.get(("all-free", biggest))
        before_text = (f" ({before[0]:g} ms at commit {BEFORE_COMMIT}, before the index)" if before else "")
        notes.append(
            f"* **Free slots**: `plan` finds each task's worker through the shape index "
            f"(`scheduler/core/placement/shapes.py`): a task's kind (its memo key and preferred labels) is "
            f"judged once per worker shape, and each shape keeps its workers in a heap by their own part of "
            f"the score, so an assignment costs a look at a few heap tops plus the booking, not a pass over "
            f"the fleet. At {biggest} workers with every slot free, a round of {assigned} assignments (the "
            f"`max_assignments` budget) took {ms(percentile(allfree.times, 50))} ms p50, **{per:.0f} µs per "
            f"assignment**{scan}{before_text}. With a few slots free (the steady state) it took "
            f"{ms(percentile(few.times, 50))} ms for {median(few.assignments)} assignments; there the fixed "
            f"cost of a round (indexing the workers with a free slot) and the wait sentences of kinds no free "
            f"worker takes weigh more than the assignments.")
    b5, b20 = find("blocked-head-5k", biggest), find("blocked-head-20k", biggest)
    if b5:
        notes.append(
            f"* **Unplaceable head, 5,000 GPU-required tasks, only CPU workers free**: the memo makes the "
            f"5,000 blocked tasks one rejection per distinct task kind, and the round still places "
            f"{median(b5.assignments)} CPU tasks from behind the head, in {ms(percentile(b5.times, 50))} ms "
            f"at {biggest} workers. Most of that is not the assignments but the wait sentence of each "
            f"blocked kind (a few dozen here): still a pass over every worker per kind, though each kind "
            f"of worker (shape, free slot, room for the memory) is judged once instead of every worker.")
    if b20:
        placed = median(b20.assignments)
        notes.append(
            f"* **Unplaceable head longer than `max_examined` (20,000 tasks, limit 10,000)**: tasks skipped "
            f"through the memo do not count against the limit, so the round walks past the 20,000 blocked "
            f"tasks and places {placed} task(s) from behind them ({ms(percentile(b20.times, 50))} ms); the "
            f"extra cost over the 5k case is the memo lookups of the longer head.")
    notes.append(
        "* **Exact**: the shape index makes the choice scoring every eligible worker makes (highest score, "
        "ties to the smaller worker id, same GPU device, same served queue, same wait sentences): "
        "`tests/unit/test_core_placement_exact.py` checks `plan` against `plan_reference` with "
        "`max_scored_workers=0` on random fleets, backlogs and contexts (queue limits, fallback chains, "
        "rate limits, prefetch, quarantine, both strategies, odd weights). Scores are summed as fixed-point "
        "integers (1e-9) so the index can add a kind's part to a worker's part exactly. `max_scored_workers` "
        "no longer bounds `plan` (it never needs to stop early); only the reference scan still honours it, "
        "and the scan columns above run it with the default 64, as `plan` did before.")
    body = f"""## Placement: one round of the pure core

Command: `{command}`.
Code: {code_version()}. Measured {now_utc()} on {facts['nproc']} CPUs ({facts.get('cpu', '?')}), Python {facts['python']}; noisy
shared machine, so read p50s.

What is timed: one call of `scheduler.core.placement.plan(pending_in_order, workers)` with the
default weights and `max_examined=10,000` (and, in the "scan" columns, the same inputs through
`plan_reference`, the worker-by-worker scan `plan` used before, for the first {options.scan_rounds}
rounds of each case; "before" quotes this script at commit {BEFORE_COMMIT}, before the shape index), over {options.pending:,} pending tasks (classes cpu 45% /
gpu_intensive 30% / mixed 15% / io 10%; priorities 10/8/5/3/1 at 2/15/55/18/10%; 40% of GPU tasks
ask for 4-24 GiB of GPU memory; 10% carry a zone label) pre-sorted by `order_key`, and a random
fleet (cpu 50% / gpu 30% / hybrid 20%; 1-8 slots; 1-8 GPUs of 16-80 GiB with random free memory;
zone labels; 2% not accepting). Fleet and backlog are rebuilt for every round outside the timed
region with a fresh seed; rounds per case: up to {options.rounds}, or fewer once the case has used
{options.case_budget:g} s, and a single round when one round alone takes longer (so p99 over
few rounds is close to the maximum, and over 1 round it is that round).

{markdown_table(HEADERS, table)}

"free slots" is the median over rounds; "waiting" counts tasks the round examined and could not
place (the cost of the memo shows there: the blocked head is all "waiting").

{chr(10).join(notes)}
{views_section(views, few, allfree)}"""
    update_section("bench_placement", body)


def views_section(views: Sequence[ViewsOutcome], few: Outcome | None, allfree: Outcome | None) -> str:
    """The engine's views of the fleet, timed before the rounds above are planned on them."""
    if not views:
        return ""
    biggest = max(views, key=lambda o: o.workers)
    costs = []
    if few is not None and few.workers == biggest.workers and median(few.assignments):
        assigned, total = median(few.assignments), percentile(few.times, 50) + percentile(biggest.changed, 50)
        costs.append(f"a steady-state round (the few-free case, {assigned} assignments, the views of the "
                     f"workers changed since the last round built again) costs the engine about {ms(total)} ms, "
                     f"{total / assigned * 1e6:.0f} µs per assignment")
    if allfree is not None and allfree.workers == biggest.workers and median(allfree.assignments):
        assigned, total = median(allfree.assignments), percentile(allfree.times, 50) + percentile(biggest.first, 50)
        costs.append(f"a round with every slot free (every view built, as for a fleet that just "
                     f"connected) about {ms(total)} ms, {total / assigned * 1e6:.0f} µs per assignment")
    round_cost = f"\nWith its views, at {biggest.workers} workers {'; '.join(costs)}.\n" if costs else ""
    return f"""
### The views a round is planned on

`plan` takes one `WorkerView` per worker; the engine builds them from its records of the workers
(`scheduler.fleet.Fleet.views`) before every round. A worker's view is kept and handed out again
while nothing it shows has changed (its ledger of attempts counts its changes; slots, acceptance,
GPUs, labels, registered tasks, failures in the window and quarantine are compared), so a round
builds views only for the workers that changed since the last one; before 5a0418b every round
built every view, the first call's cost. Timed over the few-free fleets above (`--views-rounds`
fleets per size): the first call builds every view; then ~10% of the busy workers have an attempt
end and another start, as between two rounds of a busy fleet.

{markdown_table(VIEWS_HEADERS, views_rows(views))}
{round_cost}"""


if __name__ == "__main__":
    sys.exit(main())
