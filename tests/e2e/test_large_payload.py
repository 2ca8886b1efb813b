"""Acceptance item 10: a 10 MB payload is accepted, delivered and run.

The client raises gRPC's 4 MiB default message limit deliberately (tests.support.stack
CHANNEL_OPTIONS), as the README tells users to.
"""

from __future__ import annotations

import json

import pytest

from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SIZE = 10_000_000


def test_ten_megabyte_argument_reaches_the_task_intact(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])

    reply = stack.submit("e2e.payload_len", ["x" * SIZE], content_type="document")
    task = stack.wait_state(reply.task_id, S.TASK_STATE_SUCCEEDED, timeout=60)
    assert json.loads(task.result_json) == SIZE
    assert task.worker_id == "w1"
    # A small task after the big one still flows.
    small = stack.submit("e2e.payload_len", ["abc"], content_type="document")
    assert (
        json.loads(stack.wait_state(small.task_id, S.TASK_STATE_SUCCEEDED, timeout=30).result_json)
        == 3
    )
