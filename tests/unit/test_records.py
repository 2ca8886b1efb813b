"""The one codec between typed records and what Redis stores: nothing is lost either way."""

from __future__ import annotations

from dataclasses import fields

from hypothesis import given
from hypothesis import strategies as st
from switchyard.wire import FENCE_FIELD, PAYLOAD_FIELDS

from scheduler.core.model import GpuNeed, TaskClass, TaskState, WorkerType
from scheduler.state.records import (
    CELERY_BODY_FIELD,
    RECORD_FIELDS,
    SERIALIZER_FIELDS,
    SUBMIT_FIELDS,
    TaskRecord,
    WorkerRecord,
    decode_fields,
    decode_task,
    decode_worker,
    encode_submitted,
    encode_task,
    encode_worker,
)

_text = st.text(max_size=40)
_labels = st.dictionaries(_text, _text, max_size=4)
_count = st.integers(min_value=0, max_value=2**53)
_time = st.floats(min_value=0, allow_nan=False)
"""Unix seconds (0.0 = unset) as the store keeps them, infinity included."""

TASK_FIELDS: dict[str, st.SearchStrategy[object]] = {
    "task_id": _text,
    "name": _text,
    "queue": _text,
    "state": st.sampled_from(TaskState),
    "priority": st.integers(min_value=1, max_value=10),
    "seq": _count,
    "task_class": st.sampled_from(TaskClass),
    "gpu": st.sampled_from(GpuNeed),
    "gpu_memory_mb": _count,
    "labels": _labels,
    "preferred_labels": _labels,
    "content_type": _text,
    "user_initiated": st.booleans(),
    "submitted_at": _time,
    "reason": _text,
    "class_reason": _text,
    "worker_id": _text,
    "payload_bytes": _count,
    "payload_digest": _text,
    "idempotency_key": _text,
    "retry_policy": _text,
    "failures": _count,
    "soft_time_limit": _time,
    "hard_time_limit": _time,
    "attempt": _count,
    "dispatched_at": _time,
    "gpu_index": st.none() | st.integers(min_value=0, max_value=64),
    "served_queue": _text,
    "started_at": _time,
    "progress": st.floats(min_value=0, max_value=1),
    "progress_message": _text,
    "finished_at": _time,
    "result_json": _text,
    "error": _text,
    "traceback": _text,
    "error_type": _text,
    "next_attempt_at": _time,
    "start_returns": _count,
    "serializer": st.sampled_from(["json", "msgpack"]),
    "body_ready": st.booleans(),
}
task_records = st.builds(TaskRecord, **TASK_FIELDS)


def test_the_strategy_covers_every_task_field():
    assert set(TASK_FIELDS) == {f.name for f in fields(TaskRecord)}


@given(task_records)
def test_a_task_record_survives_encode_then_decode(record):
    assert decode_task(encode_task(record)) == record


@given(task_records)
def test_every_encoded_task_field_is_text(record):
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in encode_task(record).items())


@given(task_records)
def test_submission_writes_only_the_submission_fields_and_keeps_them(record):
    submitted = encode_task(record, SUBMIT_FIELDS)
    assert set(submitted) == set(SUBMIT_FIELDS)
    assert encode_task(decode_task(submitted), SUBMIT_FIELDS) == submitted


@given(task_records)
def test_a_json_submission_writes_no_serializer_fields_and_others_keep_theirs(record):
    flat = encode_submitted(record)
    written = dict(zip(flat[::2], flat[1::2], strict=True))
    assert written.keys() <= set(SUBMIT_FIELDS) | (set(SERIALIZER_FIELDS) if record.serializer != "json" else set())
    assert {"serializer", "body_ready"} <= written.keys() if record.serializer != "json" else True
    back = decode_task(written)
    assert (back.serializer, back.body_ready) == (
        (record.serializer, record.body_ready) if record.serializer != "json" else ("json", False))
    # Fields at their default are left out; every submitted field reads back as it was.
    assert encode_task(back, SUBMIT_FIELDS) == encode_task(record, SUBMIT_FIELDS)


def test_a_submission_leaves_out_fields_at_their_default():
    record = TaskRecord(task_id="t1", name="x.y", queue="cpu_standard", priority=5, submitted_at=12.5,
                        reason="by default", class_reason="by default")
    flat = encode_submitted(record)
    assert dict(zip(flat[::2], flat[1::2], strict=True)) == {
        "id": "t1", "name": "x.y", "queue": "cpu_standard", "priority": "5", "submitted_at": "12.5",
        "reason": "by default", "class_reason": "by default"}


def test_the_submit_script_owns_sequence_state_and_attempt():
    assert not {"seq", "state", "attempt"} & set(SUBMIT_FIELDS)
    assert {"id", "name", "queue", "payload_digest", "idem"} <= set(SUBMIT_FIELDS)


@given(task_records)
def test_a_task_record_survives_an_hmget_of_the_record_fields(record):
    stored = encode_task(record)
    assert decode_fields([stored.get(name) for name in RECORD_FIELDS]) == record


def test_an_hmget_of_a_missing_task_reads_as_none():
    assert decode_fields([None] * len(RECORD_FIELDS)) is None


def test_reads_never_fetch_the_payload_or_the_fence():
    assert set(RECORD_FIELDS) == set(encode_task(TaskRecord("t", "n", "q")))
    assert not (set(PAYLOAD_FIELDS) | {FENCE_FIELD, CELERY_BODY_FIELD}) & set(RECORD_FIELDS)


@given(task_records, st.integers(min_value=0, max_value=2**20))
def test_a_pending_task_travels_by_reference_above_the_inline_limit(record, limit):
    pending = record.pending_task(limit)
    if record.serializer == "msgpack":
        # Decided at submission: a msgpack task travels inline exactly when its body was built then.
        assert pending.by_reference is not record.body_ready
    else:
        assert pending.by_reference is (record.payload_bytes > limit)
    assert pending.serializer == record.serializer
    assert (pending.task_id, pending.attempt, pending.task_name, pending.seq) == (
        record.task_id, record.attempt, record.name, record.seq)
    limits = (record.soft_time_limit, record.hard_time_limit)
    assert pending.time_limits == (limits if any(limits) else None)


@given(st.builds(
    WorkerRecord,
    worker_id=_text,
    worker_type=st.sampled_from(WorkerType),
    slots=st.integers(min_value=1, max_value=4096),
    labels=_labels,
))
def test_a_worker_record_survives_encode_then_decode(record):
    assert decode_worker(record.worker_id, encode_worker(record)) == record
