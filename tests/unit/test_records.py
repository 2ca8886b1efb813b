"""The one codec between typed records and what Redis stores: nothing is lost either way."""

from __future__ import annotations

from dataclasses import fields

from hypothesis import given
from hypothesis import strategies as st

from scheduler.core.model import GpuNeed, TaskClass, TaskState, WorkerType
from scheduler.state.records import (
    SUBMIT_FIELDS,
    TaskRecord,
    WorkerRecord,
    decode_task,
    decode_worker,
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
    "published": st.booleans(),
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


def test_the_submit_script_owns_sequence_state_and_attempt():
    assert not {"seq", "state", "attempt"} & set(SUBMIT_FIELDS)
    assert {"id", "name", "queue", "payload_digest", "idem"} <= set(SUBMIT_FIELDS)


@given(st.builds(
    WorkerRecord,
    worker_id=_text,
    worker_type=st.sampled_from(WorkerType),
    slots=st.integers(min_value=1, max_value=4096),
    labels=_labels,
))
def test_a_worker_record_survives_encode_then_decode(record):
    assert decode_worker(record.worker_id, encode_worker(record)) == record
