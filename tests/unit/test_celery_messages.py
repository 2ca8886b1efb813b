"""Hand-out messages built from cached templates are exactly what Celery's own construction gives."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler.dispatch import CeleryMessages, Envelope, HandOut


def assembled(envelope: Envelope, body: str = "[[], {}, {}]") -> dict[str, Any]:
    """The message the hand-out script would write (body, argsrepr and kwargsrepr spliced in)."""
    head, after_body, after_argsrepr, tail = envelope.pieces
    return json.loads(head + json.dumps(body) + after_body + json.dumps("()") + after_argsrepr
                      + json.dumps("{}") + tail)


def celery_built(messages: CeleryMessages, hand_out: HandOut) -> dict[str, Any]:
    """The same message from `as_task_v2` for this very hand-out, no template involved."""
    celery_id = hand_out.celery_task_id
    message = messages.app.amqp.as_task_v2(
        celery_id, hand_out.task_name, args=(), kwargs={}, soft_time_limit=hand_out.soft_time_limit,
        time_limit=hand_out.hard_time_limit, argsrepr="()", kwargsrepr="{}")
    headers = dict(message.headers)
    headers.update(sy_task_id=hand_out.task_id, sy_attempt=hand_out.attempt, sy_worker_id=hand_out.worker_id,
                   sy_payload_ref="1" if hand_out.by_reference else "0")
    return headers


@pytest.mark.parametrize("hand_out", [
    HandOut("t1", 1, "gpu-1", "media.transcode", False),
    HandOut("t2", 7, "cpu.b_2", "media.transcode", True),
    HandOut("t3", 2, "w", "ml.train", False, soft_time_limit=30.0, hard_time_limit=60.5),
    HandOut("t4", 1, "w", "ml.train", True, serializer="msgpack"),
])
def test_a_templated_hand_out_equals_celerys_own_message(hand_out: HandOut) -> None:
    messages = CeleryMessages()
    messages.envelope(HandOut("warm", 3, "other", hand_out.task_name, hand_out.by_reference,
                              hand_out.soft_time_limit, hand_out.hard_time_limit, hand_out.serializer))
    envelope = messages.envelope(hand_out)  # from the template the first call left
    message = assembled(envelope)
    assert envelope.queue == f"sy.w.{hand_out.worker_id}"
    assert message["headers"] == celery_built(messages, hand_out)
    properties = message["properties"]
    assert properties["correlation_id"] == hand_out.celery_task_id
    assert properties["delivery_info"] == {"exchange": "", "routing_key": envelope.queue}
    assert properties["body_encoding"] == ("base64" if hand_out.serializer == "msgpack" else "utf-8")
    assert message["content-type"] == ("application/x-msgpack" if hand_out.serializer == "msgpack"
                                       else "application/json")


def test_every_hand_out_gets_its_own_delivery_tag() -> None:
    messages = CeleryMessages()
    tags = {assembled(messages.envelope(HandOut(f"t{i}", 1, "w", "x.y", False)))["properties"]["delivery_tag"]
            for i in range(50)}
    assert len(tags) == 50
