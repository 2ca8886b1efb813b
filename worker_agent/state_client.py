"""The Celery worker's client of the state Redis: the fenced claim (which also records the start and
returns a payload stored by reference) and lifecycle reports.

Everything the worker side writes or reads in the state Redis goes through `StateStore`; the
key layout, event types and the claim script are the shared ones of `switchyard.wire`. One
store per process, created lazily after any fork (a Redis connection must never be shared
across a fork), from the environment the agent gave the worker.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
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

log = logging.getLogger("switchyard.worker.state_client")

# With the backoff below (0.05 s doubling, capped at 1 s) this waits about 30 s for Redis.
REDIS_RETRIES = 35


class PayloadMissingError(RuntimeError):
    """The message says its payload is stored in Redis, but the key is missing or malformed."""


class SwitchyardEnvironmentError(RuntimeError):
    """A Switchyard message reached a worker that the agent did not start (no state Redis URL)."""


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
        self.keys = Keys(key_prefix)
        self._claim = self._claim_client.register_script(claim_script())

    def claim(self, attempt: Attempt) -> Claimed | None:
        """Atomically move the fence to `<attempt>:started`, recording the start; None if stale.

        If the connection broke while the script ran, it may have claimed without our seeing
        the answer; the retry then finds `<attempt>:started`, which is ours in that case.
        """
        task_key = self.keys.task(attempt.task_id)
        by_reference = attempt.payload_by_reference
        interrupted = False
        for delay in [*(min(1.0, 0.05 * 2**n) for n in range(REDIS_RETRIES)), None]:
            try:
                args = [str(attempt.attempt), attempt.worker_id, attempt.task_id, _now(), "1" if by_reference else "0"]
                reply = self._claim(keys=[task_key, self.keys.notify], args=args)
                if reply != 0:
                    return Claimed(task_key, (_text(reply[1][0]), _text(reply[1][1]))) if by_reference else Claimed(task_key)
                if not interrupted:
                    return None
                # Our interrupted call may be the one that claimed it.
                if self._claim_client.hget(task_key, FENCE_FIELD) != fence_started(attempt.attempt):
                    return None
                if not by_reference:
                    return Claimed(task_key)
                args_json, kwargs_json = self.client.hmget(task_key, list(PAYLOAD_FIELDS))
                return Claimed(task_key, (_text(args_json), _text(kwargs_json)))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if delay is None:
                    raise
                interrupted = True
                log.warning("claim of task %s attempt %d failed (%s); retrying in %.2f s",
                            attempt.task_id, attempt.attempt, exc, delay)
                time.sleep(delay)
        return None

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
        self.client.xadd(self.keys.events, entry)  # type: ignore[arg-type,unused-ignore]

    def emit_succeeded(self, attempt: Attempt, result: Any) -> None:
        """Report that user code returned `result`."""
        self.emit(EVENT_SUCCEEDED, attempt, result_json=_result_json(result))

    def emit_failed(self, attempt: Attempt, error: BaseException, traceback_text: str) -> None:
        """Report that the attempt failed with `error` (`traceback_text` empty when unknown)."""
        self.emit(
            EVENT_FAILED, attempt,
            error_type=type(error).__name__,
            error_qualname=_qualified_name(type(error)),
            error=f"{type(error).__name__}: {error}",
            traceback=traceback_text,
        )


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
