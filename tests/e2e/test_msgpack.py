"""MessagePack and JSON-native arguments end to end: a real scheduler, a real agent and a real
Celery worker whose app (tests/support/e2e_app.py, `accept_content=["json"]` as a user wrote
it) is not changed.

* A submission with `serializer=SERIALIZER_MSGPACK` reaches the worker as an
  application/x-msgpack message (recorded by the app's `task_received` hook) and its arguments
  arrive whole: an integer beyond 2^53 (exact in msgpack, not in a double), empty objects and
  arrays, null, non-ASCII text.
* A large msgpack payload (above the inline limit) travels by reference and arrives whole too.
* Structured `args`/`kwargs` (what grpcurl, Node and Go send) run the task like JSON text, and the
  result comes back as `Task.result` beside `result_json`.
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.e2e_app import CONTENT_TYPES_KEY
from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

BIG = 2**64 - 1
"""Exact in msgpack's uint64 and in JSON text; a double would round it."""


def _content_type(stack: Stack, task_id: str) -> str | None:
    value = stack.redis.hget(CONTENT_TYPES_KEY, f"{task_id}-1")
    return None if value is None else str(value)


def test_msgpack_messages_and_structured_arguments_reach_a_real_worker_intact(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=2)
    stack.wait_workers_connected(["w1"])

    kwargs = {"big": BIG, "empty": {}, "list": [], "none": None, "text": "h\u00e9llo", "f": 1.5}
    msgpack_request = stack.submit_request("e2e.echo", [1, "two", [3]], kwargs)
    msgpack_request.serializer = pb.SERIALIZER_MSGPACK
    inline = stack.stub.SubmitTask(msgpack_request, timeout=30)

    large = "x" * 400_000  # above the 256 KiB inline limit: by reference
    large_request = stack.submit_request("e2e.payload_len", [large])
    large_request.serializer = pb.SERIALIZER_MSGPACK
    by_reference = stack.stub.SubmitTask(large_request, timeout=30)

    # JSON-native: the request as grpcurl would send it, parsed from plain JSON.
    structured_request = json_format.ParseDict(
        {"taskName": "e2e.echo", "args": [1, "two"], "kwargs": {"n": 3, "nested": {"ok": True}}},
        pb.SubmitTaskRequest())
    structured = stack.stub.SubmitTask(structured_request, timeout=30)

    done = stack.wait_state(inline.task_id, S.TASK_STATE_SUCCEEDED, timeout=60)
    assert json.loads(done.result_json) == {"args": [1, "two", [3]], "kwargs": kwargs}
    assert done.serializer == pb.SERIALIZER_MSGPACK
    assert _content_type(stack, inline.task_id) == "application/x-msgpack"

    done_large = stack.wait_state(by_reference.task_id, S.TASK_STATE_SUCCEEDED, timeout=60)
    assert json.loads(done_large.result_json) == len(large)
    assert _content_type(stack, by_reference.task_id) == "application/x-msgpack"

    done_structured = stack.wait_state(structured.task_id, S.TASK_STATE_SUCCEEDED, timeout=60)
    expected = {"args": [1, "two"], "kwargs": {"n": 3, "nested": {"ok": True}}}
    assert json.loads(done_structured.result_json) == expected
    # The result in both forms; whole numbers arrived as integers (3, not 3.0) in the task.
    assert json_format.MessageToDict(done_structured.result) == expected
    assert '"n": 3,' in done_structured.result_json or '"n": 3}' in done_structured.result_json
    assert _content_type(stack, structured.task_id) == "application/json"
