"""Acceptance item 9: bad input gets a clear gRPC status and changes nothing.

This test's scheduler runs with a 1 MiB payload limit so the RESOURCE_EXHAUSTED case needs no
huge message.
"""

from __future__ import annotations

import json

import grpc
import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LIMIT = 1024 * 1024


def _totals(stack: Stack) -> dict[str, tuple[int, ...]]:
    return {
        name: (q.pending, q.processing, q.completed, q.failed, q.cancelled)
        for name, q in stack.queues().items()
    }


def _code_and_message(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


@pytest.mark.scheduler_env(SWITCHYARD_MAX_PAYLOAD_BYTES=str(LIMIT))
def test_bad_requests_get_clear_statuses_and_create_nothing(stack: Stack) -> None:
    stack.add_worker("cpu1", "cpu", concurrency=1)  # a CPU worker is there; no GPU worker is
    stack.wait_workers_connected(["cpu1"])
    before = _totals(stack)
    submit = stack.stub.SubmitTask

    def request(**fields: object) -> pb.SubmitTaskRequest:
        base: dict[str, object] = {
            "task_name": "e2e.echo",
            "args_json": "[]",
            "kwargs_json": "{}",
            "content_type": "text",
        }
        base.update(fields)
        return pb.SubmitTaskRequest(**base)  # type: ignore[arg-type]

    cases = {
        "malformed args_json": (request(args_json="[1, 2"), grpc.StatusCode.INVALID_ARGUMENT),
        "args_json not an array": (request(args_json='{"a": 1}'), grpc.StatusCode.INVALID_ARGUMENT),
        "malformed kwargs_json": (request(kwargs_json="{nope"), grpc.StatusCode.INVALID_ARGUMENT),
        "kwargs_json not an object": (request(kwargs_json="[1]"), grpc.StatusCode.INVALID_ARGUMENT),
        "priority 11": (request(priority=11), grpc.StatusCode.INVALID_ARGUMENT),
        "payload over the limit": (
            request(args_json=json.dumps(["x" * (LIMIT + 1024)])),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
    }
    for name, (req, expected) in cases.items():
        code, message = _code_and_message(lambda req=req: submit(req, timeout=10))
        assert code == expected, f"{name}: got {code}, expected {expected} ({message!r})"
        assert message.strip(), f"{name}: the status carries no message a person could act on"

    for name, call in {
        "GetTask": lambda: stack.stub.GetTask(
            pb.GetTaskRequest(task_id="no-such-task"), timeout=10
        ),
        "CancelTask": lambda: stack.stub.CancelTask(
            pb.CancelTaskRequest(task_id="no-such-task"), timeout=10
        ),
    }.items():
        code, message = _code_and_message(call)
        assert code == grpc.StatusCode.NOT_FOUND, f"{name} of an unknown id: {code} ({message!r})"
        assert "no-such-task" in message, f"{name}: the message does not name the id: {message!r}"

    # Nothing above created a task, and the scheduler still works.
    assert _totals(stack) == before
    ok = stack.submit("e2e.echo", [1, "two"], {"three": 3}, content_type="text")
    task = stack.wait_state(ok.task_id, S.TASK_STATE_SUCCEEDED, timeout=30)
    assert json.loads(task.result_json) == {"args": [1, "two"], "kwargs": {"three": 3}}


def test_gpu_required_task_without_gpu_worker_is_accepted_and_waits_with_a_reason(
    stack: Stack,
) -> None:
    stack.add_worker("cpu1", "cpu", concurrency=1)
    stack.wait_workers_connected(["cpu1"])
    reply = stack.submit("e2e.sleep", [0.1, "needs-gpu"], gpu=pb.GPU_REQUIREMENT_REQUIRED)
    assert reply.task_id and reply.queue == "gpu_priority"

    # A CPU task runs on cpu1: the round that handed it out had the GPU task pending and the
    # idle CPU worker in view, and left the GPU task where it was.
    assert stack.run_probe(content_type="text").worker_id == "cpu1"
    task = stack.get(reply.task_id)
    assert task.state == S.TASK_STATE_PENDING, task
    assert "gpu" in task.reason.lower(), f"pending reason does not mention the GPU: {task.reason!r}"
    assert task.worker_id == ""
    assert "needs-gpu" not in [r["tag"] for r in stack.runs()]
