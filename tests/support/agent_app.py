"""A tiny, unmodified Celery app for worker-side tests: no Switchyard imports anywhere.

The broker URL comes from AGENT_TEST_BROKER_URL. Tasks record each run in the Redis list
`runs` (RPUSH) so a test can count executions independently of lifecycle events.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

BROKER_URL = os.environ.get("AGENT_TEST_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("agent_app", broker=BROKER_URL)
app.conf.task_serializer = "json"
app.conf.accept_content = ["json"]

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER_URL, decode_responses=True)
    return _client


@app.task(name="agent_app.record")
def record(tag: str) -> dict[str, Any]:
    """Record one run of `tag` and return it."""
    _redis().rpush("runs", tag)
    return {"tag": tag, "pid": os.getpid()}


@app.task(name="agent_app.add")
def add(x: int, y: int) -> int:
    _redis().rpush("runs", f"add:{x}:{y}")
    return x + y


@app.task(name="agent_app.boom")
def boom(message: str) -> None:
    _redis().rpush("runs", "boom")
    raise ValueError(message)


@app.task(bind=True, name="agent_app.progress")
def progress(self: Any, steps: int) -> str:
    for step in range(1, steps + 1):
        self.update_state(state="PROGRESS", meta={"current": step, "total": steps})
    self.update_state(state="PROGRESS", meta={"progress": 1.0, "message": "all done"})
    return "ok"


@app.task(name="agent_app.report_progress")
def report_progress() -> str:
    # Imported lazily: the user's module must import without Switchyard installed.
    from worker_agent.progress import report

    report(0.25, "a quarter")
    return "reported"


@app.task(name="agent_app.sizes")
def sizes(blob: str, *, label: str) -> dict[str, Any]:
    _redis().rpush("runs", f"sizes:{label}")
    return {"len": len(blob), "label": label}


@app.task(name="agent_app.sleep")
def sleep(seconds: float) -> str:
    _redis().rpush("runs", "sleep")
    time.sleep(seconds)
    return "slept"
