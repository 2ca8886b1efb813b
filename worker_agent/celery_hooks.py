"""The Celery-side half of the wire contract (docs/wire-contract.md), attached through signals.

Importing this module connects Celery signals; `worker_agent.celery_boot` imports it before
Celery loads the user's app, so the user's code needs no change. What it does:

* `celeryd_init` forces the settings Switchyard relies on: late acks, prefetch 1, no requeue
  when a pool child dies (the scheduler re-dispatches with a new attempt instead), JSON only,
  and one visibility timeout for the whole fleet.
* `worker_init` (main process, after the user's task modules are imported and before the pool
  forks or any tracer is built) replaces every user task's `run` with a fenced wrapper;
  prefork children inherit it. `worker_process_init` repeats the wrapping idempotently and
  rebuilds the tracers, for pools whose children import the app afresh (spawn).
* The wrapper reads the `sy_*` headers. A message without `sy_task_id` runs unchanged, so
  plain Celery use keeps working. Otherwise it claims the attempt with the fence script; a
  stale attempt raises `Ignore` (Celery acks the message, nothing runs). A claimed attempt
  writes its pid file, loads a by-reference payload, runs the user's code and appends
  `succeeded` or `failed` to the lifecycle stream.
* `task.update_state(state="PROGRESS", ...)` inside a Switchyard attempt also appends a
  `progress` event; `worker_agent.progress.report` does the same without a result backend.
* `task_failure` in the main process reports attempts whose pool child died (hard time
  limit, OOM kill) as `failed`, since the child could not report them itself.

Celery puts custom message headers both on `task.request` as attributes and in
`task.request.headers` (verified with Celery 5.7, protocol 2); the wrapper reads either.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import signals
from celery.exceptions import Ignore, Reject
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

log = logging.getLogger("switchyard.worker")

DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 43200
# With the backoff below (0.05 s doubling, capped at 1 s) this waits about 30 s for Redis.
REDIS_RETRIES = 35
PROGRESS_STATE = "PROGRESS"

# The claim script is the contract's, verbatim: the one place "may this attempt run?" is decided.
CLAIM_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ':started')
redis.call('XADD', KEYS[2], '*', 'type', 'started', 'task_id', ARGV[3],
           'attempt', ARGV[1], 'worker_id', ARGV[2], 'ts', ARGV[4])
return 1
"""

_WRAPPED_MARK = "_switchyard_wrapped"


@dataclass(frozen=True)
class Attempt:
    """The Switchyard attempt a task execution belongs to, from its message headers."""

    task_id: str
    attempt: int
    worker_id: str
    payload_by_reference: bool


class StateStore:
    """This process's connection to the state Redis: fence, payloads and lifecycle events.

    One per process, created lazily after fork (a Redis connection must never be shared
    across a fork). The claim script is a `redis.Script`, so a Redis restart that forgets
    loaded scripts (NOSCRIPT) heals itself on the next call.
    """

    def __init__(self, redis_url: str, key_prefix: str) -> None:
        # Retries ride out a Redis restart or failover (~30 s) instead of failing the task:
        # a lost `succeeded` report would leave the task running forever in the scheduler's view.
        self.client: redis.Redis = redis.Redis.from_url(
            redis_url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), REDIS_RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        # The claim gets its own client without automatic retries: a silent re-run of the
        # script after a lost reply would read our own claim as someone else's (see claim()).
        self._claim_client: redis.Redis = redis.Redis.from_url(
            redis_url, decode_responses=True, retry=Retry(NoBackoff(), 0)
        )
        self.key_prefix = key_prefix
        self._claim = self._claim_client.register_script(CLAIM_SCRIPT)

    @property
    def events_key(self) -> str:
        return f"{self.key_prefix}:events"

    def claim(self, attempt: Attempt) -> bool:
        """Atomically move the fence to `<attempt>:started` and emit `started`; False if stale.

        If the connection broke while the script ran, it may have claimed without our seeing
        the answer; the retry then finds `<attempt>:started`, which is ours in that case.
        """
        fence_key = f"{self.key_prefix}:fence:{attempt.task_id}"
        keys = [fence_key, self.events_key]
        interrupted = False
        for delay in [*(min(1.0, 0.05 * 2**n) for n in range(REDIS_RETRIES)), None]:
            try:
                if int(self._claim(keys=keys, args=self._claim_args(attempt))) == 1:
                    return True
                if not interrupted:
                    return False
                # Our interrupted call may be the one that claimed it.
                return self._claim_client.get(fence_key) == f"{attempt.attempt}:started"
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if delay is None:
                    raise
                interrupted = True
                log.warning("claim of task %s attempt %d failed (%s); retrying in %.2f s",
                            attempt.task_id, attempt.attempt, exc, delay)
                time.sleep(delay)
        return False

    @staticmethod
    def _claim_args(attempt: Attempt) -> list[str]:
        return [str(attempt.attempt), attempt.worker_id, attempt.task_id, _now()]

    def load_payload(self, task_id: str) -> tuple[list[Any], dict[str, Any]]:
        """Args and kwargs stored once by the scheduler for a large payload."""
        key = f"{self.key_prefix}:payload:{task_id}"
        args_json, kwargs_json = self.client.hmget(key, ["args_json", "kwargs_json"])
        if args_json is None and kwargs_json is None:
            raise PayloadMissingError(f"payload {key} is missing (sy_payload_ref=1)")
        args = json.loads(args_json) if args_json else []
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise PayloadMissingError(f"payload {key} must hold a JSON list and a JSON object")
        return args, kwargs

    def emit(self, event_type: str, attempt: Attempt, **fields: str) -> None:
        """Append one lifecycle event for `attempt` to the events stream."""
        entry: dict[str, str] = {
            "type": event_type,
            "task_id": attempt.task_id,
            "attempt": str(attempt.attempt),
            "worker_id": attempt.worker_id,
            "ts": _now(),
            **fields,
        }
        # No MAXLEN: trimming is the reader's call; an unread report must never be dropped here.
        self.client.xadd(self.events_key, entry)  # type: ignore[arg-type,unused-ignore]


class PayloadMissingError(RuntimeError):
    """The message says its payload is stored in Redis, but the key is missing or malformed."""


class SwitchyardEnvironmentError(RuntimeError):
    """A Switchyard message reached a worker that the agent did not start (no state Redis URL)."""


_store: StateStore | None = None
_store_pid = 0
_store_lock = threading.Lock()
_running = threading.local()
_wrapped_in_main: list[str] = []


def state_store() -> StateStore:
    """This process's StateStore, created on first use after any fork."""
    global _store, _store_pid
    with _store_lock:
        if _store is None or _store_pid != os.getpid():
            redis_url = os.environ.get("SWITCHYARD_STATE_REDIS_URL", "")
            if not redis_url:
                raise SwitchyardEnvironmentError(
                    "SWITCHYARD_STATE_REDIS_URL is not set: run this Celery worker under "
                    "switchyard-agent, which sets it from the scheduler's welcome"
                )
            _store = StateStore(redis_url, os.environ.get("SWITCHYARD_KEY_PREFIX") or "sy")
            _store_pid = os.getpid()
        return _store


def current_attempt() -> Attempt | None:
    """The Switchyard attempt running in this thread, or None outside one."""
    attempt: Attempt | None = getattr(_running, "attempt", None)
    return attempt


def attempt_from_request(request: Any) -> Attempt | None:
    """The attempt named by a task request's `sy_*` headers; None for plain Celery messages."""
    headers = getattr(request, "headers", None)
    header_map: Mapping[str, Any] = headers if isinstance(headers, Mapping) else {}

    def header(name: str) -> Any:
        value = getattr(request, name, None)
        return value if value is not None else header_map.get(name)

    task_id = header("sy_task_id")
    if not task_id:
        return None
    worker_id = os.environ.get("SWITCHYARD_WORKER_ID") or str(header("sy_worker_id") or "")
    return Attempt(
        task_id=str(task_id),
        attempt=int(header("sy_attempt") or 0),
        worker_id=worker_id,
        payload_by_reference=str(header("sy_payload_ref") or "0") in ("1", "true", "True"),
    )


def progress_fraction(meta: Mapping[str, Any]) -> float | None:
    """Progress in 0..1 from `{"progress": p}` or `{"current": c, "total": t}`; None if absent."""
    try:
        if meta.get("progress") is not None:
            fraction = float(meta["progress"])
        elif meta.get("current") is not None and meta.get("total"):
            fraction = float(meta["current"]) / float(meta["total"])
        else:
            return None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return min(1.0, max(0.0, fraction))


def report_progress(fraction: float, message: str = "") -> bool:
    """Emit a `progress` event for the attempt running in this thread; False outside one."""
    attempt = current_attempt()
    if attempt is None:
        return False
    state_store().emit(
        "progress", attempt, progress=repr(min(1.0, max(0.0, float(fraction)))), message=message
    )
    return True


def result_json(value: Any) -> str:
    """JSON text of a return value; its repr as a JSON string when it is not JSON-serialisable."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _pid_file(attempt: Attempt) -> Path | None:
    run_dir = os.environ.get("SWITCHYARD_RUN_DIR")
    if not run_dir:
        return None
    return Path(run_dir) / f"{attempt.task_id}.{attempt.attempt}.pid"


def _run_attempt(task: Any, attempt: Attempt, original_run: Callable[..., Any],
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    store = state_store()
    try:
        claimed = store.claim(attempt)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # State Redis unreachable: put the message back rather than lose the hand-out.
        log.error("state Redis unreachable; requeueing task %s attempt %d: %s",
                  attempt.task_id, attempt.attempt, exc)
        raise Reject(f"state Redis unreachable: {exc}", requeue=True) from exc
    if not claimed:
        log.info(
            "stale attempt %s of task %s (fence moved on or already started); acking without running",
            attempt.attempt, attempt.task_id,
        )
        raise Ignore()
    pid_file = _pid_file(attempt)
    if pid_file is not None:
        pid_file.write_text(str(os.getpid()))
    _running.attempt = attempt
    try:
        try:
            if attempt.payload_by_reference:
                stored_args, stored_kwargs = store.load_payload(attempt.task_id)
                args, kwargs = tuple(stored_args), stored_kwargs
            result = original_run(*args, **kwargs)
        except Exception as exc:
            store.emit(
                "failed", attempt,
                error_type=type(exc).__name__,
                error_qualname=_qualified_name(type(exc)),
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            # Re-raised so Celery records the failure as usual (Flower, result backend, signals).
            raise
        store.emit("succeeded", attempt, result_json=result_json(result))
        return result
    finally:
        _running.attempt = None
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)


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
        return _run_attempt(task, attempt, original_run, args, kwargs)

    @functools.wraps(original_update_state)
    def update_state(task_id: str | None = None, state: str | None = None,
                     meta: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        attempt = current_attempt()
        if attempt is None or (task_id is not None and task_id != task.request.id):
            original_update_state(task_id=task_id, state=state, meta=meta, **kwargs)
            return
        if state == PROGRESS_STATE and meta is not None:
            fraction = progress_fraction(meta)
            if fraction is not None:
                report_progress(fraction, str(meta.get("message") or ""))
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
        os.environ.get("SWITCHYARD_VISIBILITY_TIMEOUT") or DEFAULT_VISIBILITY_TIMEOUT_SECONDS
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
        pid_file = _pid_file(attempt) if attempt is not None else None
        if attempt is None or pid_file is None or not pid_file.exists():
            return
        pid_file.unlink(missing_ok=True)
        state_store().emit(
            "failed", attempt,
            error_type=type(exception).__name__,
            error_qualname=_qualified_name(type(exception)),
            error=f"{type(exception).__name__}: {exception}",
            traceback="",
        )
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


def _now() -> str:
    return repr(time.time())


def _qualified_name(kind: type) -> str:
    """`module.QualName` of an exception type ("ValueError" for builtins), so retry policies can
    name either the bare class or the fully qualified one."""
    module = kind.__module__
    return kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
