"""Policy-engine decisions through the real scheduler on real Redis and real Celery queues.

Retries and dead letters, explain, aging, rate limits, result TTL, time limits, thresholds and
big atomic batches, driven by protocol-level workers (tests/support/inproc.py).
"""

from __future__ import annotations

import json
import time

import grpc
import pytest
from switchyard.v1 import scheduler_pb2 as pb
from switchyard.v1 import worker_pb2

from scheduler.core.model import QueueSpec, TaskClass
from scheduler.core.ordering import AgingPolicy
from scheduler.core.ratelimit import RateLimit
from scheduler.core.retry import RetryPolicy
from tests.support.redis_server import wait_until

FLAKY = RetryPolicy("flaky", max_retries=2, base_delay_seconds=0.6, multiplier=2.0,
                    max_delay_seconds=10, jitter=0.1, non_retryable=frozenset({"PermissionError"}))


def submit(sched, name="t.job", **kw):
    return sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name=name, **kw))


def get(sched, task_id):
    return sched.stub.GetTask(pb.GetTaskRequest(task_id=task_id)).task


def test_failing_task_retries_with_backoff_then_dead_letters_and_replays(make_scheduler, make_worker):
    sched = make_scheduler(retry_policies={"none": RetryPolicy("none"), "flaky": FLAKY})
    worker = make_worker(sched, "w1")
    task_id = submit(sched, content_type="text", retry_policy="flaky").task_id
    failed_at: list[float] = []
    dispatched_at: list[float] = []
    for attempt in (1, 2, 3):
        delivery = wait_until(lambda a=attempt: len(worker.deliveries) >= a and worker.deliveries[a - 1], timeout=15)
        dispatched_at.append(time.time())
        assert delivery.attempt == attempt
        assert worker.claim(delivery)
        worker.fail(delivery, "ValueError: always broken")
        failed_at.append(time.time())
        if attempt < 3:
            wait_until(lambda: get(sched, task_id).state == pb.TASK_STATE_RETRYING)
    wait_until(lambda: get(sched, task_id).state == pb.TASK_STATE_DEAD_LETTERED)
    final = get(sched, task_id)
    assert final.failures == 3 and "always broken" in final.error
    # Delays between a failure and the next hand-out sit inside the policy's jittered bounds
    # (upper bound padded for the retry loop's 0.2 s tick and the hand-out round trip).
    for retry, (failed, next_dispatch) in enumerate(zip(failed_at, dispatched_at[1:], strict=False), start=1):
        low, high = FLAKY.delay_bounds(retry)
        assert low - 0.05 <= next_dispatch - failed <= high + 1.0
    letters = sched.stub.ListDeadLetters(pb.ListDeadLettersRequest())
    assert [d.task.task_id for d in letters.dead_letters] == [task_id] and letters.total == 1
    assert sched.stub.ListQueues(pb.ListQueuesRequest()).queues[2].dead_lettered == 1
    replay = sched.stub.RetryDeadLetter(pb.RetryDeadLetterRequest(task_id=task_id))
    assert replay.task.state == pb.TASK_STATE_PENDING and replay.task.failures == 0
    delivery = wait_until(lambda: len(worker.deliveries) >= 4 and worker.deliveries[3])
    assert worker.claim(delivery)
    worker.succeed(delivery, "fixed")
    wait_until(lambda: get(sched, task_id).state == pb.TASK_STATE_SUCCEEDED)
    assert sched.stub.ListDeadLetters(pb.ListDeadLettersRequest()).total == 0


def test_non_retryable_error_goes_straight_to_dead_letters_and_purge(make_scheduler, make_worker):
    sched = make_scheduler(retry_policies={"none": RetryPolicy("none"), "flaky": FLAKY},
                           default_retry_policy="flaky")
    worker = make_worker(sched, "w1")
    task_id = submit(sched, content_type="text").task_id
    delivery = wait_until(lambda: worker.deliveries and worker.deliveries[0])
    assert worker.claim(delivery)
    worker.report(delivery, "failed", error="PermissionError: no", error_type="PermissionError", traceback="")
    wait_until(lambda: get(sched, task_id).state == pb.TASK_STATE_DEAD_LETTERED)
    assert "not retryable" in get(sched, task_id).reason
    with pytest.raises(grpc.RpcError) as err:
        sched.stub.PurgeDeadLetters(pb.PurgeDeadLettersRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sched.stub.PurgeDeadLetters(pb.PurgeDeadLettersRequest(all=True)).purged == 1
    with pytest.raises(grpc.RpcError) as err:
        get(sched, task_id)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_explain_placement_is_a_dry_run_with_reasons(make_scheduler, make_worker):
    sched = make_scheduler()
    make_worker(sched, "cpu1")
    make_worker(sched, "gpu1", worker_type=worker_pb2.WORKER_TYPE_GPU, gpus=(16384,))
    request = pb.SubmitTaskRequest(task_name="media.transcribe", content_type="audio", gpu_memory_mb=20000)
    answer = sched.stub.ExplainPlacement(pb.ExplainPlacementRequest(task=request))
    verdicts = {w.worker_id: w for w in answer.workers}
    assert answer.queue == "gpu_priority" and answer.chosen_worker_id == ""
    assert verdicts["cpu1"].rejected_by == "capability"
    assert verdicts["gpu1"].rejected_by == "gpu_memory" and "16384" in verdicts["gpu1"].rejection_reason
    request.gpu_memory_mb = 8000
    answer = sched.stub.ExplainPlacement(pb.ExplainPlacementRequest(task=request))
    assert answer.chosen_worker_id == "gpu1"
    chosen = next(w for w in answer.workers if w.worker_id == "gpu1")
    assert chosen.eligible and {t.name for t in chosen.terms} >= {"load", "capability", "memory_headroom"}
    assert sum(q.pending for q in sched.stub.ListQueues(pb.ListQueuesRequest()).queues) == 0


def test_aging_lets_an_old_low_priority_task_overtake_newer_urgent_ones(make_scheduler, make_worker):
    sched = make_scheduler(aging=AgingPolicy(default_max_wait_seconds=0.2))
    old = submit(sched, content_type="text", priority=1).task_id
    # Time has to pass for aging (9 levels x 0.2 s): poll until the task shows the top level.
    wait_until(lambda: get(sched, old).effective_priority == 10, timeout=10, message="aged to priority 10")
    fresh = [submit(sched, content_type="text", priority=9).task_id for _ in range(3)]
    assert get(sched, old).effective_priority == 10
    worker = make_worker(sched, "w1")
    first = wait_until(lambda: worker.deliveries and worker.deliveries[0])
    assert first.task_id == old and fresh


def test_rate_limit_spaces_out_hand_outs(make_scheduler, make_worker):
    sched = make_scheduler(rate_limits=(RateLimit("gen.*", per_second=2.0, burst=1),))
    ids = [submit(sched, "gen.image", content_type="text").task_id for _ in range(3)]
    other = submit(sched, "thumb.make", content_type="text").task_id
    worker = make_worker(sched, "w1", slots=8)
    wait_until(lambda: len(worker.deliveries) >= 2, timeout=10)
    # The first gen task and the unlimited task go at once; the other two wait for tokens.
    assert {d.task_id for d in worker.deliveries[:2]} == {ids[0], other}
    assert "rate limited" in get(sched, ids[2]).reason or len(worker.deliveries) > 2
    wait_until(lambda: len(worker.deliveries) == 4, timeout=10)
    # The scheduler's own hand-out times: when a protocol worker happens to read a message from
    # its queue says nothing about the limit (a late first read once shrank the span to 0.74 s).
    gen_times = sorted(get(sched, task_id).dispatched_at.ToNanoseconds() / 1e9 for task_id in ids)
    # 2 per second with a burst of 1: consecutive gen hand-outs are at least ~0.5 s apart.
    assert gen_times[1] - gen_times[0] >= 0.45 and gen_times[2] - gen_times[1] >= 0.45
    assert gen_times[2] - gen_times[0] >= 0.9


def test_result_ttl_and_time_limits_and_thresholds(make_scheduler, make_worker):
    queues = (
        QueueSpec("gpu_priority", TaskClass.GPU_INTENSIVE, 8),
        QueueSpec("gpu_fallback", TaskClass.MIXED, 6),
        QueueSpec("cpu_standard", TaskClass.CPU, 5, soft_time_limit_seconds=5, hard_time_limit_seconds=9,
                  max_depth=2),
    )
    sched = make_scheduler(queues=queues, result_ttl_seconds=1.0)
    ids = [submit(sched, content_type="text").task_id for _ in range(3)]
    stats = {q.name: q for q in sched.stub.ListQueues(pb.ListQueuesRequest()).queues}
    assert any("depth 3 exceeds threshold 2" in w for w in stats["cpu_standard"].warnings)
    worker = make_worker(sched, "w1", slots=3)
    wait_until(lambda: len(worker.deliveries) == 3)
    assert all(d.headers.get("timelimit") == [9.0, 5.0] for d in worker.deliveries)
    for delivery in worker.deliveries:
        assert worker.claim(delivery)
        worker.succeed(delivery, delivery.task_id)
    wait_until(lambda: get(sched, ids[0]).state == pb.TASK_STATE_SUCCEEDED)
    assert json.loads(get(sched, ids[0]).result_json) == ids[0]

    def expired() -> bool:
        try:
            get(sched, ids[0])
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.NOT_FOUND
        return False

    wait_until(expired, timeout=5, message="result TTL purge")


def test_ten_thousand_items_in_one_atomic_batch(make_scheduler):
    sched = make_scheduler()
    items = [pb.SubmitTaskRequest(task_name="t.bulk", content_type="text", args_json=f"[{i}]") for i in range(10_000)]
    reply = sched.stub.SubmitBatch(pb.SubmitBatchRequest(tasks=items), timeout=60)
    assert len(reply.results) == 10_000 and len({r.task_id for r in reply.results}) == 10_000
    # Batches of more than 10 are lowered by one level.
    assert {r.priority for r in reply.results} == {4}
    stats = {q.name: q for q in sched.stub.ListQueues(pb.ListQueuesRequest()).queues}
    assert stats["cpu_standard"].pending == 10_000
