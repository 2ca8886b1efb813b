"""A scheduler restart rebuilds each worker's in-flight ledger exactly as it was before.

Regression: the queue a hand-out was *served under* (its own, or one reached along a fallback
chain) decides which per-worker limit it counts against. It used to live only in memory, so after
a restart a task placed through a fallback queue counted against its own queue instead, and the
fallback queue's limit let one task too many onto the worker.
"""

from __future__ import annotations

from switchyard.v1 import scheduler_pb2 as pb

from scheduler.core.model import QueueSpec, TaskClass
from scheduler.core.routing import FallbackChain
from tests.support.redis_server import wait_until

QUEUES = (
    QueueSpec("train", TaskClass.CPU, 5, max_tasks_per_worker=1),
    QueueSpec("batch", TaskClass.CPU, 3, max_tasks_per_worker=1),
)
SPILL = FallbackChain(("train", "batch"), after_seconds=0.0)


def verdict_for(sched, worker_id: str, queue: str) -> pb.WorkerVerdict:
    reply = sched.stub.ExplainPlacement(pb.ExplainPlacementRequest(
        task=pb.SubmitTaskRequest(task_name="t.job", queue=queue)))
    (verdict,) = [v for v in reply.workers if v.worker_id == worker_id]
    return verdict


def test_fallback_placement_keeps_counting_against_the_served_queue_after_restart(make_scheduler, make_worker):
    settings = dict(queues=QUEUES, fallback_chains=(SPILL,), lost_grace_seconds=30.0)
    sched = make_scheduler(**settings)
    worker = make_worker(sched, "w1", slots=3)
    first = sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name="t.job", queue="train")).task_id
    second = sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name="t.job", queue="train")).task_id
    wait_until(lambda: len(worker.deliveries) == 2, timeout=10)
    # `train` allows one task per worker, so the second one was served under `batch`: now
    # `batch` is full on w1 and a batch task is refused by the queue limit.
    assert {d.task_id for d in worker.deliveries} == {first, second}
    assert verdict_for(sched, "w1", "batch").rejected_by == "queue_limit"

    sched.stop()
    restarted = make_scheduler(**settings)
    worker.close()
    again = make_worker(restarted, "w1", slots=3)
    wait_until(lambda: restarted.stub.ListWorkers(pb.ListWorkersRequest()).workers[0].status
               == pb.WORKER_STATUS_CONNECTED, timeout=10)
    # The same two tasks are still in flight on w1 ...
    (info,) = restarted.stub.ListWorkers(pb.ListWorkersRequest()).workers
    assert sorted(info.task_ids) == sorted([first, second])
    # ... and each still counts against the queue it was served under.
    assert verdict_for(restarted, "w1", "batch").rejected_by == "queue_limit"
    assert verdict_for(restarted, "w1", "train").rejected_by == "queue_limit"
    assert again.deliveries == []
