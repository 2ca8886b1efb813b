"""``switchyard submit-batch FILE``: many tasks from a file, submitted in atomic chunks.

The file (``-`` for stdin) holds one task per line as a JSON object (JSON Lines; blank lines
and lines starting with ``#`` are skipped), or one JSON array of such objects. Each object has
``task_name`` and any of :meth:`SchedulerClient.submit`'s arguments by name: ``args``,
``kwargs``, ``content_type``, ``priority``, ``labels``, ``gpu_memory_mb``, ``queue``,
``allow_unschedulable``, ...::

    {"task_name": "media.transcribe_audio", "kwargs": {"path": "a.mp3"}, "content_type": "audio"}
    {"task_name": "text.summarize", "kwargs": {"text": "..."}, "priority": 8}

Every item is checked while the command line is parsed (a bad one exits 2 naming its line,
before anything is sent). The items then go to the scheduler ``--chunk-size`` at a time, each
chunk one atomic ``SubmitBatch`` (all of it accepted or none); a chunk the scheduler refuses
stops the command, and the chunks before it stay accepted (their ids are printed). On a
terminal a progress bar on stderr shows the submission and, with ``--wait``, the tasks
finishing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from switchyard._options import TaskOptions, build_submit_request
from switchyard._task_views import SubmitResult, TaskView
from switchyard.cli import render
from switchyard.cli.exits import EXIT_FAILURE, EXIT_OK
from switchyard.cli.progress import ProgressBar
from switchyard.client import SchedulerClient
from switchyard.exceptions import DeadlineExceeded, SwitchyardError

__all__ = ["DEFAULT_CHUNK_SIZE", "BatchItem", "batch_file", "parse_batch", "submit_batch"]

DEFAULT_CHUNK_SIZE = 500
"""Items per SubmitBatch call: large enough to be fast, small enough for gRPC's message limit
with ordinary payloads (lower it for large ones)."""


@dataclass(frozen=True)
class BatchItem:
    """One task of a batch file."""

    line: int
    """Where it starts in the file (1-based)."""
    arguments: Mapping[str, Any]
    """``task_name`` and :meth:`SchedulerClient.submit`'s other arguments by name."""


def _item(value: Any, line: int) -> BatchItem:
    """Check one decoded item; raises ValueError naming what is wrong."""
    if not isinstance(value, dict):
        raise ValueError(f"line {line}: expected a JSON object with task_name, got {type(value).__name__}")
    arguments = dict(value)
    task_name = arguments.pop("task_name", None)
    if not isinstance(task_name, str) or not task_name:
        raise ValueError(f"line {line}: task_name (a non-empty string) is missing")
    try:
        build_submit_request(task_name, TaskOptions(**arguments))
    except TypeError as exc:  # an unknown key, or a value of the wrong kind
        raise ValueError(f"line {line}: {exc}".replace("TaskOptions.__init__() ", "")) from None
    except ValueError as exc:  # InvalidArgument is a ValueError
        raise ValueError(f"line {line}: {getattr(exc, 'message', exc)}") from None
    return BatchItem(line, {"task_name": task_name, **arguments})


def parse_batch(text: str) -> list[BatchItem]:
    """The items of a batch file's text (JSON Lines, or one JSON array); raises ValueError
    naming the first bad line."""
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not a valid JSON array: {exc}") from None
        first_line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        return [_item(value, first_line) for value in values]
    items = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"line {number}: not valid JSON ({exc})") from None
        items.append(_item(value, number))
    if not items:
        raise ValueError("no tasks in it (one JSON object per line, or a JSON array)")
    return items


def batch_file(path: str) -> list[BatchItem]:
    """``submit-batch``'s FILE argument (``-`` for stdin), read and checked while parsing."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise argparse.ArgumentTypeError(f"cannot read {path}: {reason}") from None
    try:
        return parse_batch(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc}") from None


def _chunks(items: list[BatchItem], size: int) -> Iterator[list[BatchItem]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def submit_batch(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``submit-batch``: submit a file's tasks in atomic chunks; with ``--wait``, exit 0 only if
    every one succeeded."""
    items: list[BatchItem] = options.file
    bar = ProgressBar(sys.stderr, len(items), "submitting")
    submitted: list[SubmitResult] = []
    for chunk in _chunks(items, options.chunk_size):
        try:
            submitted += client.submit_batch([item.arguments for item in chunk])
        except SwitchyardError:
            bar.clear()
            _print_submitted(options, out, submitted)
            print(f"switchyard: the chunk of lines {chunk[0].line}-{chunk[-1].line} was refused (tasks[i] counts "
                  f"from line {chunk[0].line}); {len(submitted)} of {len(items)} task(s) before it were accepted",
                  file=sys.stderr)
            raise
        bar.update(len(submitted), f"{len(submitted)}/{len(items)}")
    bar.clear()
    if not options.wait:
        _print_submitted(options, out, submitted)
        return EXIT_OK
    tasks = _wait_all(client, submitted, options.timeout)
    failed = [task for task in tasks if not task.succeeded]
    if options.json:
        render.print_json({"submitted": submitted, "tasks": tasks}, out)
    else:
        for task in failed:
            print(render.format_outcome(task), file=out)
        print(f"{len(tasks)} task(s): {len(tasks) - len(failed)} succeeded, {len(failed)} did not", file=out)
    return EXIT_OK if not failed else EXIT_FAILURE


def _print_submitted(options: argparse.Namespace, out: TextIO, submitted: list[SubmitResult]) -> None:
    if options.json:
        render.print_json(submitted, out)
        return
    for result in submitted:
        print(render.format_submitted(result), file=out)


def _wait_all(client: SchedulerClient, submitted: list[SubmitResult], timeout: float | None) -> list[TaskView]:
    """Wait for every task in turn (one deadline for all), a bar counting the finished ones."""
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = ProgressBar(sys.stderr, len(submitted), "waiting")
    tasks: list[TaskView] = []
    failures = 0
    try:
        for result in submitted:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"{len(submitted) - len(tasks)} of {len(submitted)} task(s) did not finish "
                                       f"within {timeout:g} s")
            task = client.wait(result.task_id, timeout=remaining)
            tasks.append(task)
            failures += not task.succeeded
            bar.update(len(tasks), f"{len(tasks)}/{len(submitted)} finished" + (f", {failures} failed" if failures else ""))
    finally:
        bar.clear()
    return tasks
