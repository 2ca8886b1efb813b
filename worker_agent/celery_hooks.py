"""The Celery integration of the worker side (docs/wire-contract.md), attached through signals.

Importing this module connects Celery signals; `worker_agent.celery_boot` imports it before
Celery loads the user's app, so the user's code needs no change. What it does:

* `celeryd_init` forces the settings Switchyard relies on: late acks, prefetch 1, no requeue
  when a pool child dies (the scheduler re-dispatches with a new attempt instead), JSON and
  msgpack messages only (queues or tasks may ask for msgpack: docs/arguments.md; never pickle),
  no kombu ack emulation (the scheduler redelivers, as new fenced attempts), and running tasks
  that survive a lost broker connection (a Redis restart must not cancel them).
  Celery task events stay as Celery has them (off unless `-E` or the app's config; Flower turns
  them on by itself); `SWITCHYARD_TASK_EVENTS=1` turns them on from the start, `=0` off.
* `worker_init` (main process, after the user's task modules are imported and before the pool
  forks or any tracer is built) replaces every user task's `run` with a fenced wrapper;
  prefork children inherit it. Under an agent it then reports the registered task names and
  the broker, and waits for the agent's go-ahead with the state Redis (`worker_agent.handshake`)
  before Celery consumes anything. `worker_process_init` repeats the wrapping idempotently and
  rebuilds the tracers, for pools whose children import the app afresh (spawn).
* The wrapper reads the attempt from the `sy_*` headers (`worker_agent.attempts`). A message
  without them runs unchanged, so plain Celery use keeps working. Otherwise it claims the
  attempt through `worker_agent.state_client`, writing the attempt's pid file while the claim
  travels; a refused attempt (stale, or its task record is gone) removes it and raises `Ignore`
  (Celery acks the message, nothing runs). A claimed attempt is recorded as running, loads a
  by-reference payload, runs the user's code and reports `succeeded` or `failed`.
* `task_unknown` / `task_rejected` (main process): a Switchyard message for a task name the app
  does not register, or one Celery rejects as invalid, is reported `failed` at once (error type
  `NotRegistered`, or the rejection's), so it neither hangs in `dispatched` nor holds a slot. No
  claim is needed: the scheduler accepts a failed report of a dispatched attempt.
* `worker_process_shutdown` / `worker_shutdown` give reports still buffered (state Redis
  unreachable) a few seconds to be written.
* `worker_agent.kombu_fixes` keeps a kombu bug from stopping a busy worker when Redis restarts.
* `task.update_state(state="PROGRESS", ...)` inside a Switchyard attempt also reports
  progress, as `worker_agent.progress.report` does without a result backend.
* `task_failure` in the main process reports attempts whose pool child died (hard time
  limit, OOM kill) as `failed`, since the child could not report them itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
from celery import signals
from celery.exceptions import Ignore, Reject

from worker_agent import environment, kombu_fixes, progress
from worker_agent.attempts import (
    Attempt,
    attempt_from_request,
    attempt_pid_file,
    current_attempt,
    forget_pid,
    record_pid,
    running,
)
from worker_agent.handshake import WorkerReport, worker_handshake
from worker_agent.state_client import Refused, flush_reports, state_store

log = logging.getLogger("switchyard.worker.celery_hooks")

PROGRESS_STATE = "PROGRESS"
"""The `update_state` state whose meta becomes a Switchyard progress report."""

_WRAPPED_MARK = "_switchyard_wrapped"
_wrapped_in_main: list[str] = []

NAMES_SHOWN = 20
"""Registered task names quoted in a NotRegistered error; the rest are counted."""
FLUSH_ON_EXIT_SECONDS = 5.0
"""How long a process that exits waits for its buffered reports to reach Redis."""


def _run_attempt(attempt: Attempt, original_run: Callable[..., Any],
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    store = state_store()
    pid_file: Path | None = None

    def record() -> None:
        nonlocal pid_file
        pid_file = record_pid(attempt)

    try:
        # The pid file is written while the claim travels: one step less between claim and run.
        claimed = store.claim(attempt, meanwhile=record)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        forget_pid(pid_file)
        # Still unreachable after the claim's wait: put the message back rather than run unfenced.
        log.error("state Redis still unreachable; giving task %s attempt %d back to the broker: %s",
                  attempt.task_id, attempt.attempt, exc)
        raise Reject(f"state Redis unreachable: {exc}", requeue=True) from exc
    except BaseException:
        forget_pid(pid_file)
        raise
    if isinstance(claimed, Refused):
        forget_pid(pid_file)
        if claimed.task_missing:
            log.warning(
                "task %s attempt %d is unknown to the state Redis (its record is gone: Redis lost "
                "its data, or the record expired); acking its message without running it",
                attempt.task_id, attempt.attempt,
            )
        else:
            log.info(
                "stale attempt %s of task %s (fence moved on or already started); acking without running",
                attempt.attempt, attempt.task_id,
            )
        raise Ignore()
    with running(attempt, pid_file):
        try:
            stored = claimed.arguments()
            if stored is not None:
                args, kwargs = tuple(stored[0]), stored[1]
            result = original_run(*args, **kwargs)
        except Exception as exc:
            store.emit_failed(attempt, exc, traceback.format_exc())
            # Re-raised so Celery records the failure as usual (Flower, result backend, signals).
            raise
        store.emit_succeeded(attempt, result)
        return result


def wrap_task(task: Any) -> bool:
    """Install the fenced `run` and progress-aware `update_state` on one task; False if done already."""
    if getattr(task, _WRAPPED_MARK, False):
        return False
    original_run: Callable[..., Any] = task.run
    original_update_state: Callable[..., Any] = task.update_state

    @functools.wraps(original_run)
    def fenced_run(*args: Any, **kwargs: Any) -> Any:
        attempt = attempt_from_request(task.request)
        if attempt is None:
            return original_run(*args, **kwargs)
        return _run_attempt(attempt, original_run, args, kwargs)

    @functools.wraps(original_update_state)
    def update_state(task_id: str | None = None, state: str | None = None,
                     meta: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if current_attempt() is None or (task_id is not None and task_id != task.request.id):
            original_update_state(task_id=task_id, state=state, meta=meta, **kwargs)
            return
        if state == PROGRESS_STATE and meta is not None:
            fraction = progress.progress_fraction(meta)
            if fraction is not None:
                progress.report(fraction, str(meta.get("message") or ""))
        # No result backend configured (DisabledBackend): the event above is the report.
        with contextlib.suppress(NotImplementedError):
            original_update_state(task_id=task_id, state=state, meta=meta, **kwargs)

    task.run = fenced_run
    task.update_state = update_state
    # Bound task classes may have read acks_late before our conf change; force it per task.
    task.acks_late = True
    task.reject_on_worker_lost = False
    setattr(task, _WRAPPED_MARK, True)
    return True


def user_task_names(app: Any) -> list[str]:
    """The task names `app` registers, Celery's own `celery.*` tasks left out, sorted."""
    return sorted(name for name in app.tasks if not name.startswith("celery."))


def wrap_user_tasks(app: Any) -> list[str]:
    """Wrap every task of `app` except Celery's own built-ins; returns the names newly wrapped."""
    wrapped = []
    for name in user_task_names(app):
        if wrap_task(app.tasks[name]):
            wrapped.append(name)
    return wrapped


def not_registered_text(task_name: str, worker_id: str, registered: list[str]) -> str:
    """The error of a NotRegistered report: which task, which worker, what it does register."""
    shown = ", ".join(registered[:NAMES_SHOWN]) or "no tasks"
    more = f" and {len(registered) - NAMES_SHOWN} more" if len(registered) > NAMES_SHOWN else ""
    return (f"task {task_name!r} is not registered on worker {worker_id or '?'} "
            f"(its Celery app registers: {shown}{more})")


def force_worker_settings(conf: Any) -> None:
    """Apply the Celery settings the wire contract depends on, overriding the user's."""
    conf.task_acks_late = True
    conf.worker_prefetch_multiplier = 1
    conf.task_reject_on_worker_lost = False
    # msgpack: the scheduler hands out tasks whose queue or submission asks for it
    # (scheduler/dispatch.py); results and anything the app sends itself stay JSON.
    conf.accept_content = ["json", "msgpack"]
    conf.task_serializer = "json"
    conf.result_serializer = "json"
    conf.result_accept_content = ["json"]
    conf.broker_transport_options = {
        **dict(conf.broker_transport_options or {}),
        # No kombu ack emulation (its `unacked` hash, index and visibility-timeout restores: 8
        # Redis commands and 2 round trips of the worker per task). The scheduler already
        # redelivers what a worker never finished, as a new fenced attempt (a lost worker's
        # tasks are re-queued, a hand-out that never starts is taken back at its start
        # deadline); a message kombu restored would only be fenced off. The worker consumes
        # its own queue only, which only the scheduler writes (docs/wire-contract.md).
        "ack_emulation": False,
    }
    # A lost broker connection (a Redis restart) must not cancel running tasks: they finish and
    # report; their messages, if redelivered, are fenced off by the claim.
    conf.worker_cancel_long_running_tasks_on_connection_loss = False
    # Task events (received, started, succeeded, failed) are how Flower learns of tasks. As in
    # plain Celery they are off unless asked for (-E, the app's config): Flower turns them on by
    # itself (its `enable_events` broadcast, every 5 s), and a fleet nobody watches saves their
    # cost (about two Redis PUBLISHes and 0.1-0.2 ms of worker CPU per task: docs/benchmarks.md).
    # SWITCHYARD_TASK_EVENTS=1 turns them on from the worker's start, =0 keeps them off.
    task_events = os.environ.get(environment.TASK_EVENTS, "")
    if task_events in ("0", "1"):
        conf.worker_send_task_events = task_events == "1"


def _on_celeryd_init(sender: Any = None, conf: Any = None, **_: Any) -> None:
    if conf is not None:
        force_worker_settings(conf)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    force_worker_settings(app.conf)
    _wrapped_in_main.extend(wrap_user_tasks(app))
    if not os.environ.get(environment.AGENT_CHANNEL_FD):
        return  # not started by an agent: nothing to report, nobody to wait for
    try:
        report = WorkerReport(
            registered_tasks=tuple(user_task_names(app)),
            broker_url=str(app.conf.broker_read_url or app.conf.broker_url or ""),
            pid=os.getpid(),
            broker_master_name=str((app.conf.broker_transport_options or {}).get("master_name") or ""),
        )
        # Blocks until the agent is welcomed by the scheduler and lets this worker start.
        release = worker_handshake(report)
    except Exception:
        # Celery would log and carry on, consuming with no state Redis; the agent must see this.
        log.exception("the start-up handshake with switchyard-agent failed; exiting")
        os._exit(1)
    if release is not None:
        # Set before the pool forks, so every child inherits them.
        os.environ[environment.STATE_REDIS_URL] = release.state_redis_url
        if release.key_prefix:
            os.environ[environment.KEY_PREFIX] = release.key_prefix


def _report_turned_away(message: Any, error: BaseException, text: str) -> None:
    """Report a Switchyard message Celery will not run as a failed attempt (no claim needed)."""
    attempt = attempt_from_request(message) if message is not None else None
    if attempt is None:
        return  # a plain Celery message: Celery's own handling is all there is
    log.error("%s: reporting task %s attempt %d as failed", text, attempt.task_id, attempt.attempt)
    state_store().emit_failed(attempt, error, traceback_text="", message=text)


def _on_task_unknown(sender: Any = None, message: Any = None, name: str | None = None, **_: Any) -> None:
    from celery.exceptions import NotRegistered

    try:
        app = getattr(sender, "app", None)
        registered = user_task_names(app) if app is not None else []
        text = not_registered_text(str(name), os.environ.get(environment.WORKER_ID, ""), registered)
        _report_turned_away(message, NotRegistered(text), text)
    except Exception:
        log.exception("could not report the unregistered task %r", name)


def _on_task_rejected(sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    from celery.exceptions import InvalidTaskError

    headers = getattr(message, "headers", None)
    name = headers.get("task") if isinstance(headers, dict) else None
    worker_id = os.environ.get(environment.WORKER_ID) or "?"
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "not a task message Celery can read"
    text = f"Celery worker {worker_id} rejected the message of task {name!r}: {reason}"
    try:
        _report_turned_away(message, exc if exc is not None else InvalidTaskError(text), text)
    except Exception:
        log.exception("could not report the rejected message of task %r", name)


def _on_process_exit(**_: Any) -> None:
    try:
        flush_reports(FLUSH_ON_EXIT_SECONDS)
    except Exception:
        log.exception("could not flush buffered reports at exit")


def _on_task_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    """Report attempts whose pool child died (hard time limit, OOM kill, cancel) as failed.

    The child never reaches its own `failed` report then; Celery's main process fires
    task_failure with the request context pushed, so the sy_* headers are readable here. A pid
    file still present proves the attempt was claimed here, or was being claimed, and never
    finished (a dispatched attempt's failure is accepted too, so a claim cut short is reported
    like a run cut short). After a cancel the scheduler drops this report (the task is no longer
    on this attempt), which is harmless.
    """
    from billiard.exceptions import WorkerLostError
    from celery.exceptions import TimeLimitExceeded

    if sender is None or not isinstance(exception, WorkerLostError | TimeLimitExceeded):
        return
    try:
        attempt = attempt_from_request(sender.request)
        pid_file = attempt_pid_file(attempt) if attempt is not None else None
        if attempt is None or pid_file is None or not pid_file.exists():
            return
        pid_file.unlink(missing_ok=True)
        state_store().emit_failed(attempt, exception, traceback_text="")
    except Exception:
        log.exception("could not report the lost attempt of task %s", getattr(sender, "name", "?"))


def _on_worker_ready(**_: Any) -> None:
    # Logged here, not in worker_init: Celery configures logging only after worker_init.
    log.info(
        "switchyard: fenced %d task(s): %s", len(_wrapped_in_main), ", ".join(sorted(_wrapped_in_main))
    )


def _on_worker_process_init(**_: Any) -> None:
    from celery import current_app
    from celery.app.trace import build_tracer

    app = current_app._get_current_object()
    # A forked child inherits the wrapped tasks; a spawned one imported them afresh. Tracers
    # captured `run` before this signal fired, so rebuild those of tasks wrapped just now.
    for name in wrap_user_tasks(app):
        task = app.tasks[name]
        task.__trace__ = build_tracer(name, task, app.loader, getattr(app, "hostname", None), app=app)


# A Redis restart must not stop a busy worker (see the module).
kombu_fixes.install()

# Strong references: these handlers must stay connected for the life of the worker.
signals.celeryd_init.connect(_on_celeryd_init, weak=False)
signals.worker_init.connect(_on_worker_init, weak=False)
signals.worker_process_init.connect(_on_worker_process_init, weak=False)
signals.worker_ready.connect(_on_worker_ready, weak=False)
signals.task_failure.connect(_on_task_failure, weak=False)
signals.task_unknown.connect(_on_task_unknown, weak=False)
signals.task_rejected.connect(_on_task_rejected, weak=False)
signals.worker_process_shutdown.connect(_on_process_exit, weak=False)
signals.worker_shutdown.connect(_on_process_exit, weak=False)
