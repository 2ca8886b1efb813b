"""Labels an agent learns at runtime (a model got loaded) steer placement within a heartbeat."""

from __future__ import annotations

import json

import pytest
from switchyard.v1 import scheduler_pb2 as pb
from switchyard.wire import MAX_WORKER_LABELS

from tests.support.redis_server import wait_until
from tests.support.stack import Stack

pytestmark = pytest.mark.slow


def test_runtime_label_feeds_required_and_preferred_placement(stack: Stack) -> None:
    stack.add_worker("w-a", "cpu", concurrency=1, labels={"host": "a"})
    stack.add_worker("w-b", "cpu", concurrency=1, labels={"host": "b"})
    stack.wait_workers_connected(["w-a", "w-b"])
    loader = stack.submit("e2e.load_model", ["whisper-large"], content_type="text", labels={"host": "b"})
    stack.wait_state(loader.task_id, {pb.TASK_STATE_SUCCEEDED}, timeout=30)

    def labels_of_b() -> dict[str, str] | None:
        labels = dict(stack.list_workers()["w-b"].labels)
        return labels if labels.get("model") == "whisper-large" else None

    labels = wait_until(labels_of_b, timeout=15, message="runtime label on w-b")
    assert labels == {"host": "b", "model": "whisper-large"}, "static labels are kept"

    # Required: only the worker that loaded the model qualifies.
    needs = [stack.submit("e2e.echo", [i], content_type="text", labels={"model": "whisper-large"}) for i in range(3)]
    stack.wait_all([r.task_id for r in needs], timeout=30)
    assert {stack.get(r.task_id).worker_id for r in needs} == {"w-b"}

    # Preferred: with both idle, affinity picks w-b; the request still runs anywhere.
    request = stack.submit_request("e2e.echo", ["p"], content_type="text")
    request.preferred_labels["model"] = "whisper-large"
    reply = stack.stub.SubmitTask(request, timeout=10)
    stack.wait_all([reply.task_id], timeout=30)
    assert stack.get(reply.task_id).worker_id == "w-b"
    assert json.loads(stack.get(reply.task_id).result_json)


def test_a_runtime_label_beyond_the_workers_limit_fails_the_task_that_sets_it(stack: Stack) -> None:
    # The agent's --labels count: with 64 of them, a 65th set at runtime would make the scheduler
    # ignore the whole change, so set_label refuses it in the task instead.
    static = {f"rack-{n}": "a" for n in range(MAX_WORKER_LABELS)}
    stack.add_worker("w-full", "cpu", concurrency=1, labels=static)
    stack.wait_workers_connected(["w-full"])
    loader = stack.submit("e2e.load_model", ["whisper-large"], content_type="text")
    task = stack.wait_state(loader.task_id, {pb.TASK_STATE_FAILED, pb.TASK_STATE_DEAD_LETTERED,
                                             pb.TASK_STATE_SUCCEEDED}, timeout=30)
    assert task.state != pb.TASK_STATE_SUCCEEDED, task
    assert f"{MAX_WORKER_LABELS + 1} labels: a worker may carry at most {MAX_WORKER_LABELS}" in task.error, task.error
    assert dict(stack.list_workers()["w-full"].labels) == static
