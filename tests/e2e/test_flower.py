"""Flower keeps working: tasks Switchyard hands out show up in Flower with their worker and state.

The scheduler publishes each hand-out's Celery message from a Lua script, so no Celery client
ever sends a `task-sent` event; Flower learns of a task only from the worker's own task events,
which are off by default (as in plain Celery) until Flower turns them on with its periodic
`enable_events` broadcast. This test runs the real Flower (PyPI `flower`) on the fleet's broker,
with workers started as the agent starts them by default, submits work through Switchyard and
reads Flower's HTTP API the way an operator's script would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from switchyard.wire import worker_queue

from tests.support.redis_server import env_without_switchyard, free_port, wait_until
from tests.support.stack import REPO_ROOT, VENV_BIN, S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


class Flower:
    """One `celery flower` process on the stack's broker, its log beside the stack's logs."""

    def __init__(self, stack: Stack) -> None:
        self.port = free_port()
        env = env_without_switchyard()
        # Flower 2 serves its API only with auth configured or this set: a test on loopback.
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
        env["PYTHONUNBUFFERED"] = "1"
        # The broker as deploy/compose gives it to the Flower image (its CMD: celery flower).
        env["CELERY_BROKER_URL"] = stack.redis_url
        self.log_path = stack.workdir / "flower.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "celery"), "flower", "--address=127.0.0.1", f"--port={self.port}"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                start_new_session=True,
            )

    def get(self, path: str) -> Any:
        """GET one API path; None while Flower is not answering yet."""
        if self.proc.poll() is not None:
            raise AssertionError(f"flower exited with {self.proc.returncode}; see {self.log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as reply:
                return json.loads(reply.read())
        except (urllib.error.URLError, ConnectionError):
            return None

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left."""
        for sig, wait_seconds in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(wait_seconds)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


@pytest.fixture()
def flower(stack: Stack) -> Iterator[Flower]:
    running = Flower(stack)
    try:
        yield running
    finally:
        running.stop()


def test_flower_shows_switchyard_tasks_with_their_worker_and_state(stack: Stack, flower: Flower) -> None:
    # INFO: the workers log the moment Flower turns their task events on (waited for below).
    info = ("--loglevel", "INFO")
    stack.add_worker("gpu1", "gpu", concurrency=2, simulate_gpu="1xA100:40960", extra_celery_args=info)
    stack.add_worker("cpu1", "cpu", concurrency=2, extra_celery_args=info)
    stack.wait_workers_connected(["gpu1", "cpu1"])

    # Flower's event receiver is live once it has heard both workers' heartbeat events; the
    # tasks are submitted only then, since events sent before it listened are gone.
    def both_alive() -> dict[str, bool] | None:
        alive = flower.get("/api/workers?status=true") or {}
        nodes = {name.split("@", 1)[0]: up for name, up in alive.items()}
        return alive if nodes.get("gpu1") and nodes.get("cpu1") else None

    wait_until(both_alive, timeout=30, interval=0.2, message="Flower to hear both workers")
    # Task events start off (Celery's default); Flower's enable_events broadcast (every 5 s)
    # turns them on, and each worker logs it.
    enabled = "Events of group {task} enabled by remote."
    for worker_id in ("gpu1", "cpu1"):
        log_path = stack.workers[worker_id].log_path
        wait_until(lambda path=log_path: enabled in path.read_text(errors="replace"), timeout=30,
                   interval=0.2, message=f"Flower to turn on task events in {worker_id}")

    submitted = {
        stack.submit("e2e.sleep", [0.1, "video"], content_type="video").task_id: "gpu1",
        stack.submit("e2e.sleep", [0.1, "text"], content_type="text").task_id: "cpu1",
    }
    finished = stack.wait_all(submitted, S.TASK_STATE_SUCCEEDED, timeout=30)
    # A hand-out's Celery task id is <task_id>-<attempt> (docs/wire-contract.md).
    celery_ids = {f"{task_id}-{task.attempt}": submitted[task_id] for task_id, task in finished.items()}
    for task_id, task in finished.items():
        assert task.worker_id == submitted[task_id], task

    def all_succeeded_in_flower() -> dict[str, Any] | None:
        listed = flower.get("/api/tasks") or {}
        seen = {cid: listed[cid] for cid in celery_ids if cid in listed}
        done = len(seen) == len(celery_ids) and all(t.get("state") == "SUCCESS" for t in seen.values())
        return seen if done else None

    try:
        seen = wait_until(all_succeeded_in_flower, timeout=30, interval=0.2,
                          message="Flower to list both tasks as SUCCESS")
    except AssertionError:
        raise AssertionError(f"Flower's /api/tasks: {flower.get('/api/tasks')}") from None
    for celery_id, worker_id in celery_ids.items():
        task = seen[celery_id]
        assert task["name"] == "e2e.sleep", task
        assert task["worker"].split("@", 1)[0] == worker_id, task
        # The per-task view agrees, and carries the task's result as the worker reported it.
        info = flower.get(f"/api/task/info/{celery_id}")
        assert info["state"] == "SUCCESS" and info["worker"] == task["worker"], info
        assert f"'worker': '{worker_id}'" in str(info["result"]), info

    # Inspecting the workers (a remote-control broadcast over the broker) shows each on its own
    # queue only. A broadcast collects the replies that come within Flower's inspect timeout
    # (1 s), which a busy machine can miss: ask again until both have answered.
    def queues_by_worker() -> dict[str, list[str]] | None:
        workers = flower.get("/api/workers?refresh=true") or {}
        queues = {
            name.split("@", 1)[0]: sorted(q["name"] for q in info.get("active_queues") or [])
            for name, info in workers.items()
        }
        return queues if {"gpu1", "cpu1"} <= {n for n, q in queues.items() if q} else None

    queues = wait_until(queues_by_worker, timeout=30, interval=0.2, message="Flower to inspect both workers")
    assert queues["gpu1"] == [worker_queue("gpu1")], queues
    assert queues["cpu1"] == [worker_queue("cpu1")], queues
