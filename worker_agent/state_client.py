"""The Celery worker's client of the state Redis: the fenced claim (which also records the start and
returns a payload stored by reference) and lifecycle reports.

Everything the worker side writes or reads in the state Redis goes through `StateStore`; the
key layout, event types and the claim script are the shared ones of `switchyard.wire`. One
store per process, created lazily after any fork (a Redis connection must never be shared
across a fork), from the environment the agent gave the worker.

While the state Redis cannot be reached:

* reports are kept in memory, in order, and written when it answers again
  (`worker_agent.report_buffer`); the task that made them is never blocked or failed by it;
* a claim waits for it, retrying with a capped backoff, for up to `CLAIM_WAIT_SECONDS` (or less,
  when the task's own hard time limit kills it first). The claim is the fence — without it an
  attempt could run twice — so an attempt never runs unclaimed; after the wait the message is
  rejected back to the broker and the scheduler's start deadline takes the hand-out back.

When Redis comes back without its data, a claim finds no task record and refuses
(`Refused.task_missing`): the message is acknowledged and nothing runs. Reports of attempts whose
task is unknown are written all the same; the scheduler drops them as stale.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from switchyard.redis_urls import close_client, sync_client
from switchyard.wire import (
    DEFAULT_KEY_PREFIX,
    EVENT_FAILED,
    EVENT_SUCCEEDED,
    FENCE_FIELD,
    HEADER_PAYLOAD_REF,
    PAYLOAD_FIELDS,
    Keys,
    claim_script,
    fence_started,
)

from worker_agent import environment
from worker_agent.attempts import Attempt
from worker_agent.report_buffer import DEFAULT_LIMIT, Report, ReportBuffer

log = logging.getLogger("switchyard.worker.state_client")

# Payload reads ride out a short Redis restart (0.05 s doubling, capped at 1 s: about 30 s).
REDIS_RETRIES = 35
CLAIM_WAIT_SECONDS = 300.0
"""How long a claim waits for an unreachable state Redis before the message goes back."""
CLAIM_RETRY_MAX_SECONDS = 2.0
# A report write tries briefly (a dropped idle connection reconnects), then the buffer takes over.
REPORT_RETRIES = 2
CONNECT_TIMEOUT_SECONDS = 5.0
"""A silently unreachable Redis (a cut network) fails a connect in seconds, not minutes."""
SOCKET_TIMEOUT_SECONDS = 15.0


class PayloadMissingError(RuntimeError):
    """The message says its payload is stored in Redis, but the key is missing or malformed."""


class SwitchyardEnvironmentError(RuntimeError):
    """A Switchyard message reached a worker that the agent did not start (no state Redis URL)."""


@dataclass(frozen=True)
class Refused:
    """The fence did not admit the attempt: it must not run here."""

    task_missing: bool
    """True when the task's record is gone (Redis lost its data, or the record expired); False
    when the fence names another attempt, or this one already started."""


@dataclass(frozen=True)
class Claimed:
    """A claimed attempt, with the payload stored by reference when the message carried none."""

    task_key: str
    stored: tuple[str | None, str | None] | None = None
    """(args_json, kwargs_json) as stored, for a payload that travels by reference."""

    def arguments(self) -> tuple[list[Any], dict[str, Any]] | None:
        """The stored args and kwargs (None when they came in the message)."""
        if self.stored is None:
            return None
        args_json, kwargs_json = self.stored
        if args_json is None and kwargs_json is None:
            raise PayloadMissingError(f"the payload in {self.task_key} is missing ({HEADER_PAYLOAD_REF}=1)")
        args = json.loads(args_json) if args_json else []
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise PayloadMissingError(f"the payload in {self.task_key} must be a JSON list and a JSON object")
        return args, kwargs


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class StateStore:
    """This process's connection to the state Redis: fence, payloads and lifecycle events.

    The claim script is a `redis.Script`, so a Redis restart that forgets loaded scripts
    (NOSCRIPT) heals itself on the next call.
    """

    def __init__(self, redis_url: str, key_prefix: str, report_buffer_limit: int = DEFAULT_LIMIT) -> None:
        timeouts: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS, "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        }
        # redis_url may be redis+sentinel://: every client then follows a failover to the new primary.
        self.client: redis.Redis = sync_client(
            redis_url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), REDIS_RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            **timeouts,
        )
        # The claim gets its own client without automatic retries: a silent re-run of the
        # script after a lost reply would read our own claim as someone else's (see claim()).
        self._claim_client: redis.Redis = sync_client(
            redis_url, decode_responses=True, retry=Retry(NoBackoff(), 0), **timeouts
        )
        self._reports_client: redis.Redis = sync_client(
            redis_url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), REPORT_RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            **timeouts,
        )
        self.keys = Keys(key_prefix)
        self._claim = self._claim_client.register_script(claim_script())
        # Any Redis error buffers: a report must outlive a restart, a failover (READONLY) or a
        # Redis still loading its data after a restart (LOADING).
        self.reports = ReportBuffer(self._write_reports, (redis.RedisError,), limit=report_buffer_limit)

    def claim(self, attempt: Attempt, wait_seconds: float = CLAIM_WAIT_SECONDS,
              meanwhile: Callable[[], object] | None = None) -> Claimed | Refused:
        """Atomically move the fence to `<attempt>:started`, recording the start; Refused if stale.

        `meanwhile` runs once, after the claim is sent and before its answer is read, so work the
        attempt needs anyway (its pid file) overlaps the round trip instead of following it; it
        must not raise.

        While Redis cannot be reached the claim retries (backoff capped at 2 s) for up to
        `wait_seconds`, then raises the connection error. If the connection broke while the script
        ran, it may have claimed without our seeing the answer; a later try then finds
        `<attempt>:started`, which is ours in that case.
        """
        task_key = self.keys.task(attempt.task_id)
        by_reference = attempt.payload_by_reference
        interrupted = False
        deadline = time.monotonic() + wait_seconds
        delay = 0.05

        def once() -> None:  # a retried claim does not repeat it
            nonlocal meanwhile
            if meanwhile is not None:
                run, meanwhile = meanwhile, None
                run()

        while True:
            try:
                args = [str(attempt.attempt), attempt.worker_id, attempt.task_id, _now(), "1" if by_reference else "0"]
                reply = self._run_claim([task_key, self.keys.notify], args, once)
                if reply != 0:
                    return Claimed(task_key, (_text(reply[1][0]), _text(reply[1][1]))) if by_reference else Claimed(task_key)
                # Our interrupted call may be the one that claimed it.
                if interrupted and self._claim_client.hget(task_key, FENCE_FIELD) == fence_started(attempt.attempt):
                    if not by_reference:
                        return Claimed(task_key)
                    args_json, kwargs_json = self.client.hmget(task_key, list(PAYLOAD_FIELDS))
                    return Claimed(task_key, (_text(args_json), _text(kwargs_json)))
                return Refused(task_missing=not self._claim_client.exists(task_key))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                if not interrupted:
                    log.warning("state Redis unreachable: the claim of task %s attempt %d waits for it "
                                "(up to %.0f s): %s", attempt.task_id, attempt.attempt, wait_seconds, exc)
                interrupted = True
                time.sleep(delay)
                delay = min(CLAIM_RETRY_MAX_SECONDS, delay * 2)

    def _run_claim(self, keys: list[str], args: list[str], meanwhile: Callable[[], object]) -> Any:
        """One run of the claim script, `meanwhile` called between sending it and reading its
        answer: the round trip that `redis.Script` makes, split in two. A Redis that
        forgot its scripts (NOSCRIPT, after a restart) gets the source on the same connection.
        Without automatic retries, as `_claim_client` is (see `__init__`)."""
        pool = self._claim_client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command("EVALSHA", self._claim.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
            meanwhile()
            try:
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                connection.send_command("EVAL", self._claim.script, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
                return connection.read_response()
        except BaseException:
            # An answer may still be on its way: this connection must not serve another call.
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(connection)

    def emit(self, event_type: str, attempt: Attempt, **fields: str) -> None:
        """Append one lifecycle event for `attempt` to the events stream (buffered while Redis is away)."""
        entry: dict[str, str] = {
            "type": event_type,
            "task_id": attempt.task_id,
            "attempt": str(attempt.attempt),
            "worker_id": attempt.worker_id,
            "ts": _now(),
            **fields,
        }
        self.reports.send(entry)

    def _write_reports(self, reports: Sequence[Report]) -> None:
        # No MAXLEN: trimming is the reader's call; an unread report must never be dropped here.
        if len(reports) == 1:
            self._reports_client.xadd(self.keys.events, dict(reports[0]))  # type: ignore[arg-type,unused-ignore]
            return
        pipeline = self._reports_client.pipeline(transaction=False)
        for report in reports:
            pipeline.xadd(self.keys.events, dict(report))  # type: ignore[arg-type,unused-ignore]
        pipeline.execute()

    def emit_succeeded(self, attempt: Attempt, result: Any) -> None:
        """Report that user code returned `result`."""
        self.emit(EVENT_SUCCEEDED, attempt, result_json=_result_json(result))

    def emit_failed(self, attempt: Attempt, error: BaseException, traceback_text: str,
                    message: str | None = None) -> None:
        """Report that the attempt failed with `error` (`traceback_text` empty when unknown);
        `message` replaces the error's own text after its type name."""
        self.emit(
            EVENT_FAILED, attempt,
            error_type=type(error).__name__,
            error_qualname=_qualified_name(type(error)),
            error=f"{type(error).__name__}: {error if message is None else message}",
            traceback=traceback_text,
        )

    def close(self) -> None:
        """Stop the report writer and drop the connections (tests; a worker just exits)."""
        self.reports.close()
        for client in (self.client, self._claim_client, self._reports_client):
            close_client(client)


_store: StateStore | None = None
_store_pid = 0
_store_lock = threading.Lock()


def state_store() -> StateStore:
    """This process's StateStore, created on first use after any fork."""
    global _store, _store_pid
    with _store_lock:
        if _store is None or _store_pid != os.getpid():
            redis_url = os.environ.get(environment.STATE_REDIS_URL, "")
            if not redis_url:
                raise SwitchyardEnvironmentError(
                    f"{environment.STATE_REDIS_URL} is not set: run this Celery worker under "
                    "switchyard-agent, which sets it from the scheduler's welcome"
                )
            _store = StateStore(redis_url, os.environ.get(environment.KEY_PREFIX) or DEFAULT_KEY_PREFIX)
            _store_pid = os.getpid()
        return _store


def flush_reports(timeout: float) -> bool:
    """Give this process's buffered reports up to `timeout` seconds to reach Redis; True when none
    are left. For process exit: what is still buffered then is lost."""
    with _store_lock:
        store = _store if _store_pid == os.getpid() else None
    if store is None or not store.reports.pending:
        return True
    log.warning("waiting up to %.0f s for %d buffered report(s) to reach the state Redis",
                timeout, store.reports.pending)
    if store.reports.flush(timeout):
        return True
    log.error("%d lifecycle report(s) could not be written before exit and are lost", store.reports.pending)
    return False


def _result_json(value: Any) -> str:
    """JSON text of a return value; its repr as a JSON string when it is not JSON-serialisable."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _qualified_name(kind: type) -> str:
    """`module.QualName` of an exception type ("ValueError" for builtins), so retry policies can
    name either the bare class or the fully qualified one."""
    module = kind.__module__
    return kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"


def _now() -> str:
    return repr(time.time())
