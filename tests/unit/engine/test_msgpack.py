"""MessagePack hand-outs: a queue or a submission asks for them; the body is built once at
submission and travels inline (or the payload by reference when it is large), and what msgpack
cannot carry is refused at submission with the item named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core.model import Submission
from scheduler.core.validate import TaskInput
from scheduler.errors import InvalidArgument
from scheduler.settings import Settings
from tests.support.fakes import make_engine
from tests.unit.engine.drive import connect, place


def item(args_json: str = "[1]", kwargs_json: str = "{}", serializer: str = "", queue: str = "") -> TaskInput:
    return TaskInput(Submission("t.job", queue=queue), args_json, kwargs_json, serializer=serializer)


async def test_a_msgpack_submission_is_handed_out_as_msgpack_with_its_arguments_whole() -> None:
    rig = make_engine()
    kwargs = '{"big": 18446744073709551615, "empty": {}, "list": [], "text": "\\u00e9"}'
    (accepted,) = await rig.engine.admission.submit([item('[1, 2.5, null]', kwargs, serializer="msgpack")])
    record = await rig.state.tasks.get(accepted.task_id)
    assert record is not None and (record.serializer, record.body_ready) == ("msgpack", True)
    await connect(rig, "w1")
    (hand_out,) = await place(rig, "w1")
    assert hand_out.properties["body_encoding"] == "base64" and not hand_out.by_reference
    assert (hand_out.args, hand_out.kwargs) == ([1, 2.5, None], {"big": 2**64 - 1, "empty": {}, "list": [],
                                                                 "text": "\u00e9"})


async def test_a_queue_s_serializer_applies_unless_the_submission_names_one() -> None:
    settings = Settings()
    queues = tuple(replace(q, serializer="msgpack") if q.name == "cpu_standard" else q for q in settings.queues)
    rig = make_engine(replace(settings, queues=queues))
    by_queue, explicit_json = await rig.engine.admission.submit(
        [item(queue="cpu_standard"), item(queue="cpu_standard", serializer="json")])
    assert [(r.serializer if r else None) for r in await rig.state.tasks.load(
        [by_queue.task_id, explicit_json.task_id])] == ["msgpack", "json"]
    await connect(rig, "w1", slots=2)
    hand_outs = await place(rig, "w1")
    assert [(h.properties["body_encoding"], h.args) for h in hand_outs] == [("base64", [1]), ("utf-8", [1])]


async def test_a_large_msgpack_payload_travels_by_reference() -> None:
    rig = make_engine(replace(Settings(), inline_payload_bytes=10))
    (accepted,) = await rig.engine.admission.submit([item('["' + "x" * 100 + '"]', serializer="msgpack")])
    record = await rig.state.tasks.get(accepted.task_id)
    assert record is not None and (record.serializer, record.body_ready) == ("msgpack", False)
    await connect(rig, "w1")
    (hand_out,) = await place(rig, "w1")
    assert hand_out.by_reference and (hand_out.args, hand_out.kwargs) == ([], {})
    assert hand_out.properties["body_encoding"] == "base64"


async def test_what_msgpack_cannot_carry_is_refused_naming_the_item_and_nothing_is_accepted() -> None:
    rig = make_engine()
    with pytest.raises(InvalidArgument, match=r"tasks\[1\]: msgpack cannot carry an integer beyond 64 bits"):
        await rig.engine.admission.submit([item(serializer="msgpack"), item(f"[{2**64}]", serializer="msgpack")])
    assert await rig.state.indexes.pending_ids() == []
    # The same integer is fine as JSON (exact as text end to end).
    (accepted,) = await rig.engine.admission.submit([item(f"[{2**64}]")])
    assert await rig.state.indexes.pending_ids() == [accepted.task_id]
