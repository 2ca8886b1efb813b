"""What ``switchyard`` prints: JSON for ``--json``, and otherwise tables and ``key: value`` text.

Every function takes views and returns text (or writes one JSON document), so output is
testable without a scheduler.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from switchyard._fleet_views import QueueView, WorkerChange, WorkerView
from switchyard._task_views import (
    CancelResult,
    DeadLetterView,
    Explanation,
    SubmitResult,
    TaskView,
    WorkerVerdict,
)

__all__ = [
    "format_cancelled",
    "format_dead_letters",
    "format_duration",
    "format_explanation",
    "format_outcome",
    "format_purged",
    "format_queues",
    "format_retried",
    "format_score_terms",
    "format_submitted",
    "format_table",
    "format_task",
    "format_tasks",
    "format_waiting",
    "format_watch_line",
    "format_worker_change",
    "format_workers",
    "print_json",
    "to_jsonable",
]


# --- JSON -------------------------------------------------------------------------------------


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


def print_json(value: Any, out: TextIO) -> None:
    """``value`` (views, mappings, lists of them) as one line of JSON with sorted keys."""
    print(json.dumps(to_jsonable(value), sort_keys=True), file=out)


# --- text building blocks ---------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().isoformat(timespec="milliseconds")


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items())) or "-"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``, ``3d04h``: a duration short enough for a table cell."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _since(value: datetime | None, now: datetime) -> str:
    """``14:03:07 (3m05s)``: the local time of day and how long ago."""
    if value is None:
        return "-"
    return f"{value.astimezone().strftime('%H:%M:%S')} ({format_duration((now - value).total_seconds())})"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _key_values(fields: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(name) for name, _ in fields)
    return [f"{name.ljust(width)}  {value}" for name, value in fields]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under headers, columns padded to their widest cell."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines)


# --- tasks ------------------------------------------------------------------------------------


def format_submitted(submitted: SubmitResult) -> str:
    """The one line ``submit`` prints without ``--wait``."""
    note = " (deduplicated)" if submitted.deduplicated else ""
    return (
        f"{submitted.task_id}{note}  queue={submitted.queue} priority={submitted.priority} "
        f"class={submitted.task_class}  {submitted.reason}"
    ).rstrip()


def format_waiting(submitted: SubmitResult) -> str:
    """The line ``submit --wait`` prints before it waits."""
    return f"submitted {submitted.task_id} to {submitted.queue} (priority {submitted.priority}); waiting..."


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
    return "\n".join(_key_values(fields))


def format_tasks(tasks: Sequence[TaskView], next_page_token: str) -> str:
    """The ``tasks`` table, newest first, and how to see more when there are more."""
    more = f"more tasks: add --page-token {next_page_token}" if next_page_token else ""
    if not tasks:
        return "\n".join(filter(None, ["no tasks match", more]))
    headers = ["TASK ID", "NAME", "STATE", "QUEUE", "PRIO", "WORKER", "ATTEMPT", "SUBMITTED", "PROGRESS", "DETAIL"]
    rows = [
        [
            task.task_id,
            task.task_name,
            task.state,
            task.queue,
            str(task.priority),
            task.worker_id or "-",
            str(task.attempt),
            _time(task.submitted_at),
            f"{task.progress:.0%}" if task.progress else "-",
            _one_line(task.error if task.error and task.done else task.reason, 60) or "-",
        ]
        for task in tasks
    ]
    return "\n".join(filter(None, [format_table(headers, rows), more]))


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


def format_outcome(task: TaskView) -> str:
    """One line for a task that ended: id, state, worker, and its error or reason."""
    detail = task.error or task.reason
    parts = [task.task_id, task.state, f"worker={task.worker_id or '-'}", _one_line(detail, 160) if detail else ""]
    return "  ".join(part for part in parts if part)


def format_cancelled(result: CancelResult) -> str:
    """What ``cancel`` prints: the task's state now and before."""
    return f"{result.task.task_id}: {result.task.state} (was {result.previous_state})"


# --- queues and workers -----------------------------------------------------------------------


def format_queues(queues: Sequence[QueueView]) -> str:
    """The ``queues`` table, then one ``warning:`` line per alert a queue has crossed."""
    headers = [
        "QUEUE", "PAUSED", "PENDING", "PROCESSING", "RETRYING", "COMPLETED", "FAILED", "CANCELLED", "DEAD",
        "ERR%", "MEAN WAIT", "MEAN RUN", "WORKERS",
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
            str(queue.cancelled),
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


def format_workers(workers: Sequence[WorkerView], now: datetime | None = None) -> str:
    """The ``workers`` table: each worker's state (ready, draining, drained, quarantined, lost),
    since when (local time, and how long ago, from ``now``) and why."""
    now = now or datetime.now(UTC)
    headers = ["WORKER", "TYPE", "STATE", "SINCE", "SLOTS", "FREE", "GPUS", "LABELS", "TASKS", "REASON"]
    rows = [
        [
            worker.worker_id,
            worker.worker_type,
            worker.state,
            _since(worker.state_since, now),
            str(worker.slots),
            str(worker.free_slots),
            _gpus(worker),
            _labels(worker.labels),
            ",".join(worker.task_ids) or "-",
            worker.state_reason or "-",
        ]
        for worker in workers
    ]
    return format_table(headers, rows)


def format_worker_change(change: WorkerChange, undone: str) -> str:
    """What ``undrain``/``unquarantine`` print: the worker's state now, and before. ``undone``
    names what was undone (``"drained"``, ``"quarantined"``)."""
    worker = change.worker
    if change.changed:
        return f"{worker.worker_id}: {worker.state} (was {change.previous_state})"
    return f"{worker.worker_id}: {worker.state} (was not {undone}; nothing changed)"


# --- placement --------------------------------------------------------------------------------


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
    lines = _key_values(
        [
            ("class", explanation.task_class),
            ("queue", explanation.queue),
            ("priority", priority_text),
            ("reason", explanation.classification_reason or "-"),
            ("chosen", explanation.chosen_worker_id or "-"),
        ]
    )
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


# --- dead letters -----------------------------------------------------------------------------


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


def format_retried(task: TaskView) -> str:
    """What ``retry-dead-letter`` prints: where the task waits again."""
    return f"{task.task_id}: {task.state} in {task.queue} (priority {task.priority})" + (
        f"  {task.reason}" if task.reason else ""
    )


def format_purged(purged: int) -> str:
    """What ``purge-dead-letters`` prints."""
    return f"purged {purged} dead letter{'' if purged == 1 else 's'}"
