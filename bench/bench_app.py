"""The ordinary Celery app the dispatch benchmark runs, both under switchyard-agent and raw.

Nothing in it knows about Switchyard. Its one task, `bench.noop(sent_at, phase)`, records when
user code started and returns at once: RPUSH of the JSON list
`[celery_id, sent_at, started, finished]` (Unix seconds from `time.time()`) to
`bench:runs:<phase>` in the broker's Redis (or in `BENCH_RECORD_URL` when set), so the
benchmark measures from the client's send time to the moment user code really ran,
independent of what the scheduler reports.

The worker settings match what switchyard-agent forces on the workers it supervises (late
acks, prefetch multiplier 1, JSON only), so the raw Celery baseline differs from the
Switchyard path by the scheduler alone, not by delivery semantics.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
RECORD_URL = os.environ.get("BENCH_RECORD_URL") or BROKER_URL
RUNS_KEY_PREFIX = "bench:runs:"

app = Celery("bench_app", broker=BROKER_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

_recorder: redis.Redis | None = None
_recorder_pid: int | None = None


def _redis() -> redis.Redis:
    """One client per process: prefork children must not share the parent's socket."""
    global _recorder, _recorder_pid
    if _recorder is None or _recorder_pid != os.getpid():
        _recorder = redis.Redis.from_url(RECORD_URL)
        _recorder_pid = os.getpid()
    return _recorder


@app.task(name="bench.noop", bind=True)
def noop(self: Any, sent_at: float, phase: str = "default") -> None:
    """Record the start time (and the send time it was given), then return."""
    started = time.time()
    record = json.dumps([self.request.id, float(sent_at), started, time.time()])
    _redis().rpush(RUNS_KEY_PREFIX + phase, record)
