"""Acceptance item 5: WatchTask streams every state change to the terminal state, and progress
reported from inside a task shows in GetTask."""

from __future__ import annotations

import json
import threading

import grpc
import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.redis_server import wait_until
from tests.support.stack import S, Stack, state_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_watch_streams_every_state_until_terminal(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    # Pause so the watch provably begins while the task is pending.
    stack.pause("cpu_standard")
    task_id = stack.submit("e2e.sleep", [1.0, "watched"], content_type="text").task_id

    stream = stack.stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=60)
    seen: list[pb.Task] = []
    first = next(stream)
    seen.append(first.task)
    assert first.task.state == S.TASK_STATE_PENDING, state_name(first.task.state)

    errors: list[BaseException] = []

    def read_rest() -> None:
        try:
            for message in stream:
                seen.append(message.task)
        except BaseException as err:
            errors.append(err)

    reader = threading.Thread(target=read_rest, daemon=True)
    reader.start()
    stack.resume("cpu_standard")
    reader.join(45)
    assert not reader.is_alive(), (
        f"WatchTask did not end after the terminal state; saw {[state_name(t.state) for t in seen]}"
    )
    assert not errors, f"WatchTask ended with an error: {errors[0]!r}"

    states = []
    for task in seen:
        if not states or states[-1] != task.state:
            states.append(task.state)
    assert [state_name(s) for s in states] == [
        "TASK_STATE_PENDING",
        "TASK_STATE_DISPATCHED",
        "TASK_STATE_RUNNING",
        "TASK_STATE_SUCCEEDED",
    ]
    final = seen[-1]
    assert final.worker_id == "w1" and final.attempt == 1
    assert json.loads(final.result_json) == {"tag": "watched", "worker": "w1"}


def test_watch_of_unknown_task_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as err:
        next(stack.stub.WatchTask(pb.WatchTaskRequest(task_id="no-such-task"), timeout=10))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_progress_reported_inside_the_task_is_visible_in_get_task(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    task_id = stack.submit(
        "e2e.progress", [5, 0.8], {"tag": "progress"}, content_type="text"
    ).task_id

    observed: list[tuple[float, str]] = []

    def progress_seen() -> bool:
        task = stack.get(task_id)
        if task.state == S.TASK_STATE_RUNNING and task.progress > 0:
            observed.append((task.progress, task.progress_message))
        return task.state in {S.TASK_STATE_SUCCEEDED, S.TASK_STATE_FAILED, S.TASK_STATE_DEAD_LETTERED}

    wait_until(progress_seen, timeout=45, interval=0.1, message="progress task to finish")
    final = stack.get(task_id)
    assert final.state == S.TASK_STATE_SUCCEEDED, f"{state_name(final.state)}: {final.error}"
    assert observed, "no progress > 0 was visible in GetTask while the task ran"
    assert all(0 < p <= 1 for p, _ in observed)
    assert any(message.startswith("step ") for _, message in observed), observed
    assert [p for p, _ in observed] == sorted(p for p, _ in observed), "progress went backwards"
