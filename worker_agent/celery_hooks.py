"""The Celery integration of the worker side (docs/wire-contract.md), attached through signals.

Importing this module connects Celery signals; `worker_agent.celery_boot` imports it before
Celery loads the user's app, so the user's code needs no change. What it does:

* `celeryd_init` forces the settings Switchyard relies on: late acks, prefetch 1, no requeue
  when a pool child dies (the scheduler re-dispatches with a new attempt instead), JSON only,
  and one visibility timeout for the whole fleet.
* `worker_init` (main process, after the user's task modules are imported and before the pool
  forks or any tracer is built) replaces every user task's `run` with a fenced wrapper;
  prefork children inherit it. `worker_process_init` repeats the wrapping idempotently and
  rebuilds the tracers, for pools whose children import the app afresh (spawn).
* The wrapper reads the attempt from the `sy_*` headers (`worker_agent.attempts`). A message
  without them runs unchanged, so plain Celery use keeps working. Otherwise it claims the
  attempt through `worker_agent.state_client`; a stale attempt raises `Ignore` (Celery acks
  the message, nothing runs). A claimed attempt is recorded as running (pid file), loads a
  by-reference payload, runs the user's code and reports `succeeded` or `failed`.
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
from typing import Any

import redis
from celery import signals
from celery.exceptions import Ignore, Reject
from switchyard.wire import DEFAULT_VISIBILITY_TIMEOUT_SECONDS

from worker_agent import environment, progress
from worker_agent.attempts import (
    Attempt,
    attempt_from_request,
    attempt_pid_file,
    current_attempt,
    running,
)
from worker_agent.state_client import state_store

log = logging.getLogger("switchyard.worker.celery_hooks")

PROGRESS_STATE = "PROGRESS"
"""The `update_state` state whose meta becomes a Switchyard progress report."""

_WRAPPED_MARK = "_switchyard_wrapped"
_wrapped_in_main: list[str] = []


def _run_attempt(attempt: Attempt, original_run: Callable[..., Any],
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    store = state_store()
    try:
        claimed = store.claim(attempt)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # State Redis unreachable: put the message back rather than lose the hand-out.
        log.error("state Redis unreachable; requeueing task %s attempt %d: %s",
                  attempt.task_id, attempt.attempt, exc)
        raise Reject(f"state Redis unreachable: {exc}", requeue=True) from exc
    if claimed is None:
        log.info(
            "stale attempt %s of task %s (fence moved on or already started); acking without running",
            attempt.attempt, attempt.task_id,
        )
        raise Ignore()
    with running(attempt):
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


def wrap_user_tasks(app: Any) -> list[str]:
    """Wrap every task of `app` except Celery's own built-ins; returns the names newly wrapped."""
    wrapped = []
    for name, task in list(app.tasks.items()):
        if name.startswith("celery."):
            continue
        if wrap_task(task):
            wrapped.append(name)
    return wrapped


def force_worker_settings(conf: Any) -> None:
    """Apply the Celery settings the wire contract depends on, overriding the user's."""
    visibility_timeout = int(
        os.environ.get(environment.VISIBILITY_TIMEOUT) or DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    )
    conf.task_acks_late = True
    conf.worker_prefetch_multiplier = 1
    conf.task_reject_on_worker_lost = False
    conf.accept_content = ["json"]
    conf.task_serializer = "json"
    conf.result_serializer = "json"
    conf.result_accept_content = ["json"]
    conf.broker_transport_options = {
        **dict(conf.broker_transport_options or {}),
        "visibility_timeout": visibility_timeout,
    }


def _on_celeryd_init(sender: Any = None, conf: Any = None, **_: Any) -> None:
    if conf is not None:
        force_worker_settings(conf)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    force_worker_settings(app.conf)
    _wrapped_in_main.extend(wrap_user_tasks(app))


def _on_task_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    """Report attempts whose pool child died (hard time limit, OOM kill, cancel) as failed.

    The child never reaches its own `failed` report then; Celery's main process fires
    task_failure with the request context pushed, so the sy_* headers are readable here. A pid
    file still present proves the attempt started here and never finished. After a cancel the
    scheduler drops this report (the task is no longer on this attempt), which is harmless.
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


# Strong references: these handlers must stay connected for the life of the worker.
signals.celeryd_init.connect(_on_celeryd_init, weak=False)
signals.worker_init.connect(_on_worker_init, weak=False)
signals.worker_process_init.connect(_on_worker_process_init, weak=False)
signals.worker_ready.connect(_on_worker_ready, weak=False)
signals.task_failure.connect(_on_task_failure, weak=False)
