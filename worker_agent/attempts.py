"""Which Switchyard attempt a task execution is, and which attempts are running on this worker.

An attempt is named by the `sy_*` headers of its Celery message (`switchyard.wire`). While it
runs it is recorded twice: in a thread-local of the pool process, so progress reports and
`update_state` know their attempt, and as a pid file `<task_id>.<attempt>.pid` in the agent's
run directory, so the agent (another process) can count running attempts for its heartbeats
and find the pool child to signal on cancel. The pid file is written while the attempt's claim is
on its way to Redis (the write overlaps the round trip instead of following it) and removed at
once when the claim is refused, so for that moment it names an attempt about to run or about to
be turned away. The pid file layout is part of the wire contract.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchyard.wire import HEADER_ATTEMPT, HEADER_PAYLOAD_REF, HEADER_TASK_ID, HEADER_WORKER_ID

from worker_agent import environment

log = logging.getLogger("switchyard.worker.attempts")

_running = threading.local()


@dataclass(frozen=True)
class Attempt:
    """The Switchyard attempt a task execution belongs to, from its message headers."""

    task_id: str
    attempt: int
    worker_id: str
    payload_by_reference: bool
    """True when args/kwargs are stored once in the state Redis instead of in the message."""


def attempt_from_request(request: Any) -> Attempt | None:
    """The attempt named by a Celery task request's `sy_*` headers; None for plain Celery messages.

    Celery puts custom message headers both on the request as attributes and in
    `request.headers` (Celery 5.7, protocol 2); either is read.
    """
    headers = getattr(request, "headers", None)
    header_map: Mapping[str, Any] = headers if isinstance(headers, Mapping) else {}

    def header(name: str) -> Any:
        value = getattr(request, name, None)
        return value if value is not None else header_map.get(name)

    task_id = header(HEADER_TASK_ID)
    if not task_id:
        return None
    # The agent's word wins over the message's: it is the worker that actually runs the attempt.
    worker_id = os.environ.get(environment.WORKER_ID) or str(header(HEADER_WORKER_ID) or "")
    return Attempt(
        task_id=str(task_id),
        attempt=int(header(HEADER_ATTEMPT) or 0),
        worker_id=worker_id,
        payload_by_reference=str(header(HEADER_PAYLOAD_REF) or "0") in ("1", "true", "True"),
    )


def current_attempt() -> Attempt | None:
    """The Switchyard attempt running in this thread, or None outside one."""
    attempt: Attempt | None = getattr(_running, "attempt", None)
    return attempt


def record_pid(attempt: Attempt) -> Path | None:
    """Write this process's pid to `attempt`'s pid file; the file, or None when there is none
    (outside an agent, or it could not be written: the attempt still runs, only a local cancel of
    it becomes impossible). Written while the attempt's claim is on its way (see `running`)."""
    pid_file = attempt_pid_file(attempt)
    if pid_file is None:
        return None
    try:
        # os-level calls: Path.write_text's text layer costs as much again, on every task's start.
        descriptor = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, str(os.getpid()).encode())
        finally:
            os.close(descriptor)
    except OSError as exc:
        log.warning("no pid file for task %s attempt %d: %s", attempt.task_id, attempt.attempt, exc)
        return None
    return pid_file


@contextlib.contextmanager
def running(attempt: Attempt, pid_file: Path | None) -> Iterator[None]:
    """Record `attempt` as running in this thread until the block ends, then remove its pid file
    (`record_pid`'s, written while the claim was on its way; None: there is none)."""
    _running.attempt = attempt
    try:
        yield
    finally:
        _running.attempt = None
        forget_pid(pid_file)


def forget_pid(pid_file: Path | None) -> None:
    """Remove a pid file of `record_pid` (None: nothing to remove)."""
    if pid_file is not None:
        pid_file.unlink(missing_ok=True)


def attempt_pid_file(attempt: Attempt) -> Path | None:
    """The pid file of `attempt` in this worker's run directory; None outside an agent."""
    run_dir = environment.run_dir()
    if run_dir is None:
        return None
    try:
        return pid_file_path(run_dir, attempt.task_id, attempt.attempt)
    except ValueError as exc:
        # The attempt still runs; only a local cancel of it becomes impossible.
        log.warning("no pid file for task %s attempt %d: %s", attempt.task_id, attempt.attempt, exc)
        return None


def pid_file_path(run_dir: Path, task_id: str, attempt: int) -> Path:
    """Where the pid of the pool process running an attempt is recorded (wire contract)."""
    # The task id comes over the network: never let it name a file outside the run dir.
    if not task_id or "/" in task_id or "\0" in task_id or task_id.startswith("."):
        raise ValueError(f"refusing unsafe task id {task_id!r} for a pid file name")
    return run_dir / f"{task_id}.{attempt}.pid"


def running_attempts(run_dir: Path) -> list[tuple[str, int]] | None:
    """The Switchyard attempts running now, as (task id, attempt): one pid file each, written
    as the claim goes out (removed at once if it is refused) and removed once the outcome report
    is sent (or buffered). None when the run directory cannot be read: not knowing is not the
    same as running nothing."""
    try:
        names = [path.name for path in run_dir.glob("*.pid")]
    except OSError:
        return None
    found = []
    for name in names:
        task_id, _, attempt = name[:-len(".pid")].rpartition(".")
        if task_id and attempt.isdigit():
            found.append((task_id, int(attempt)))
    return found
