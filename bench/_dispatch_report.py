"""Tables and headline figures of a dispatch benchmark run (a saved run works the same).

A run is the JSON-able dict ``bench/bench_dispatch.py`` builds (and saves with ``--json``):
``latency`` (path -> [[seconds, {stage: seconds}]]), ``throughput`` ("path/style" -> one dict per
round, with ``per_task`` figures), ``rpc``, ``intake``, ``background``, plus ``label``, ``code``,
``options``, ``labels`` and ``roots``. ``headline`` reduces a run to the figures issue 8 accepts
on; ``tables`` builds every table once, for the terminal and for docs/benchmarks.md alike.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any

from bench._docs import mean, percentile, text_table

Table = tuple[list[str], list[list[str]]]

DEFAULTS = {"latency_samples": 200, "throughput_tasks": 2000, "threads": 4, "batch_size": 100,
            "rounds": 3, "prefetch_variant": 2, "rpc_calls": 4000, "in_flight": 32,
            "intake_tasks": 200_000, "intake_batch": 10_000}
"""The benchmark's settings and their defaults (a run saves its values under ``options``)."""


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def runs_median(res: dict[str, Any], run: str, get: Callable[[dict[str, Any]], Any]) -> float | None:
    """Median over the rounds of one throughput run; None if absent or not measured."""
    values = [get(r) for r in res.get("throughput", {}).get(run, [])]
    values = [v for v in values if v is not None]
    return median(values) if values else None


def _per_task(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r["per_task"].get(name)


def _field(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r.get(name)


def _latencies(res: dict[str, Any], key: str) -> list[float]:
    return [sample[0] for sample in res["latency"].get(key, [])]


# --- the headline figures --------------------------------------------------------------------


HEADLINE: list[tuple[str, str, str, str]] = [
    # key, figure, how it is shown, target (issue 8)
    ("lat_p50", "idle submit->start p50, ms", "ratio", "<= 1.5x raw Celery"),
    ("lat_p99", "idle submit->start p99, ms", "plain", "<= 50 ms"),
    ("tp_batch", "fleet throughput, tasks/s (SubmitBatch x B vs send_task loop)", "ratio", ">= 0.9x raw Celery"),
    ("tp_batch_pf", "fleet throughput with dispatch_prefetch=P, tasks/s (SubmitBatch x B vs send_task loop)",
     "ratio", "(the same target, not the default)"),
    ("tp_threads", "fleet throughput, tasks/s (SubmitTask vs send_task, T threads)", "ratio", ""),
    ("rpc", "SubmitTask calls/s, F in flight, worker live (vs bare gRPC echo)", "ratio", ">= 0.7x echo"),
    ("rpc_paused", "SubmitTask calls/s, F in flight, queue paused (vs echo)", "ratio", ""),
    ("rpc_busy", "SubmitTask calls/s, F in flight, worker live (vs echo with a raw Celery worker busy)",
     "ratio", ""),
    ("sched_cpu", "scheduler CPU per task, ms (whole lifecycle, SubmitBatch runs)", "plain", "<= 0.5 ms"),
    ("sched_cpu_threads", "scheduler CPU per task, ms (SubmitTask runs)", "plain", ""),
    ("worker_cpu", "agent + Celery worker CPU per task, ms (vs raw Celery worker)", "diff", "<= raw + 0.5 ms"),
    ("redis_cpu", "redis-server CPU per task, ms (vs raw Celery run)", "ratio", ""),
    ("redis_cmds", "Redis commands per task (scripts' inner commands included)", "ratio", "<= 25"),
    ("round_trips", "round trips per task from the scheduler (vs raw producer)", "plain", "<= 3"),
    ("redis_reads", "Redis read events per task, all clients (~ round trips)", "ratio", ""),
    ("batch_rate", "SubmitBatch x K accepted tasks/s, no workers (median call)", "plain", ">= 20,000/s"),
    ("rss_per_task", "scheduler RSS growth per pending task, bytes", "plain", "<= ~300"),
]


def headline(res: dict[str, Any]) -> dict[str, tuple[float | None, float | None]]:
    """Figure key -> (Switchyard's value, the baseline's value or None)."""
    sched = _per_task(f"cpu_ms:{res['roots']['sy']['scheduler']}")
    out: dict[str, tuple[float | None, float | None]] = {
        "lat_p50": (median(_latencies(res, "sy")) * 1000, median(_latencies(res, "raw")) * 1000),
        "lat_p99": (percentile(_latencies(res, "sy"), 99) * 1000, percentile(_latencies(res, "raw"), 99) * 1000),
        "tp_batch": (runs_median(res, "sy/batch", lambda r: r["rate"]),
                     runs_median(res, "raw/loop", lambda r: r["rate"])),
        "tp_batch_pf": (runs_median(res, "pf/batch", lambda r: r["rate"]),
                        runs_median(res, "raw/loop", lambda r: r["rate"])),
        "tp_threads": (runs_median(res, "sy/threads", lambda r: r["rate"]),
                       runs_median(res, "raw/threads", lambda r: r["rate"])),
        "sched_cpu": (runs_median(res, "sy/batch", sched), None),
        "sched_cpu_threads": (runs_median(res, "sy/threads", sched), None),
        "worker_cpu": (runs_median(res, "sy/batch", _per_task(f"cpu_ms:{res['roots']['sy']['worker']}")),
                       runs_median(res, "raw/loop", _per_task("cpu_ms:raw celery"))),
        "redis_cpu": (runs_median(res, "sy/batch", _per_task("cpu_ms:redis")),
                      runs_median(res, "raw/loop", _per_task("cpu_ms:redis"))),
        "redis_cmds": (runs_median(res, "sy/batch", _per_task("redis_commands")),
                       runs_median(res, "raw/loop", _per_task("redis_commands"))),
        "round_trips": (runs_median(res, "sy/batch", _per_task("scheduler_round_trips")),
                        runs_median(res, "raw/loop", _per_task("producer_round_trips"))),
        "redis_reads": (runs_median(res, "sy/batch", _per_task("redis_reads")),
                        runs_median(res, "raw/loop", _per_task("redis_reads"))),
    }
    rpc = res.get("rpc") or {}
    rates = rpc.get("rates", {})
    echo = median(rates["echo"]) if rates.get("echo") else None
    for key, run in (("rpc", "sy"), ("rpc_paused", "sy-paused")):
        out[key] = (median(rates[run]) if rates.get(run) else None, echo)
    # Runs from before the echo-busy flood existed have no such figure at all.
    out["rpc_busy"] = (out["rpc"][0], median(rates["echo-busy"])) if rates.get("echo-busy") else (None, None)
    intake = res.get("intake")
    out["batch_rate"] = (median(intake["rates"]) if intake else None, None)
    out["rss_per_task"] = (rss_per_pending(intake) if intake else None, None)
    return out


def rss_per_pending(intake: dict[str, Any]) -> float | None:
    """RSS growth per pending task, from the reading after the first call (buffers and caches
    warm) to the final one; from the empty scheduler when there was a single call."""
    rss = intake["rss"]
    empty, (p1, first), (pn, final) = int(rss[0][1]), rss[1], rss[-1]
    if pn > p1:
        return float(final - first) / float(pn - p1)
    return float(final - empty) / float(pn) if pn else None


def _shown(value: float | None, other: float | None, how: str) -> tuple[str, str]:
    if value is None:
        return "n/a", "-"
    size = abs(value) if value is not None else 0.0
    digits = 2 if how == "diff" or size < 10 else (1 if size < 100 else 0)
    if how == "ratio":
        r = ratio(value, other)
        return fmt(value, digits), f"{fmt(other, digits)} ({fmt(r, 2)}x)" if other is not None else "-"
    if how == "diff" and value is not None and other is not None:
        return fmt(value, digits), f"{fmt(other, digits)} ({value - other:+.2f})"
    return fmt(value, digits), fmt(other, digits) if other is not None else "-"


def _figure_name(res: dict[str, Any], figure: str) -> str:
    opts = res.get("options", {})
    return (figure.replace("x B", f"x{opts.get('batch_size', '?')}")
            .replace("T threads", f"{opts.get('threads', '?')} threads")
            .replace("dispatch_prefetch=P", f"dispatch_prefetch={opts.get('prefetch_variant') or 'P'}")
            .replace("F in flight", f"{opts.get('in_flight', '?')} in flight")
            .replace("x K", f"x{opts.get('intake_batch', '?'):,}" if isinstance(opts.get("intake_batch"), int)
                     else "x K"))


def run_name(res: dict[str, Any]) -> str:
    """A run's label and the code it measured (once, when they are the same)."""
    return res["label"] if res["label"] == res["code"] else f"{res['label']} ({res['code']})"


def headline_table(res: dict[str, Any]) -> Table:
    figures = headline(res)
    rows = []
    for key, figure, how, target in HEADLINE:
        value, other = figures[key]
        shown, base = _shown(value, other, how)
        rows.append([_figure_name(res, figure), shown, base, target or "-"])
    return ["figure", "Switchyard", "raw Celery / echo (ratio)", "target (issue 8)"], rows


def before_after_table(before: dict[str, Any], after: dict[str, Any]) -> Table:
    """The headline figures of two runs side by side, each column naming its label and commit."""
    one, two = headline(before), headline(after)
    rows = []
    for key, figure, how, target in HEADLINE:
        cells = []
        for figures in (one, two):
            value, other = figures[key]
            shown, base = _shown(value, other, how)
            cells.append(shown if base == "-" else f"{shown} vs {base}")
        rows.append([_figure_name(after, figure), *cells, target or "-"])
    heads = [f"before: {run_name(before)}", f"after: {run_name(after)}"]
    return ["figure", *heads, "target"], rows


# --- the detail tables -------------------------------------------------------------------------


def tables(res: dict[str, Any]) -> dict[str, Table]:
    labels, opts, tp = res["labels"], res["options"], res["throughput"]
    out: dict[str, Table] = {"headline": headline_table(res)}
    raw = _latencies(res, "raw")
    out["lat"] = (["path", "samples", "p50 ms", "p99 ms", "mean ms", "p50 / raw p50", "p99 / raw p99"],
                  [[labels[key], str(len(v)), ms(median(v)), ms(percentile(v, 99)), ms(mean(v)),
                    f"{median(v) / median(raw):.2f}x", f"{percentile(v, 99) / percentile(raw, 99):.2f}x"]
                   for key in res["latency"] for v in [_latencies(res, key)]])
    stage_names: list[str] = []
    for _latency, stages in res["latency"]["sy"]:
        stage_names += [name for name in stages if name not in stage_names]
    out["stages"] = (["Switchyard stage (task's own timestamps)", "p50 ms", "p99 ms"],
                     [[name, ms(median(v)), ms(percentile(v, 99))] for name in stage_names
                      for v in [[s[name] for _l, s in res["latency"]["sy"] if name in s]]])
    order = [run for style in ("loop", "batch", "threads") for run in tp if run.endswith("/" + style)]
    order = sorted(order, key=lambda run: (run.endswith("/threads"), run.split("/")[0] != "raw"))
    how = {"loop": "send_task loop, 1 thread", "batch": f"SubmitBatch x{opts['batch_size']}, 1 thread",
           "threads": f"one by one, {opts['threads']} threads"}
    base = {"loop": runs_median(res, "raw/loop", lambda r: r["rate"]),
            "threads": runs_median(res, "raw/threads", lambda r: r["rate"])}
    rows = []
    for run in order:
        key, style = run.split("/")
        rates = [r["rate"] for r in tp[run]]
        rows.append([labels[key], how[style], f"{median(rates):.0f}", f"{min(rates):.0f}-{max(rates):.0f}",
                     f"{median(rates) / (base['threads' if style == 'threads' else 'loop'] or math.nan):.2f}x",
                     f"{runs_median(res, run, lambda r: r['submit_rate']):.0f}",
                     ms(runs_median(res, run, lambda r: r["sojourn_p50"]) or math.nan)])
    out["tp"] = (["path", "submission", "tasks/s (median)", "min-max", "/ raw", "submit rate/s",
                  "send->start p50 ms"], rows)
    cpu_names = [k for k in tp["raw/loop"][0] if k.startswith("cpu:")]
    out["cpu"] = (["run", *[k[4:] for k in cpu_names]],
                  [[f"{labels[run.split('/')[0]]}, {run.split('/')[1]}",
                    *[f"{100 * (runs_median(res, run, _field(c)) or 0):.0f}%" for c in cpu_names]]
                   for run in order])
    out["per_task"] = _per_task_table(res, order)
    out["cmdstats"] = _cmdstats_table(res)
    out["rpc"] = _rpc_table(res)
    out["intake"] = _intake_table(res)
    return out


def _per_task_table(res: dict[str, Any], order: list[str]) -> Table:
    rows = []
    for run in order:
        key = run.split("/")[0]
        roots = res["roots"][key]

        def get(name: str, run: str = run) -> float | None:
            return runs_median(res, run, _per_task(name))

        sched = get(f"cpu_ms:{roots['scheduler']}") if "scheduler" in roots else None
        trips = get("scheduler_round_trips") if key != "raw" else get("producer_round_trips")
        rows.append([f"{res['labels'][key]}, {run.split('/')[1]}", fmt(sched, 2),
                     fmt(get(f"cpu_ms:{roots['worker']}"), 2), fmt(get("cpu_ms:redis"), 2),
                     fmt(get("redis_commands"), 1), fmt(get("redis_reads"), 1), fmt(trips, 2)])
    return (["run", "scheduler CPU ms", "worker CPU ms (agent+Celery / raw)", "redis CPU ms",
             "Redis commands", "Redis reads", "round trips (scheduler / raw producer)"], rows)


def _cmdstats_table(res: dict[str, Any], top: int = 14) -> Table:
    runs = [run for run in ("raw/loop", "sy/batch", "raw/threads", "sy/threads") if run in res["throughput"]]
    per_run = {run: _median_cmdstats(res["throughput"][run]) for run in runs}
    names = sorted({n for stats in per_run.values() for n in stats},
                   key=lambda n: (-max(stats.get(n, 0.0) for stats in per_run.values()), n))
    shown = names[:top]
    # "script|exists" -> "script exists": a bare "|" would split a markdown table cell.
    rows = [[name.replace("|", " "), *[f"{per_run[run].get(name, 0.0):.2f}" for run in runs]] for name in shown]
    rest = names[top:]
    if rest:
        rows.append([f"({len(rest)} others)", *[f"{sum(per_run[run].get(n, 0.0) for n in rest):.2f}" for run in runs]])
    rows.append(["total", *[f"{sum(per_run[run].values()):.2f}" for run in runs]])
    heads = [f"{res['labels'][run.split('/')[0]]}, {run.split('/')[1]}" for run in runs]
    return ["command (calls per task)", *heads], rows


def _median_cmdstats(rounds: list[dict[str, Any]]) -> dict[str, float]:
    names = {n for r in rounds for n in r["per_task"]["cmdstats"]}
    return {n: median([r["per_task"]["cmdstats"].get(n, 0.0) for r in rounds]) for n in names}


def _rpc_table(res: dict[str, Any]) -> Table:
    rpc = res.get("rpc") or {}
    rates = rpc.get("rates", {})
    echo = median(rates["echo"]) if rates.get("echo") else math.nan
    busy = median(rates["echo-busy"]) if rates.get("echo-busy") else math.nan
    names = {"echo": "bare gRPC echo (bench/bench_echo.py)", "sy": "Switchyard, worker live",
             "sy-paused": "Switchyard, queue paused (intake only)",
             "echo-busy": f"bare gRPC echo, raw Celery worker running {rpc.get('calls', 0)} queued tasks"}
    order = [key for key in ("echo", "echo-busy", "sy", "sy-paused") if rates.get(key)]
    order += [key for key, v in rates.items() if v and key not in order]
    rows = [[names.get(key, key), f"{median(rates[key]):.0f}", f"{min(rates[key]):.0f}-{max(rates[key]):.0f}",
             f"{median(rates[key]) / echo:.2f}x",
             "-" if math.isnan(busy) or key.startswith("echo") else f"{median(rates[key]) / busy:.2f}x"]
            for key in order]
    return ["server", "calls/s (median)", "min-max", "/ echo", "/ echo, worker busy"], rows


def _intake_table(res: dict[str, Any]) -> Table:
    intake = res.get("intake")
    if not intake:
        return ["SubmitBatch intake"], [["not measured"]]
    rates, rss = intake["rates"], intake["rss"]
    per = rss_per_pending(intake)
    row = [f"{intake['per_call']:,}", str(len(rates)), f"{median(rates):,.0f}", f"{min(rates):,.0f}-{max(rates):,.0f}",
           f"{rates[0]:,.0f} / {rates[-1]:,.0f}", f"{rss[0][1] / 2**20:.0f} / {rss[1][1] / 2**20:.0f} / "
           f"{rss[-1][1] / 2**20:.0f} MiB ({rss[-1][0]:,} pending)", fmt(per, 0),
           fmt(intake.get("redis_bytes_per_task"), 0)]
    return (["tasks per call", "calls", "accepted tasks/s (median)", "min-max", "first / last call",
             "scheduler RSS empty / after 1st call / end", "RSS bytes per pending task",
             "Redis bytes per task"], [row])


# --- printing ----------------------------------------------------------------------------------


def report(options: argparse.Namespace, res: dict[str, Any], before: dict[str, Any] | None) -> None:
    """Print every table; rewrite the docs section unless told not to (or the run was --quick)."""
    built = tables(res)
    titles = {"headline": "Headline figures (issue 8)", "lat": "(a) idle latency", "stages": "(a) stages",
              "tp": "(b) throughput", "cpu": "(b) CPU, % of one core", "per_task": "(b) per task, median over rounds",
              "cmdstats": "(b) Redis commands per task, by command", "rpc": "(c) SubmitTask calls/s",
              "intake": "(d) SubmitBatch intake, no workers"}
    print(f"\n{run_name(res)}, measured {res['measured']}")
    for name, title in titles.items():
        print(f"\n{title}\n{text_table(*built[name])}")
    background = res.get("background")
    if background:
        print(f"\nidle background: {background['commands_per_s']:.0f} Redis commands/s, "
              f"{background['reads_per_s']:.0f} reads/s (every stack idle; included in the per-task figures)")
    if before is not None:
        print(f"\nbefore / after\n{text_table(*before_after_table(before, res))}")
    if options.no_docs or res["options"].get("quick"):
        print("\n(--no-docs / --quick: docs/benchmarks.md left unchanged)")
        return
    from bench._dispatch_docs import write_docs

    write_docs(options, res, built, before)
    print("\nwrote the bench_dispatch section of docs/benchmarks.md")
