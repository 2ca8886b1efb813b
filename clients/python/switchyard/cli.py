"""``switchyard``: the command line for a Switchyard scheduler.

    switchyard [--scheduler HOST:PORT] [--json] COMMAND ...

Commands: submit, explain, get, watch, cancel, queues, workers, pause, resume, drain,
dead-letters, retry-dead-letter, purge-dead-letters. ``--json`` prints machine-readable JSON (one
object per line for ``watch``). Failures print
``error: <CODE>: <message>`` on stderr and exit 1; bad usage exits 2 before any network call.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from switchyard._models import (
    GPU_REQUIREMENTS,
    DeadLetterView,
    Explanation,
    QueueView,
    TaskView,
    WorkerVerdict,
    WorkerView,
)
from switchyard.client import DEFAULT_TARGET, SchedulerClient
from switchyard.exceptions import SwitchyardError, Unavailable

__all__ = ["build_parser", "main", "usage_problem"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


# --- argument types: reject bad input while parsing, before any network call -------------


def json_array(text: str) -> list[Any]:
    """``--args``: a JSON array."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"must be a JSON array, e.g. '[1, \"a\"]'; got {text!r}")
    return value


def json_object(text: str) -> dict[str, Any]:
    """``--kwargs``: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, e.g. '{{\"path\": \"a.mp3\"}}'; got {text!r}")
    return value


def label(text: str) -> tuple[str, str]:
    """``--label k=v``: one required worker label."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE; got {text!r}")
    return key, value.strip()


def priority(text: str) -> int:
    """``--priority``: 0 (scheduler decides) or 1-10."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be an integer 0-10; got {text!r}") from exc
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be 0 (scheduler decides) or 1-10; got {value}")
    return value


def _int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse type for integers >= ``minimum``; errors say ``must be <wording>``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"must be {wording}; got {text!r}") from exc
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}; got {value}")
        return value

    return parse


non_negative_int = _int_at_least(0, "a non-negative integer")
"""A count such as ``--gpu-memory-mb``."""
positive_int = _int_at_least(1, "a positive integer")
"""A count that must be at least 1, such as ``--limit``."""


def positive_float(text: str) -> float:
    """A duration such as ``--timeout``."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; got {text!r}") from exc
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0; got {value}")
    return value


# --- parser ---------------------------------------------------------------------------------


def _add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    # Sub-commands repeat the global options with SUPPRESS defaults, so `switchyard queues --json`
    # works as well as `switchyard --json queues` without one overwriting the other.
    default_scheduler: Any = argparse.SUPPRESS if in_subcommand else os.environ.get("SWITCHYARD_SCHEDULER", DEFAULT_TARGET)
    default_json: Any = argparse.SUPPRESS if in_subcommand else False
    parser.add_argument(
        "--scheduler",
        metavar="HOST:PORT",
        default=default_scheduler,
        help=f"scheduler address (env SWITCHYARD_SCHEDULER, default {DEFAULT_TARGET})",
    )
    parser.add_argument("--json", action="store_true", default=default_json, help="print JSON instead of text")


TASK_OPTIONS: dict[str, str] = {
    "args": "--args",
    "kwargs": "--kwargs",
    "content_type": "--content-type",
    "gpu": "--gpu",
    "gpu_memory_mb": "--gpu-memory-mb",
    "priority": "--priority",
    "queue": "--queue",
    "idempotency_key": "--idempotency-key",
    "label": "--label",
    "user_initiated": "--user-initiated",
    "retry_policy": "--retry-policy",
    "soft_time_limit": "--soft-time-limit",
    "hard_time_limit": "--hard-time-limit",
    "prefer_label": "--prefer-label",
    "batch_size": "--batch-size",
}
"""Destination → flag of the task options ``submit`` and ``explain`` share."""


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    """The options that describe a task, shared by ``submit`` and ``explain``."""
    parser.add_argument("--args", type=json_array, default=[], metavar="JSON", help="positional arguments, a JSON array")
    parser.add_argument("--kwargs", type=json_object, default={}, metavar="JSON", help="keyword arguments, a JSON object")
    parser.add_argument("--content-type", default="", metavar="T", help="audio, video, image, document, web, text, youtube, ...")
    parser.add_argument("--gpu", choices=GPU_REQUIREMENTS, default="unspecified", help="GPU need (default: classification decides)")
    parser.add_argument("--gpu-memory-mb", type=non_negative_int, default=0, metavar="N", help="GPU memory needed on one device, MiB")
    parser.add_argument("--priority", type=priority, default=0, metavar="N", help="1 (lowest) to 10; 0 lets the scheduler decide")
    parser.add_argument("--queue", default="", metavar="Q", help="logical queue override")
    parser.add_argument("--idempotency-key", default="", metavar="K", help="same key returns the original task")
    parser.add_argument(
        "--label", type=label, action="append", default=[], metavar="KEY=VALUE",
        help="worker label the task requires (repeatable)",
    )
    parser.add_argument(
        "--prefer-label", type=label, action="append", default=[], metavar="KEY=VALUE",
        help="worker label the task prefers: such workers score higher, any capable worker may run it (repeatable)",
    )
    parser.add_argument("--user-initiated", action="store_true", help="a person waits for this task (raises priority)")
    parser.add_argument("--retry-policy", default="", metavar="NAME", help="named retry policy of the scheduler's configuration")
    parser.add_argument("--soft-time-limit", type=positive_float, default=None, metavar="S", help="soft time limit, seconds (default: the queue's)")
    parser.add_argument("--hard-time-limit", type=positive_float, default=None, metavar="S", help="hard time limit, seconds (default: the queue's)")
    parser.add_argument("--batch-size", type=non_negative_int, default=0, metavar="N", help="size of the batch the task belongs to (> 10 lowers priority)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``switchyard``."""
    parser = argparse.ArgumentParser(
        prog="switchyard",
        description="Submit, inspect and control work on a Switchyard scheduler.",
    )
    _add_global_options(parser, in_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_global_options(sub, in_subcommand=True)
        # Checks argparse cannot express report through the sub-command's own usage line.
        sub.set_defaults(usage_error=sub.error)
        return sub

    submit = command("submit", "submit one task")
    submit.add_argument("task_name", metavar="TASK_NAME", help="Celery task name, e.g. media.transcribe_audio")
    _add_task_options(submit)
    submit.add_argument("--wait", action="store_true", help="wait for the task to finish; exit 0 only if it succeeded")
    submit.add_argument("--timeout", type=positive_float, default=None, metavar="S", help="with --wait: give up after S seconds")

    explain = command(
        "explain",
        "dry run: how a task would be classified, which worker would take it now, and why the others would not",
    )
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("task_name", metavar="TASK_NAME", nargs="?", help="explain a task as submit would send it")
    target.add_argument("--task-id", metavar="ID", help="explain an existing pending task instead")
    _add_task_options(explain)

    get = command("get", "show one task")
    get.add_argument("task_id", metavar="ID")

    watch = command("watch", "print a line per state change until the task ends; exit 0 only if it succeeded")
    watch.add_argument("task_id", metavar="ID")
    watch.add_argument("--timeout", type=positive_float, default=None, metavar="S", help="give up after S seconds")

    cancel = command("cancel", "cancel a task")
    cancel.add_argument("task_id", metavar="ID")

    command("queues", "statistics of every logical queue")
    command("workers", "workers known to the scheduler")

    pause = command("pause", "stop handing out a queue's tasks")
    pause.add_argument("queue", metavar="QUEUE")
    resume = command("resume", "hand out a paused queue's tasks again")
    resume.add_argument("queue", metavar="QUEUE")
    drain = command("drain", "give a worker nothing new; it finishes what it has")
    drain.add_argument("worker_id", metavar="WORKER")

    dead = command("dead-letters", "tasks that failed for good, newest first")
    dead.add_argument("--queue", default="", metavar="Q", help="only this queue")
    dead.add_argument("--limit", type=positive_int, default=100, metavar="N", help="at most N (default 100, max 1000)")
    retry = command("retry-dead-letter", "put a dead-lettered task back to pending with a fresh retry budget")
    retry.add_argument("task_id", metavar="ID")
    purge = command("purge-dead-letters", "delete dead letters: --all, every one of --queue Q, or the given ids")
    purge.add_argument("task_ids", metavar="ID", nargs="*", help="task ids of the dead letters to delete")
    purge.add_argument("--queue", default="", metavar="Q", help="every dead letter of this queue")
    purge.add_argument("--all", action="store_true", help="every dead letter")
    return parser


def usage_problem(options: argparse.Namespace) -> str | None:
    """What is wrong with a parsed command line that argparse itself cannot check, or None."""
    if options.command in ("submit", "explain"):
        soft, hard = options.soft_time_limit, options.hard_time_limit
        if soft is not None and hard is not None and soft > hard:
            return f"--soft-time-limit ({soft:g}) must not exceed --hard-time-limit ({hard:g})"
    if options.command == "explain" and options.task_id is not None:
        blank = argparse.ArgumentParser(add_help=False)
        _add_task_options(blank)
        defaults = blank.parse_args([])
        given = [flag for dest, flag in TASK_OPTIONS.items() if getattr(options, dest) != getattr(defaults, dest)]
        if given:
            return f"--task-id explains an existing task and takes no task options (got {', '.join(given)})"
    if options.command == "purge-dead-letters":
        chosen = [name for name, used in (("ID", options.task_ids), ("--queue", options.queue), ("--all", options.all)) if used]
        if len(chosen) != 1:
            what = "nothing" if not chosen else " and ".join(chosen)
            return f"give exactly one of --all, --queue Q or ID... (got {what})"
    return None


# --- output -----------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """A view (dataclass) as plain JSON data: datetimes in ISO 8601, ``raw`` protobufs left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: to_jsonable(getattr(value, item.name))
            for item in dataclasses.fields(value)
            if item.name != "raw"
        }
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # NamedTuple, e.g. ScoreTerm
        return {key: to_jsonable(item) for key, item in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    return value


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(to_jsonable(value), sort_keys=True), file=out)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().isoformat(timespec="milliseconds")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under headers, columns padded to their widest cell."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines)


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items())) or "-"


def format_task(task: TaskView) -> str:
    """A task as ``key: value`` lines."""
    fields: list[tuple[str, str]] = [
        ("task_id", task.task_id),
        ("task_name", task.task_name),
        ("state", task.state),
        ("queue", task.queue),
        ("priority", str(task.priority)),
    ]
    if task.effective_priority:
        fields.append(("effective_priority", str(task.effective_priority)))
    fields += [
        ("class", task.task_class),
        ("content_type", task.content_type or "-"),
        ("gpu", task.gpu),
        ("gpu_memory_mb", str(task.gpu_memory_mb)),
        ("labels", _labels(task.labels)),
        ("worker", task.worker_id or "-"),
        ("attempt", str(task.attempt)),
    ]
    if task.retry_policy:
        fields.append(("retry_policy", task.retry_policy))
    if task.failures:
        fields.append(("failures", str(task.failures)))
    if task.next_attempt_at is not None:
        fields.append(("next_attempt_at", _time(task.next_attempt_at)))
    fields += [
        ("progress", f"{task.progress:.0%}" + (f" {task.progress_message}" if task.progress_message else "")),
        ("reason", task.reason or "-"),
        ("submitted_at", _time(task.submitted_at)),
        ("dispatched_at", _time(task.dispatched_at)),
        ("started_at", _time(task.started_at)),
        ("finished_at", _time(task.finished_at)),
        ("wait", _seconds(task.wait_seconds)),
        ("run", _seconds(task.run_seconds)),
    ]
    if task.result_json:
        fields.append(("result", task.result_json))
    if task.error:
        fields.append(("error", task.error))
    if task.error_type and not task.error.startswith(task.error_type):
        fields.append(("error_type", task.error_type))
    if task.traceback:
        fields.append(("traceback", "\n  " + task.traceback.rstrip().replace("\n", "\n  ")))
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in fields)


def format_watch_line(task: TaskView) -> str:
    """One line of ``watch``: time, state, worker, attempt, progress, reason."""
    stamp = datetime.now().astimezone().strftime("%H:%M:%S.%f")[:-3]
    parts = [stamp, task.state.ljust(13), f"worker={task.worker_id or '-'}", f"attempt={task.attempt}"]
    if task.progress or task.progress_message:
        parts.append(f"progress={task.progress:.0%}" + (f" ({task.progress_message})" if task.progress_message else ""))
    if task.done and task.error:
        parts.append(f"error={task.error}")
    elif task.reason:
        parts.append(f"reason={task.reason}")
    return "  ".join(parts)


def format_queues(queues: Sequence[QueueView]) -> str:
    """The ``queues`` table, then one ``warning:`` line per alert a queue has crossed."""
    headers = [
        "QUEUE", "PAUSED", "PENDING", "PROCESSING", "RETRYING", "COMPLETED", "FAILED", "DEAD", "ERR%",
        "MEAN WAIT", "MEAN RUN", "WORKERS",
    ]
    rows = [
        [
            queue.name,
            "yes" if queue.paused else "no",
            str(queue.pending),
            str(queue.processing),
            str(queue.retrying),
            str(queue.completed),
            str(queue.failed),
            str(queue.dead_lettered),
            f"{queue.error_rate * 100:.1f}",
            _seconds(queue.mean_wait_seconds),
            _seconds(queue.mean_run_seconds),
            str(queue.workers),
        ]
        for queue in queues
    ]
    warnings = [f"warning: {queue.name}: {warning}" for queue in queues for warning in queue.warnings]
    return "\n".join([format_table(headers, rows), *warnings])


def _gpus(worker: WorkerView) -> str:
    if not worker.gpus:
        return "-"
    described = ",".join(f"{gpu.name or 'gpu'}:{gpu.memory_free_mb}/{gpu.memory_total_mb}MiB" for gpu in worker.gpus)
    simulated = worker.gpu_simulated and "simulated" not in described.lower()
    return f"{len(worker.gpus)}x[{described}]" + (" (simulated)" if simulated else "")


def format_workers(workers: Sequence[WorkerView]) -> str:
    """The ``workers`` table."""
    headers = ["WORKER", "TYPE", "STATUS", "SLOTS", "FREE", "GPUS", "LABELS", "TASKS"]
    rows = [
        [
            worker.worker_id,
            worker.worker_type,
            worker.status,
            str(worker.slots),
            str(worker.free_slots),
            _gpus(worker),
            _labels(worker.labels),
            ",".join(worker.task_ids) or "-",
        ]
        for worker in workers
    ]
    return format_table(headers, rows)


def format_score_terms(verdict: WorkerVerdict) -> str:
    """A worker's score terms on one line: ``name:value*weight=contribution`` each."""
    # "+ 0.0" turns -0.0 (a penalty term that is zero) into 0.0 so it does not print as "-0.00".
    return " ".join(
        f"{term.name}:{term.value + 0.0:.2f}*{term.weight + 0.0:g}={term.contribution + 0.0:.2f}"
        for term in verdict.terms
    ) or "-"


def format_explanation(explanation: Explanation) -> str:
    """The ``explain`` output: classification, a table of worker verdicts, the summary."""
    priority_text = str(explanation.priority)
    if explanation.effective_priority and explanation.effective_priority != explanation.priority:
        priority_text += f" (effective {explanation.effective_priority})"
    fields = [
        ("class", explanation.task_class),
        ("queue", explanation.queue),
        ("priority", priority_text),
        ("reason", explanation.classification_reason or "-"),
        ("chosen", explanation.chosen_worker_id or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {value}" for name, value in fields]
    lines.append("")
    if explanation.workers:
        headers = ["WORKER", "ELIGIBLE", "REJECTED BY", "REASON", "SCORE", "TERMS"]
        rows = [
            [
                verdict.worker_id,
                "chosen" if verdict.worker_id == explanation.chosen_worker_id else ("yes" if verdict.eligible else "no"),
                verdict.rejected_by or "-",
                verdict.rejection_reason or "-",
                f"{verdict.score:.2f}" if verdict.eligible else "-",
                format_score_terms(verdict) if verdict.eligible else "-",
            ]
            for verdict in explanation.workers
        ]
        lines.append(format_table(headers, rows))
    else:
        lines.append("no workers known")
    lines += ["", f"summary: {explanation.summary or '-'}"]
    return "\n".join(lines)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _error_message(task: TaskView) -> str:
    """The error without its ``Type: `` prefix when the type is shown beside it."""
    prefix = f"{task.error_type}: "
    return task.error.removeprefix(prefix) if task.error_type else task.error


def format_dead_letters(letters: Sequence[DeadLetterView], total: int) -> str:
    """The ``dead-letters`` table and how many of the kept dead letters it shows."""
    if not letters:
        return "no dead letters" if not total else f"0 of {total} dead letters shown"
    headers = ["TASK ID", "NAME", "QUEUE", "FAILURES", "ERROR TYPE", "ERROR", "DEAD-LETTERED AT"]
    rows = [
        [
            letter.task.task_id,
            letter.task.task_name,
            letter.task.queue,
            str(letter.task.failures),
            letter.task.error_type or "-",
            _one_line(_error_message(letter.task), 60) or "-",
            _time(letter.dead_lettered_at),
        ]
        for letter in letters
    ]
    return f"{format_table(headers, rows)}\n{len(letters)} of {total} dead letters shown"


# --- commands ---------------------------------------------------------------------------------


def _task_options(options: argparse.Namespace) -> dict[str, Any]:
    """:meth:`SchedulerClient.submit`'s keyword arguments from the shared task options."""
    return {
        "content_type": options.content_type,
        "gpu": options.gpu,
        "gpu_memory_mb": options.gpu_memory_mb,
        "priority": options.priority,
        "queue": options.queue,
        "idempotency_key": options.idempotency_key,
        "labels": dict(options.label),
        "user_initiated": options.user_initiated,
        "retry_policy": options.retry_policy,
        "soft_time_limit": options.soft_time_limit,
        "hard_time_limit": options.hard_time_limit,
        "preferred_labels": dict(options.prefer_label),
        "batch_size": options.batch_size,
    }


def _explain(client: SchedulerClient, options: argparse.Namespace) -> Explanation:
    if options.task_id is not None:
        return client.explain_task(options.task_id)
    return client.explain(options.task_name, options.args, options.kwargs, **_task_options(options))


def _submit(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    submitted = client.submit(options.task_name, options.args, options.kwargs, **_task_options(options))
    if not options.wait:
        if options.json:
            _print_json(submitted, out)
        else:
            note = " (deduplicated)" if submitted.deduplicated else ""
            print(
                f"{submitted.task_id}{note}  queue={submitted.queue} priority={submitted.priority} "
                f"class={submitted.task_class}  {submitted.reason}".rstrip(),
                file=out,
            )
        return EXIT_OK
    if not options.json:
        print(f"submitted {submitted.task_id} to {submitted.queue} (priority {submitted.priority}); waiting...", file=out)
        out.flush()
    task = client.wait(submitted.task_id, timeout=options.timeout)
    if options.json:
        _print_json({"submitted": to_jsonable(submitted), "task": to_jsonable(task)}, out)
    else:
        print(format_task(task), file=out)
    return EXIT_OK if task.succeeded else EXIT_FAILURE


def _watch(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    last_key: tuple[Any, ...] | None = None
    last: TaskView | None = None
    for task in client.watch(options.task_id, timeout=options.timeout):
        key = (task.state, task.worker_id, task.attempt, task.progress, task.progress_message)
        last = task
        if key == last_key:
            continue
        last_key = key
        if options.json:
            _print_json(task, out)
        else:
            print(format_watch_line(task), file=out)
        out.flush()
    if last is None or not last.done:
        # The stream ended without a terminal state (scheduler shutting down): report what we know.
        last = client.get(options.task_id)
    return EXIT_OK if last.succeeded else EXIT_FAILURE


def _dead_letters(client: SchedulerClient, options: argparse.Namespace) -> tuple[Any, Callable[[Any], str]]:
    letters, total = client.dead_letters(options.queue, options.limit)
    return {"dead_letters": letters, "total": total}, lambda value: format_dead_letters(value["dead_letters"], value["total"])


def _run_command(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    name = options.command
    if name == "submit":
        return _submit(client, options, out)
    if name == "watch":
        return _watch(client, options, out)
    handlers: dict[str, Callable[[], tuple[Any, Callable[[Any], str]]]] = {
        "get": lambda: (client.get(options.task_id), format_task),
        "cancel": lambda: (
            client.cancel(options.task_id),
            lambda result: f"{result.task.task_id}: {result.task.state} (was {result.previous_state})",
        ),
        "queues": lambda: (client.queues(), format_queues),
        "workers": lambda: (client.workers(), format_workers),
        "pause": lambda: (client.pause(options.queue), lambda queue: format_queues([queue])),
        "resume": lambda: (client.resume(options.queue), lambda queue: format_queues([queue])),
        "drain": lambda: (client.drain(options.worker_id), lambda worker: format_workers([worker])),
        "explain": lambda: (_explain(client, options), format_explanation),
        "dead-letters": lambda: _dead_letters(client, options),
        "retry-dead-letter": lambda: (
            client.retry_dead_letter(options.task_id),
            lambda task: f"{task.task_id}: {task.state} in {task.queue} (priority {task.priority})"
            + (f"  {task.reason}" if task.reason else ""),
        ),
        "purge-dead-letters": lambda: (
            {"purged": client.purge_dead_letters(options.task_ids, options.queue, options.all)},
            lambda result: f"purged {result['purged']} dead letter{'' if result['purged'] == 1 else 's'}",
        ),
    }
    value, render = handlers[name]()
    if options.json:
        _print_json(value, out)
    else:
        print(render(value), file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``switchyard`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 after --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    problem = usage_problem(options)
    if problem is not None:
        try:
            options.usage_error(problem)  # prints the sub-command's usage and the problem
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with SchedulerClient(options.scheduler) as client:
            return _run_command(client, options, sys.stdout)
    except Unavailable as exc:
        print(f"error: {exc.code}: {exc.message} (is switchyard-scheduler listening on {options.scheduler}?)", file=sys.stderr)
        return EXIT_FAILURE
    except SwitchyardError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `switchyard queues | head`: the reader is gone, nothing left to say
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
