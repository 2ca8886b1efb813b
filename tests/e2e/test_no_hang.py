"""Issue 9 item 4, scheduler side: no task hangs on a worker that cannot or does not run it.

* A worker whose Celery app does not register a task's name (here: the seed pipelines' app,
  which has no `e2e.sleep`) is never handed that task once its agent reported what it
  registers; ExplainPlacement says why, and the task runs on a worker that has it.
* A hand-out that is never started (the worker's Celery processes frozen with SIGSTOP while its
  agent keeps heartbeating, so the worker is not lost) goes back to pending after the start
  deadline and runs on another worker; the frozen worker's stale message, consumed once it is
  thawed, is refused by the fenced claim, so the task ran exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.redis_server import wait_until
from tests.support.stack import S, Stack, WorkerProc

pytestmark = [pytest.mark.slow]

START_DEADLINE = 3.0


def explain(stack: Stack, **request: object) -> pb.ExplainPlacementResponse:
    return stack.stub.ExplainPlacement(pb.ExplainPlacementRequest(**request), timeout=10)


def verdict_of(explained: pb.ExplainPlacementResponse, worker_id: str) -> pb.WorkerVerdict:
    return next(v for v in explained.workers if v.worker_id == worker_id)


def celery_pids(worker: WorkerProc) -> list[int]:
    """The Celery main process and pool children of a stack worker: its process group but the agent."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == worker.proc.pid:
            continue
        with contextlib.suppress(OSError):
            # Fields after the parenthesised command name: state, ppid, pgrp, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == worker.pgid:
                pids.append(int(entry.name))
    return pids


def signal_celery(worker: WorkerProc, sig: int) -> None:
    for pid in celery_pids(worker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@pytest.mark.timeout(120)
def test_a_task_is_never_placed_on_a_worker_that_does_not_register_it(stack: Stack) -> None:
    stack.add_worker("a-seed", "cpu", concurrency=2, app="tests.support.seed_app")
    stack.add_worker("b-e2e", "cpu", concurrency=1)
    stack.wait_workers_connected(["a-seed", "b-e2e"])
    request = stack.submit_request("e2e.sleep", [0.05, "registered"])

    # The event to wait on: the seed worker's agent has reported the names its Celery app registers.
    def seed_rejected() -> pb.WorkerVerdict | None:
        verdict = verdict_of(explain(stack, task=request), "a-seed")
        return verdict if verdict.rejected_by == "registered" else None

    verdict = wait_until(seed_rejected, timeout=45, interval=0.2, message="a-seed to report its registered tasks")
    assert verdict.rejection_reason == "task 'e2e.sleep' is not registered on this worker"

    # a-seed is the emptier worker and sorts first: without the filter it would be chosen.
    task_ids = [stack.submit("e2e.sleep", [0.05, f"registered-{n}"]).task_id for n in range(3)]
    finished = stack.wait_all(task_ids, S.TASK_STATE_SUCCEEDED, timeout=60)
    assert {t.worker_id for t in finished.values()} == {"b-e2e"}
    assert {t.attempt for t in finished.values()} == {1}
    by_id = explain(stack, task_id=task_ids[0])
    assert verdict_of(by_id, "a-seed").rejection_reason == "task 'e2e.sleep' is not registered on this worker"
    # Names it does register still go there.
    seed_task = stack.submit("auteur.tasks.misc.report", [0.05, "probe"]).task_id
    assert stack.wait_state(seed_task, S.TASK_STATE_SUCCEEDED, timeout=30).worker_id == "a-seed"


@pytest.mark.timeout(120)
@pytest.mark.scheduler_env(SWITCHYARD_START_DEADLINE_SECONDS=str(START_DEADLINE), SWITCHYARD_START_DEADLINE_RETURNS="3")
def test_a_hand_out_never_started_goes_back_and_runs_elsewhere_once(stack: Stack) -> None:
    frozen = stack.add_worker("a-frozen", "cpu", concurrency=1, labels={"host": "a"})
    stack.add_worker("b-live", "cpu", concurrency=1)
    stack.wait_workers_connected(["a-frozen", "b-live"])
    # Both Celery workers consume: one probe each (the second goes to the emptier worker).
    probes = [stack.submit("e2e.sleep", [0.5, f"probe-{n}"]).task_id for n in range(2)]
    assert {t.worker_id for t in stack.wait_all(probes, timeout=60).values()} == {"a-frozen", "b-live"}

    signal_celery(frozen, signal.SIGSTOP)  # the agent keeps heartbeating: the worker is not lost
    try:
        task_id = stack.submit("e2e.sleep", [0.05, "late"]).task_id
        handed = stack.get(task_id)
        assert (handed.state, handed.worker_id, handed.attempt) == (S.TASK_STATE_DISPATCHED, "a-frozen", 1)

        final = stack.wait_state(task_id, S.TASK_STATE_SUCCEEDED, timeout=START_DEADLINE + 30)
        assert (final.worker_id, final.attempt) == ("b-live", 2), final
        assert json.loads(final.result_json) == {"tag": "late", "worker": "b-live"}
        scheduler_log = stack.scheduler_log_path.read_text(errors="replace")
        assert (f"task {task_id} (e2e.sleep) not started within 3s on worker a-frozen: back to pending, "
                "return 1 of 3") in scheduler_log
        frozen_worker = stack.list_workers()["a-frozen"]
        assert frozen_worker.status == pb.WORKER_STATUS_CONNECTED
        assert frozen_worker.free_slots == 1 and task_id not in frozen_worker.task_ids
    finally:
        signal_celery(frozen, signal.SIGCONT)

    # Thawed, the worker takes its stale message first (one slot, one message prefetched): the
    # fenced claim refuses it, and then a task only it may take runs there.
    after = stack.submit("e2e.sleep", [0.05, "after-thaw"], labels={"host": "a"}).task_id
    assert stack.wait_state(after, S.TASK_STATE_SUCCEEDED, timeout=30).worker_id == "a-frozen"
    assert [r["worker"] for r in stack.runs() if r["tag"] == "late"] == ["b-live"]
    assert stack.get(task_id).state == S.TASK_STATE_SUCCEEDED
