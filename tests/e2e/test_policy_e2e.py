"""The policy engine end to end, with real Celery workers: retries with backoff and jitter held
by the scheduler, dead letters and their replay, non-retryable errors, ExplainPlacement against
a live fleet, the 50-client idempotency race, and atomic batches.

The scheduler runs on a small config this module writes to the test's tmp_path (a fast retry
policy), so this module overrides the e2e `stack` fixture to point the scheduler at it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from switchyard.v1 import scheduler_pb2 as pb
from switchyard.v1 import scheduler_pb2_grpc
from switchyard.wire import Keys

from tests.support.redis_server import RedisServer
from tests.support.stack import CHANNEL_OPTIONS, S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SEED_APP = "tests.support.seed_app"

BASE_DELAY = 0.5
MULTIPLIER = 2.0
MAX_RETRIES = 2
JITTER = 0.1
# Scheduler-side latency a retry may add on top of its delay: the retry loop ticks every 0.2 s,
# then placement, publication and the Celery worker picking the message up.
SLACK = 1.0

POLICY_CONFIG = f"""
# Default queues (gpu_priority, gpu_fallback, cpu_standard); fast retry policies for the tests.
retry_policies:
  fast:
    max_retries: {MAX_RETRIES}
    backoff: exponential
    base_delay_seconds: {BASE_DELAY}
    multiplier: {MULTIPLIER}
    max_delay_seconds: 10
    jitter: {JITTER}
    dead_letter: true
    non_retryable: [PermanentError, KeyError]
  qualified:                      # the documented dotted form of an exception type name
    max_retries: 2
    backoff: exponential
    base_delay_seconds: 0.2
    multiplier: 1
    max_delay_seconds: 0.2
    jitter: 0
    dead_letter: true
    non_retryable: [tests.support.seed_app.PermanentError]
default_retry_policy: fast
placement:
  quarantine_failures: 0          # failures on purpose must not quarantine the test worker
"""


@pytest.fixture()
def stack(
    fresh_redis: RedisServer,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """The e2e stack, its scheduler started on POLICY_CONFIG written to tmp_path."""
    config = tmp_path / "policy.yaml"
    config.write_text(POLICY_CONFIG)
    workdir = tmp_path_factory.mktemp(f"stack-{request.node.name[:40]}")
    sy = Stack(fresh_redis, workdir, scheduler_env={"SWITCHYARD_CONFIG_FILE": str(config)})
    try:
        sy.start_scheduler()
        yield sy
    finally:
        sy.close()


def seed_records(stack: Stack, key: str, tag: str) -> list[dict[str, Any]]:
    return [r for r in (json.loads(x) for x in stack.redis.lrange(key, 0, -1)) if r["tag"] == tag]


def submit(
    stack: Stack,
    task_name: str,
    args: list[Any],
    kwargs: dict[str, Any] | None = None,
    *,
    retry_policy: str = "",
    **fields: Any,
) -> pb.SubmitTaskResponse:
    """SubmitTask with a named retry policy (Stack.submit_request does not set one)."""
    request = stack.submit_request(task_name, args, kwargs, **fields)
    request.retry_policy = retry_policy
    return stack.stub.SubmitTask(request, timeout=30)


def queue_totals(stack: Stack) -> dict[str, tuple[int, ...]]:
    return {
        name: (
            q.pending,
            q.processing,
            q.completed,
            q.failed,
            q.retrying,
            q.dead_lettered,
            q.cancelled,
        )
        for name, q in stack.queues().items()
    }


def add_cpu_worker(stack: Stack, worker_id: str = "cpu1", concurrency: int = 2) -> None:
    stack.add_worker(worker_id, "cpu", concurrency=concurrency, app=SEED_APP)
    stack.wait_workers_connected([worker_id])


# ------------------------------------------------------------------ retries and dead letters


def test_failing_task_dead_letters_after_its_policy_attempts_with_backoff_then_replays(
    stack: Stack,
) -> None:
    add_cpu_worker(stack)
    reply = submit(
        stack,
        "seed.fail_until",
        ["replay"],
        {"tag": "flaky"},
        content_type="text",
        retry_policy="fast",
    )
    assert reply.queue == "cpu_standard"

    # Observe the retrying state on the way: the scheduler holds the retry, not Celery.
    retrying = stack.wait_state(
        reply.task_id, [S.TASK_STATE_RETRYING, S.TASK_STATE_DEAD_LETTERED], timeout=30
    )
    assert retrying.state == S.TASK_STATE_RETRYING, retrying
    assert retrying.retry_policy == "fast" and retrying.failures == 1, retrying
    assert retrying.next_attempt_at.seconds > 0, retrying

    task = stack.wait_state(reply.task_id, S.TASK_STATE_DEAD_LETTERED, timeout=30)
    starts = seed_records(stack, "seed:runs", "flaky")
    ends = seed_records(stack, "seed:done", "flaky")
    assert len(starts) == MAX_RETRIES + 1, f"ran {len(starts)} times: {starts}"
    assert len(ends) == MAX_RETRIES + 1 and not any(e["ok"] for e in ends), ends
    assert task.failures == MAX_RETRIES + 1, task
    assert task.attempt == MAX_RETRIES + 1, task
    assert task.error_type == "RuntimeError", task
    assert "flag replay not set" in task.error, task.error
    assert {s["worker"] for s in starts} == {"cpu1"}

    # Each retry starts its backoff after the failure: nominal base * multiplier^(n-1), +-jitter.
    gaps = []
    for n in range(1, MAX_RETRIES + 1):
        nominal = BASE_DELAY * MULTIPLIER ** (n - 1)
        gap = starts[n]["ts"] - ends[n - 1]["end"]
        gaps.append(round(gap, 3))
        low, high = nominal * (1 - JITTER), nominal * (1 + JITTER) + SLACK
        assert low <= gap <= high, (
            f"retry {n} started {gap:.3f}s after failure {n}; policy bounds [{low:.2f}, {high:.2f}] "
            f"(nominal {nominal}s +-{JITTER:.0%}, +{SLACK}s slack); all gaps {gaps}"
        )

    # No further attempt after the dead letter: the scheduler starts retries only from the retry
    # index, and the script that dead-lettered the task took it out of there in the same step.
    keys = Keys()
    assert stack.redis.zscore(keys.retry, reply.task_id) is None
    assert stack.redis.zscore(keys.dead_letters, reply.task_id) is not None
    assert len(seed_records(stack, "seed:runs", "flaky")) == MAX_RETRIES + 1

    letters = stack.stub.ListDeadLetters(pb.ListDeadLettersRequest(), timeout=10)
    assert letters.total == 1, letters
    (letter,) = letters.dead_letters
    assert letter.task.task_id == reply.task_id
    assert letter.task.state == S.TASK_STATE_DEAD_LETTERED
    assert "RuntimeError" in letter.task.error, letter
    assert "Traceback (most recent call last)" in letter.task.traceback, letter.task.traceback
    assert "fail_until" in letter.task.traceback and "RuntimeError" in letter.task.traceback
    assert letter.reason, letter
    assert letter.dead_lettered_at.seconds > 0
    by_queue = stack.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(queue="cpu_standard"), timeout=10
    )
    assert [d.task.task_id for d in by_queue.dead_letters] == [reply.task_id]
    other = stack.stub.ListDeadLetters(pb.ListDeadLettersRequest(queue="gpu_priority"), timeout=10)
    assert other.total == 0 and not other.dead_letters
    assert stack.queues()["cpu_standard"].dead_lettered == 1

    # Replay after the cause is fixed: the task succeeds with a fresh retry budget.
    stack.redis.set("seed:flag:replay", "1")
    replayed = stack.stub.RetryDeadLetter(
        pb.RetryDeadLetterRequest(task_id=reply.task_id), timeout=10
    )
    assert replayed.task.task_id == reply.task_id
    assert replayed.task.state in {
        S.TASK_STATE_PENDING,
        S.TASK_STATE_DISPATCHED,
        S.TASK_STATE_RUNNING,
        S.TASK_STATE_SUCCEEDED,
    }, replayed.task
    done = stack.wait_state(reply.task_id, S.TASK_STATE_SUCCEEDED, timeout=30)
    assert json.loads(done.result_json)["task"] == "seed.fail_until"
    starts = seed_records(stack, "seed:runs", "flaky")
    assert len(starts) == MAX_RETRIES + 2, starts
    assert stack.stub.ListDeadLetters(pb.ListDeadLettersRequest(), timeout=10).total == 0
    assert stack.queues()["cpu_standard"].dead_lettered == 0

    # A replayed task that is no longer dead-lettered cannot be replayed again.
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.RetryDeadLetter(pb.RetryDeadLetterRequest(task_id=reply.task_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value


def test_non_retryable_error_goes_straight_to_dead_letters(stack: Stack) -> None:
    add_cpu_worker(stack)
    permanent = submit(
        stack,
        "seed.fail_with",
        ["PermanentError"],
        {"tag": "permanent"},
        content_type="text",
        retry_policy="fast",
    )
    builtin = submit(
        stack, "seed.fail_with", ["KeyError"], {"tag": "keyerror"}, content_type="text"
    )
    retryable = submit(
        stack, "seed.fail_with", ["TransientError"], {"tag": "transient"}, content_type="text"
    )
    for reply, tag, error_type in (
        (permanent, "permanent", "PermanentError"),
        (builtin, "keyerror", "KeyError"),
    ):
        task = stack.wait_state(reply.task_id, S.TASK_STATE_DEAD_LETTERED, timeout=30)
        assert task.failures == 1 and task.attempt == 1, task
        assert task.error_type == error_type, task
        assert "not retryable" in task.reason, task.reason
        assert len(seed_records(stack, "seed:runs", tag)) == 1
    # A retryable type under the same (default) policy does retry.
    stack.wait_state(retryable.task_id, S.TASK_STATE_DEAD_LETTERED, timeout=30)
    assert len(seed_records(stack, "seed:runs", "transient")) == MAX_RETRIES + 1
    # ...and the non-retryable ones were never run again meanwhile.
    assert len(seed_records(stack, "seed:runs", "permanent")) == 1
    assert len(seed_records(stack, "seed:runs", "keyerror")) == 1
    letters = stack.stub.ListDeadLetters(pb.ListDeadLettersRequest(), timeout=10)
    assert {d.task.task_id for d in letters.dead_letters} == {
        permanent.task_id,
        builtin.task_id,
        retryable.task_id,
    }
    # Purge by id, then all.
    purged = stack.stub.PurgeDeadLetters(
        pb.PurgeDeadLettersRequest(task_ids=[builtin.task_id]), timeout=10
    )
    assert purged.purged == 1
    assert stack.stub.ListDeadLetters(pb.ListDeadLettersRequest(), timeout=10).total == 2
    purged = stack.stub.PurgeDeadLetters(pb.PurgeDeadLettersRequest(all=True), timeout=10)
    assert purged.purged == 2
    assert stack.stub.ListDeadLetters(pb.ListDeadLettersRequest(), timeout=10).total == 0


def test_non_retryable_given_as_a_dotted_exception_name(stack: Stack) -> None:
    """docs/configuration.md: non_retryable takes exception type names such as `ValueError`
    or `app.errors.BadInput`; the dotted form must skip retries too."""
    add_cpu_worker(stack)
    reply = submit(
        stack,
        "seed.fail_with",
        ["PermanentError"],
        {"tag": "dotted"},
        content_type="text",
        retry_policy="qualified",
    )
    task = stack.wait_state(reply.task_id, S.TASK_STATE_DEAD_LETTERED, timeout=30)
    runs = len(seed_records(stack, "seed:runs", "dotted"))
    assert task.failures == 1 and runs == 1, (
        f"PermanentError (tests.support.seed_app.PermanentError, listed in non_retryable) ran "
        f"{runs} time(s), failures={task.failures}, reason={task.reason!r}"
    )


# ------------------------------------------------------------------ explain


def test_explain_placement_against_a_live_fleet(stack: Stack) -> None:
    stack.add_worker("cpu1", "cpu", concurrency=1, app=SEED_APP)
    stack.add_worker("gpu16", "gpu", concurrency=1, simulate_gpu="1xT4:16384", app=SEED_APP)
    stack.add_worker("gpu40", "gpu", concurrency=1, simulate_gpu="1xA100:40960", app=SEED_APP)
    stack.wait_workers_connected(["cpu1", "gpu16", "gpu40"])
    before = queue_totals(stack)

    request = stack.submit_request(
        "morag.worker.process_image_task", [0.05, "big"], content_type="image", gpu_memory_mb=24000
    )
    explained = stack.stub.ExplainPlacement(pb.ExplainPlacementRequest(task=request), timeout=10)
    assert explained.queue == "gpu_priority", explained
    assert explained.task_class == pb.TASK_CLASS_GPU_INTENSIVE
    assert explained.priority == 8 and explained.effective_priority >= 8, explained
    assert explained.classification_reason, explained
    assert explained.chosen_worker_id == "gpu40", explained
    assert "gpu40" in explained.summary, explained.summary
    verdicts = {v.worker_id: v for v in explained.workers}
    assert set(verdicts) == {"cpu1", "gpu16", "gpu40"}, verdicts
    assert not verdicts["cpu1"].eligible and verdicts["cpu1"].rejected_by == "capability", verdicts[
        "cpu1"
    ]
    assert verdicts["cpu1"].rejection_reason
    assert not verdicts["gpu16"].eligible and verdicts["gpu16"].rejected_by == "gpu_memory", (
        verdicts["gpu16"]
    )
    assert "24000" in verdicts["gpu16"].rejection_reason, verdicts["gpu16"].rejection_reason
    chosen = verdicts["gpu40"]
    assert chosen.eligible and not chosen.rejected_by, chosen
    terms = {t.name: t for t in chosen.terms}
    assert set(terms) == {
        "load",
        "gpu_utilization",
        "memory_headroom",
        "capability",
        "affinity",
        "failures",
    }, terms
    for term in chosen.terms:
        assert 0.0 <= term.value <= 1.0, term
    for term in chosen.terms:
        sign = -1.0 if term.name == "failures" else 1.0  # failures count against the score
        assert term.contribution == pytest.approx(sign * term.value * term.weight), term
    total = sum(t.contribution for t in chosen.terms)
    assert chosen.score == pytest.approx(total, abs=1e-6), (chosen.score, list(chosen.terms))
    assert terms["capability"].value == 1.0, terms["capability"]
    # Spread: the headroom left on the 40 GiB device after reserving 24000 MiB.
    assert terms["memory_headroom"].value == pytest.approx((40960 - 24000) / 40960, abs=0.01)

    # A CPU task: the CPU worker, and the GPU workers turned away for capability.
    cpu_request = stack.submit_request(
        "morag.worker.process_document_task", [0.05, "doc"], content_type="document"
    )
    cpu_explained = stack.stub.ExplainPlacement(
        pb.ExplainPlacementRequest(task=cpu_request), timeout=10
    )
    assert cpu_explained.queue == "cpu_standard" and cpu_explained.chosen_worker_id == "cpu1"
    cpu_verdicts = {v.worker_id: v for v in cpu_explained.workers}
    assert cpu_verdicts["gpu16"].rejected_by == "capability"
    assert cpu_verdicts["gpu40"].rejected_by == "capability"

    # A dry run changes nothing: no task created, no queue counts moved, nothing ran. The counts
    # take in a task from the moment it is accepted, so right after the replies they would show
    # one; and with no task there is nothing to hand out.
    assert queue_totals(stack) == before
    assert stack.redis.llen("seed:runs") == 0

    # The explanation was right: the real submission runs on gpu40.
    submitted = stack.stub.SubmitTask(request, timeout=10)
    done = stack.wait_state(submitted.task_id, S.TASK_STATE_SUCCEEDED, timeout=30)
    assert done.worker_id == "gpu40", done

    # Explaining a pending task by id: its queue is paused, so no worker is chosen, and
    # GetTask says why it waits.
    stack.pause("cpu_standard")
    waiting = stack.stub.SubmitTask(cpu_request, timeout=10)
    by_id = stack.stub.ExplainPlacement(
        pb.ExplainPlacementRequest(task_id=waiting.task_id), timeout=10
    )
    assert by_id.queue == "cpu_standard" and by_id.chosen_worker_id == "", by_id
    assert "paused" in by_id.summary, by_id.summary
    assert "paused" in stack.get(waiting.task_id).reason
    stack.resume("cpu_standard")
    assert stack.wait_state(waiting.task_id, S.TASK_STATE_SUCCEEDED, timeout=30).worker_id == "cpu1"


# ------------------------------------------------------------------ deduplication


def test_fifty_clients_racing_one_idempotency_key_create_one_task(stack: Stack) -> None:
    add_cpu_worker(stack)
    clients = 50
    request = stack.submit_request(
        "morag.worker.process_document_task",
        [0.2, "raced"],
        content_type="document",
        idempotency_key="race-key-1",
    )
    channels = [
        grpc.insecure_channel(stack.address, options=CHANNEL_OPTIONS) for _ in range(clients)
    ]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=10)
    barrier = threading.Barrier(clients)
    replies: list[pb.SubmitTaskResponse] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(channel: grpc.Channel) -> None:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        barrier.wait(timeout=30)
        try:
            reply = stub.SubmitTask(request, timeout=30)
        except BaseException as exc:  # reported below
            with lock:
                errors.append(exc)
            return
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=client, args=(ch,)) for ch in channels]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for channel in channels:
            channel.close()
    assert not errors, errors[:3]
    assert len(replies) == clients
    task_ids = {r.task_id for r in replies}
    assert len(task_ids) == 1, f"{len(task_ids)} tasks created for one idempotency key"
    assert sum(not r.deduplicated for r in replies) == 1, [r.deduplicated for r in replies]
    (task_id,) = task_ids

    stack.wait_state(task_id, S.TASK_STATE_SUCCEEDED, timeout=30)
    stack.wait_celery_drained()  # no message left that could start it again
    assert len(seed_records(stack, "seed:runs", "raced")) == 1
    stats = stack.queues()["cpu_standard"]
    assert (stats.completed, stats.pending, stats.processing) == (1, 0, 0), stats

    # Later, the same key and payload still return the original task...
    again = stack.stub.SubmitTask(request, timeout=10)
    assert again.task_id == task_id and again.deduplicated
    # ...and the same key with other arguments is refused.
    different = stack.submit_request(
        "morag.worker.process_document_task",
        [0.2, "other"],
        content_type="document",
        idempotency_key="race-key-1",
    )
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.SubmitTask(different, timeout=10)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS, err.value
    assert task_id in (err.value.details() or ""), err.value.details()
    assert stack.queues()["cpu_standard"].completed == 1


# ------------------------------------------------------------------ atomic batches


def _batch(stack: Stack, count: int) -> list[pb.SubmitTaskRequest]:
    return [
        stack.submit_request(
            "morag.worker.process_document_task", [0.05, f"batch-{i}"], content_type="document"
        )
        for i in range(count)
    ]


def test_batch_with_one_bad_item_accepts_nothing(stack: Stack) -> None:
    add_cpu_worker(stack)
    before = queue_totals(stack)
    items = _batch(stack, 5)
    items[3].args_json = "{not json"
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.SubmitBatch(pb.SubmitBatchRequest(tasks=items), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert "tasks[3]" in (err.value.details() or ""), err.value.details()
    # The counts take in a task from the moment it is accepted, so right after the refusal they
    # would show any item let in; and with no task there is nothing to hand out.
    assert queue_totals(stack) == before, "a rejected batch changed the queue counts"
    assert stack.redis.llen("seed:runs") == 0, "an item of a rejected batch ran"

    # Fixed, the same batch is accepted whole and every item runs.
    items[3].args_json = json.dumps([0.05, "batch-3"])
    reply = stack.stub.SubmitBatch(pb.SubmitBatchRequest(tasks=items), timeout=10)
    assert len(reply.results) == 5
    stack.wait_all([r.task_id for r in reply.results], timeout=30)
    assert sorted(json.loads(x)["tag"] for x in stack.redis.lrange("seed:runs", 0, -1)) == [
        f"batch-{i}" for i in range(5)
    ]


def test_batch_reports_every_invalid_item_by_index(stack: Stack) -> None:
    """Issue 3: SubmitBatch accepts all items or none, "reporting every invalid item by index"."""
    before = queue_totals(stack)
    items = _batch(stack, 6)
    items[1].task_name = "not a task name!"
    items[4].args_json = "{not json"
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.SubmitBatch(pb.SubmitBatchRequest(tasks=items), timeout=10)
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert queue_totals(stack) == before
    assert "tasks[1]" in details and "tasks[4]" in details, (
        f"expected both invalid items (1 and 4) named; got: {details!r}"
    )
