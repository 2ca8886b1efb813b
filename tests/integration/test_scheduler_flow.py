"""The scheduler on real Redis and real Celery queues, driven by protocol-level workers.

These pin the scheduling rules step by step (the e2e tier proves them again with real
Celery worker processes and kills).
"""

from __future__ import annotations

import json
import threading

import grpc
import pytest
from switchyard.v1 import scheduler_pb2 as pb
from switchyard.v1 import worker_pb2
from switchyard.wire import worker_queue

from tests.support.redis_server import wait_until

GPU = worker_pb2.WORKER_TYPE_GPU
STALE_REPORTS = "switchyard_stale_reports_total"


def submit(sched, name="t.sleep", **kw):
    return sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name=name, **kw))


def state(sched, task_id):
    return sched.stub.GetTask(pb.GetTaskRequest(task_id=task_id)).task


def test_late_binding_exact_priority_and_fifo(make_scheduler, make_worker, fresh_redis):
    sched = make_scheduler()
    ids = [submit(sched, content_type="text", priority=5).task_id for _ in range(30)]
    worker = make_worker(sched, "w1", slots=1)
    first = wait_until(lambda: worker.deliveries and worker.deliveries[0], message="first hand-out")
    assert first.task_id == ids[0]
    urgent = submit(sched, content_type="text", priority=10).task_id
    r = fresh_redis.client()
    order = []
    current = first
    for _ in range(6):
        # The worker's own Celery queue never holds more than its free slots (0 while busy).
        assert r.llen(worker_queue("w1")) == 0
        assert worker.claim(current)
        worker.succeed(current, {"ok": True})
        order.append(current.task_id)
        n = len(order)
        current = wait_until(lambda n=n: len(worker.deliveries) > n and worker.deliveries[n], message="next hand-out")
    assert order[1] == urgent, "the priority-10 task must overtake every pending priority-5 task"
    assert order[2:] == ids[1:5], "equal priorities run first-in first-out"
    assert state(sched, ids[0]).state == pb.TASK_STATE_SUCCEEDED
    assert json.loads(state(sched, ids[0]).result_json) == {"ok": True}


def test_stale_attempt_is_fenced_and_result_not_overwritten(make_scheduler, make_worker):
    sched = make_scheduler()
    task_id = submit(sched, content_type="text").task_id
    w1 = make_worker(sched, "w1")
    d1 = wait_until(lambda: w1.deliveries and w1.deliveries[0])
    assert w1.claim(d1)
    w1.heartbeating = False  # frozen
    wait_until(lambda: state(sched, task_id).state == pb.TASK_STATE_PENDING, message="re-queue after heartbeat loss")
    w2 = make_worker(sched, "w2")
    d2 = wait_until(lambda: w2.deliveries and w2.deliveries[0])
    assert d2.attempt == 2
    assert not w1.claim(d1), "the stale attempt cannot be claimed again"
    assert w2.claim(d2)
    w2.succeed(d2, "final")
    wait_until(lambda: state(sched, task_id).state == pb.TASK_STATE_SUCCEEDED)
    dropped = sched.metric(STALE_REPORTS)
    w1.succeed(d1, "stale")  # the frozen worker wakes up and reports
    w1.fail(d1)
    w1.heartbeating = True
    # Both late reports have been read and dropped as stale: nothing more is coming from them.
    sched.wait_metric(STALE_REPORTS, dropped + 2)
    final = state(sched, task_id)
    assert (final.state, json.loads(final.result_json), final.worker_id, final.attempt) == (
        pb.TASK_STATE_SUCCEEDED, "final", "w2", 2)


def test_gpu_required_waits_with_reason_then_runs_on_gpu_worker(make_scheduler, make_worker):
    sched = make_scheduler()
    task_id = submit(sched, content_type="video").task_id
    cpu = make_worker(sched, "cpu1")
    wait_until(lambda: "GPU" in state(sched, task_id).reason, message="reason mentions GPU")
    assert state(sched, task_id).state == pb.TASK_STATE_PENDING and not cpu.deliveries
    gpu = make_worker(sched, "gpu1", worker_type=GPU, gpus=(40960,))
    d = wait_until(lambda: gpu.deliveries and gpu.deliveries[0])
    assert d.task_id == task_id and not cpu.deliveries


def test_pause_resume_and_drain(make_scheduler, make_worker):
    sched = make_scheduler()
    sched.stub.PauseQueue(pb.PauseQueueRequest(queue="cpu_standard"))
    worker = make_worker(sched, "w1", slots=2)
    cpu_task = submit(sched, content_type="text").task_id
    mixed = submit(sched, content_type="youtube").task_id
    d = wait_until(lambda: worker.deliveries and worker.deliveries[0])
    assert d.task_id == mixed
    assert "paused" in state(sched, cpu_task).reason
    sched.stub.ResumeQueue(pb.ResumeQueueRequest(queue="cpu_standard"))
    wait_until(lambda: len(worker.deliveries) == 2)
    sched.stub.DrainWorker(pb.DrainWorkerRequest(worker_id="w1"))
    wait_until(lambda: any(c.HasField("drain") for c in worker.commands), message="drain command on the stream")
    for delivery in list(worker.deliveries):
        worker.claim(delivery)
        worker.succeed(delivery)
    wait_until(lambda: all(state(sched, d.task_id).state == pb.TASK_STATE_SUCCEEDED for d in worker.deliveries),
               message="w1's two slots free again")
    later = submit(sched, content_type="text").task_id
    # A GPU task handed out to a GPU worker: the placement round that did it had `later` pending
    # and the draining w1 with two free slots in view, and committed its hand-outs before
    # publishing any. (A GPU worker does not run CPU work, so `later` has nowhere else to go.)
    gpu = make_worker(sched, "gpu1", worker_type=GPU, gpus=(40960,))
    probe = submit(sched, content_type="video").task_id
    wait_until(lambda: any(d.task_id == probe for d in gpu.deliveries), message="the GPU task's hand-out")
    assert len(worker.deliveries) == 2 and state(sched, later).state == pb.TASK_STATE_PENDING
    listed = {w.worker_id: w for w in sched.stub.ListWorkers(pb.ListWorkersRequest()).workers}
    assert listed["w1"].status == pb.WORKER_STATUS_DRAINING


def test_cancel_pending_and_running(make_scheduler, make_worker):
    sched = make_scheduler()
    worker = make_worker(sched, "w1", slots=1)
    running = submit(sched, content_type="text").task_id
    pending = submit(sched, content_type="text").task_id
    d = wait_until(lambda: worker.deliveries and worker.deliveries[0])
    assert worker.claim(d)
    wait_until(lambda: state(sched, running).state == pb.TASK_STATE_RUNNING)
    reply = sched.stub.CancelTask(pb.CancelTaskRequest(task_id=pending))
    assert reply.previous_state == pb.TASK_STATE_PENDING and reply.task.state == pb.TASK_STATE_CANCELLED
    reply = sched.stub.CancelTask(pb.CancelTaskRequest(task_id=running))
    assert reply.previous_state == pb.TASK_STATE_RUNNING
    wait_until(lambda: any(c.HasField("cancel") and c.cancel.task_id == running for c in worker.commands))
    dropped = sched.metric(STALE_REPORTS)
    worker.succeed(d, "too late")
    sched.wait_metric(STALE_REPORTS, dropped + 1)  # the late report was read and dropped
    assert state(sched, running).state == pb.TASK_STATE_CANCELLED
    # A later task reaches w1's queue: had the cancelled task been handed out, it would be ahead.
    probe = submit(sched, content_type="text").task_id
    wait_until(lambda: len(worker.deliveries) > 1, message="the later task's hand-out")
    assert [x.task_id for x in worker.deliveries] == [running, probe], (
        "the cancelled pending task is never handed out")
    with pytest.raises(grpc.RpcError) as err:
        sched.stub.CancelTask(pb.CancelTaskRequest(task_id=running))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_restart_resumes_and_applies_reports_made_while_down(make_scheduler, make_worker, fresh_redis):
    sched = make_scheduler()
    worker = make_worker(sched, "w1", slots=2)
    ids = [submit(sched, content_type="text").task_id for _ in range(4)]
    wait_until(lambda: len(worker.deliveries) == 2)
    d_run, d_disp = worker.deliveries
    assert worker.claim(d_run)
    wait_until(lambda: state(sched, d_run.task_id).state == pb.TASK_STATE_RUNNING)
    sched.stop()
    worker.disconnect()
    worker.join()  # its queue consumer must not swallow hand-outs meant for the reconnected agent
    # While the scheduler is down the worker finishes one task and starts the other.
    worker.succeed(d_run, "done while down")
    assert worker.claim(d_disp)
    sched2 = make_scheduler()
    # The report waits in the stream; the new leader's lifecycle loop applies it (an event, not
    # a step of start-up: the first GetTask may come before it).
    wait_until(lambda: state(sched2, d_run.task_id).state == pb.TASK_STATE_SUCCEEDED,
               message="the report made while down applied")
    wait_until(lambda: state(sched2, d_disp.task_id).state == pb.TASK_STATE_RUNNING)
    pending = [t for t in ids if t not in (d_run.task_id, d_disp.task_id)]
    assert all(state(sched2, t).state == pb.TASK_STATE_PENDING for t in pending)
    w2 = make_worker(sched2, "w1", slots=2)  # the agent reconnects within the grace period
    worker.report(d_disp, "succeeded", result_json='"x"')
    wait_until(lambda: len(w2.deliveries) == 2)
    assert {d.task_id for d in w2.deliveries} == set(pending)
    assert all(d.attempt == 1 for d in w2.deliveries)
    assert state(sched2, d_disp.task_id).state == pb.TASK_STATE_SUCCEEDED


def test_dedup_race_and_atomic_batch(make_scheduler):
    sched = make_scheduler()
    results: list[pb.SubmitTaskResponse] = []
    barrier = threading.Barrier(50)

    def racer() -> None:
        barrier.wait()
        results.append(submit(sched, content_type="text", args_json="[1]", idempotency_key="same"))

    threads = [threading.Thread(target=racer) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.task_id for r in results}) == 1
    assert sum(not r.deduplicated for r in results) == 1
    with pytest.raises(grpc.RpcError) as err:
        submit(sched, content_type="text", args_json="[2]", idempotency_key="same")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    before = sum(q.pending for q in sched.stub.ListQueues(pb.ListQueuesRequest()).queues)
    bad = pb.SubmitBatchRequest(tasks=[pb.SubmitTaskRequest(task_name="a"), pb.SubmitTaskRequest(task_name="b", args_json="{")])
    with pytest.raises(grpc.RpcError) as err:
        sched.stub.SubmitBatch(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tasks[1]" in err.value.details()
    assert sum(q.pending for q in sched.stub.ListQueues(pb.ListQueuesRequest()).queues) == before


def test_worker_exit_moves_work_at_once(make_scheduler, make_worker):
    sched = make_scheduler(lost_grace_seconds=60, heartbeat_timeout_seconds=60)
    w1 = make_worker(sched, "w1")
    task_id = submit(sched, content_type="text").task_id
    wait_until(lambda: w1.deliveries)
    w1.exited()
    w2 = make_worker(sched, "w2")
    d = wait_until(lambda: w2.deliveries and w2.deliveries[0], timeout=10)
    assert (d.task_id, d.attempt) == (task_id, 2)
