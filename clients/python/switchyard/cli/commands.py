"""What each ``switchyard`` sub-command does: one function per command, found in :data:`COMMANDS`.

A command makes its calls on the client, prints through :mod:`switchyard.cli.render` (JSON
with ``--json``, text otherwise) and returns the exit status; client errors propagate to
:func:`switchyard.cli.main`, which reports them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from switchyard._fleet_views import WorkerView
from switchyard._task_views import TaskView
from switchyard.cli import render
from switchyard.cli.batch import submit_batch
from switchyard.cli.exits import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from switchyard.cli.parser import task_arguments
from switchyard.cli.progress import ProgressBar
from switchyard.cli.top import top
from switchyard.client import MAX_PAGE_SIZE, SchedulerClient
from switchyard.exceptions import DeadlineExceeded

__all__ = [
    "COMMANDS",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Command",
]

Command = Callable[[SchedulerClient, argparse.Namespace, TextIO], int]
"""A sub-command: ``(client, parsed options, stdout) -> exit status``."""


def _show(options: argparse.Namespace, out: TextIO, value: Any, text: str) -> int:
    """Print ``value`` as JSON with ``--json``, else ``text``; the command succeeded."""
    if options.json:
        render.print_json(value, out)
    else:
        print(text, file=out)
    return EXIT_OK


def submit(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``submit``: exit 0 once accepted, or with ``--wait`` only if the task succeeded."""
    submitted = client.submit(options.task_name, **task_arguments(options))
    if not options.wait:
        return _show(options, out, submitted, render.format_submitted(submitted))
    if not options.json:
        print(render.format_waiting(submitted), file=out)
        out.flush()
    task = client.wait(submitted.task_id, timeout=options.timeout)
    if options.json:
        render.print_json({"submitted": submitted, "task": task}, out)
    else:
        print(render.format_task(task), file=out)
    return EXIT_OK if task.succeeded else EXIT_FAILURE


def explain(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``explain``: a new task described by the task options, or an existing one (``--task-id``)."""
    if options.task_id is not None:
        explanation = client.explain_task(options.task_id)
    else:
        explanation = client.explain(options.task_name, **task_arguments(options))
    return _show(options, out, explanation, render.format_explanation(explanation))


def get(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``get``: one task."""
    task = client.get(options.task_id)
    return _show(options, out, task, render.format_task(task))


def watch(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``watch``: a line per visible change; exit 0 only if the task succeeded. On a terminal,
    progress the task reports moves a bar in place instead of adding lines."""
    last_key: tuple[Any, ...] | None = None
    last_line_key: tuple[Any, ...] | None = None
    last = None
    bar = ProgressBar(out, 1.0, enabled=False if options.json else None)
    try:
        for task in client.watch(options.task_id, timeout=options.timeout):
            key = (task.state, task.worker_id, task.attempt, task.progress, task.progress_message)
            last = task
            if key == last_key:
                continue
            last_key = key
            if options.json:
                render.print_json(task, out)
            elif not bar.enabled:
                print(render.format_watch_line(task), file=out)
            elif key[:3] != last_line_key:  # a new state, worker or attempt: a line of its own
                last_line_key = key[:3]
                bar.print(render.format_watch_line(task))
            if bar.enabled and not task.done and (task.progress or task.progress_message):
                bar.update(task.progress, task.progress_message)
            out.flush()
    finally:
        bar.clear()
    if last is None or not last.done:
        # The stream ended without a terminal state (scheduler shutting down): report what we know.
        last = client.get(options.task_id)
    return EXIT_OK if last.succeeded else EXIT_FAILURE


def cancel(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``cancel``: the task's state now and before."""
    result = client.cancel(options.task_id)
    return _show(options, out, result, render.format_cancelled(result))


def tasks(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``tasks``: matching tasks newest first, at most ``--limit``, and the token to go on from."""
    shown: list[TaskView] = []
    token = options.page_token
    while len(shown) < options.limit:
        page, token = client.list_tasks(
            options.state, queue=options.queue, worker_id=options.worker, task_name=options.name,
            page_size=min(MAX_PAGE_SIZE, options.limit - len(shown)), page_token=token,
        )
        shown += page
        if not token:
            break
    return _show(options, out, {"tasks": shown, "next_page_token": token}, render.format_tasks(shown, token))


def queues(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``queues``: every logical queue's statistics."""
    views = client.queues()
    return _show(options, out, views, render.format_queues(views))


def workers(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``workers``: every worker the scheduler knows."""
    views = client.workers()
    return _show(options, out, views, render.format_workers(views))


def pause(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``pause``: the queue after pausing it."""
    queue = client.pause(options.queue)
    return _show(options, out, queue, render.format_queues([queue]))


def resume(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``resume``: the queue after resuming it."""
    queue = client.resume(options.queue)
    return _show(options, out, queue, render.format_queues([queue]))


def drain(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``drain``: the worker after draining it; with ``--wait``, once it is idle."""
    worker = client.drain(options.worker_id)
    if not options.wait:
        return _show(options, out, worker, render.format_workers([worker]))
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    reported = -1
    while worker.state == "draining":
        running = len(worker.task_ids)
        if running != reported and not options.json:
            print(f"{worker.worker_id}: draining, {running} task(s) still running", file=out)
            out.flush()
            reported = running
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded(f"worker {worker.worker_id} still runs {running} task(s) after "
                                   f"{options.timeout:g} s of draining")
        pause = options.interval if deadline is None else min(options.interval, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
        worker = client.worker(options.worker_id)
    return _drained(options, out, worker)


def _drained(options: argparse.Namespace, out: TextIO, worker: WorkerView) -> int:
    """How ``drain --wait`` ends: 0 once drained, 1 when the worker left the draining state otherwise."""
    if worker.state == "drained":
        return _show(options, out, worker, f"{worker.worker_id}: drained (idle)")
    if worker.state == "lost":
        what = "was lost while draining; its tasks went back to pending"
    else:
        what = f"is {worker.state}: it was undrained while draining"
    if options.json:
        render.print_json(worker, out)
    print(f"error: worker {worker.worker_id} {what} ({worker.state_reason or 'no reason given'})", file=sys.stderr)
    return EXIT_FAILURE


def undrain(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``undrain``: the worker's state now and before (a worker that was not drained is left as it is)."""
    change = client.undrain(options.worker_id)
    return _show(options, out, change, render.format_worker_change(change, "drained"))


def unquarantine(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``unquarantine``: the worker's state now and before (its recent failures are forgotten)."""
    change = client.unquarantine(options.worker_id)
    return _show(options, out, change, render.format_worker_change(change, "quarantined"))


def dead_letters(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``dead-letters``: the newest dead letters and how many are kept."""
    letters, total = client.dead_letters(options.queue, options.limit)
    return _show(options, out, {"dead_letters": letters, "total": total}, render.format_dead_letters(letters, total))


def retry_dead_letter(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``retry-dead-letter``: the task, pending again."""
    task = client.retry_dead_letter(options.task_id)
    return _show(options, out, task, render.format_retried(task))


def purge_dead_letters(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``purge-dead-letters``: how many dead letters were deleted."""
    purged = client.purge_dead_letters(options.task_ids, options.queue, options.all)
    return _show(options, out, {"purged": purged}, render.format_purged(purged))


COMMANDS: dict[str, Command] = {
    "submit": submit,
    "explain": explain,
    "get": get,
    "watch": watch,
    "cancel": cancel,
    "tasks": tasks,
    "queues": queues,
    "workers": workers,
    "pause": pause,
    "resume": resume,
    "drain": drain,
    "undrain": undrain,
    "unquarantine": unquarantine,
    "top": top,
    "submit-batch": submit_batch,
    "dead-letters": dead_letters,
    "retry-dead-letter": retry_dead_letter,
    "purge-dead-letters": purge_dead_letters,
}
"""Sub-command name (as :func:`~switchyard.cli.parser.build_parser` defines it) → function."""
