"""The ordinary Celery app the end-to-end tests run under `switchyard-agent`.

Nothing in it knows the scheduler's internals: it is what a user would write. Every task that does
work records it in the broker's Redis so a test can see *where* and *when* user code really
ran, independent of what the scheduler reports:

* `e2e:runs`  — RPUSH of a JSON record when user code starts;
* `e2e:done`  — RPUSH of the same record when user code reaches its end;
* `e2e:content_types` — HSET celery id -> the content type of the message Celery received
  (json or msgpack: how the message travelled, which user code cannot see).

A record is `{"tag", "worker", "pid", "celery_id", "attempt", "ts"}`; `celery_id` is
`<task_id>-<attempt>` by the wire contract and `attempt` comes from the attempt header
(`switchyard.wire.HEADER_ATTEMPT`) when Celery exposes it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import signals
from switchyard.wire import HEADER_ATTEMPT

from tests.support.apps import broker_redis, json_app

app = json_app("e2e_app")

GHOST_TASKS_ENV = "E2E_GHOST_TASKS"
"""Comma-separated task names this app drops from its registry once its worker has reported
them to its agent: the worker then advertises names its Celery consumer turns away, which is
how a test makes the scheduler hand a worker a task it does not register."""

RUNS_KEY = "e2e:runs"
DONE_KEY = "e2e:done"
CONTENT_TYPES_KEY = "e2e:content_types"
GATE_PREFIX = "e2e:gate:"


def _attempt(request: Any) -> int | None:
    value = getattr(request, HEADER_ATTEMPT, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER_ATTEMPT)
    if value is None and request.id and "-" in request.id:
        value = request.id.rsplit("-", 1)[1]
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _record(key: str, request: Any, tag: str) -> dict[str, Any]:
    record = {
        "tag": tag,
        "worker": os.environ.get("SWITCHYARD_WORKER_ID", ""),
        "pid": os.getpid(),
        "celery_id": request.id,
        "attempt": _attempt(request),
        "ts": time.time(),
    }
    broker_redis().rpush(key, json.dumps(record))
    return record


@app.task(name="e2e.sleep", bind=True)
def sleep(self: Any, seconds: float, tag: str = "") -> dict[str, Any]:
    """Sleep `seconds`, recording start and end."""
    _record(RUNS_KEY, self.request, tag)
    time.sleep(float(seconds))
    _record(DONE_KEY, self.request, tag)
    return {"tag": tag, "worker": os.environ.get("SWITCHYARD_WORKER_ID", "")}


@app.task(name="e2e.gate", bind=True)
def gate(self: Any, name: str, timeout: float = 60.0, tag: str = "") -> dict[str, Any]:
    """Hold a worker slot until the test opens gate `name` (SET e2e:gate:<name>)."""
    _record(RUNS_KEY, self.request, tag or name)
    deadline = time.monotonic() + float(timeout)
    while time.monotonic() < deadline and not broker_redis().exists(GATE_PREFIX + name):
        time.sleep(0.05)
    _record(DONE_KEY, self.request, tag or name)
    return {"tag": tag or name, "worker": os.environ.get("SWITCHYARD_WORKER_ID", "")}


@app.task(name="e2e.fail")
def fail(message: str) -> None:
    """Always raises ValueError(message)."""
    raise ValueError(message)


@app.task(name="e2e.progress", bind=True)
def progress(self: Any, steps: int, delay: float, tag: str = "") -> dict[str, Any]:
    """Report progress i/steps after each of `steps` sleeps of `delay` seconds."""
    _record(RUNS_KEY, self.request, tag)
    for i in range(1, int(steps) + 1):
        time.sleep(float(delay))
        self.update_state(state="PROGRESS", meta={"progress": i / steps, "message": f"step {i}"})
    _record(DONE_KEY, self.request, tag)
    return {"tag": tag, "steps": steps}


@app.task(name="e2e.payload_len")
def payload_len(data: str) -> int:
    """Length of the (large) string argument."""
    return len(data)


@app.task(name="e2e.echo")
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments unchanged."""
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="e2e.load_model")
def load_model(name: str) -> str:
    """Pretend to load a model, then advertise it as a runtime worker label (the opt-in API)."""
    from worker_agent.labels import set_label

    set_label("model", name)
    return name


@app.task(name="e2e.wait_file")
def wait_file(path: str, timeout: float = 60.0) -> str:
    """Wait until file `path` exists, then return it; touches no Redis, so it runs on while the
    test has Redis down."""
    deadline = time.monotonic() + float(timeout)
    while time.monotonic() < deadline and not os.path.exists(path):
        time.sleep(0.05)
    return path


@app.task(name="e2e.ghost")
def ghost() -> str:
    """A task a worker started with E2E_GHOST_TASKS=e2e.ghost reports but cannot run."""
    return "boo"


@signals.worker_init.connect(weak=False)
def _drop_ghost_tasks(sender: Any = None, **_: Any) -> None:
    # Connected after Switchyard's hooks (imported before this app), so it runs after the worker
    # reported its task names and before Celery's consumer reads the registry.
    for name in filter(None, os.environ.get(GHOST_TASKS_ENV, "").split(",")):
        app.tasks.pop(name, None)


@signals.task_received.connect(weak=False)
def _record_content_type(request: Any = None, **_: Any) -> None:
    # The worker's main process, once per message it accepted: what the serializer really was.
    if request is not None:
        broker_redis().hset(CONTENT_TYPES_KEY, request.id, request.content_type or "")
