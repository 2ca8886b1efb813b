"""Typed records of what the store keeps, with their one encoding: the only place in Python
where stored field names appear (the Lua scripts in scripts/ are the other side of the same
layout; each names the fields it touches in its header).

A task hash holds text only; `decode` turns it into a `TaskRecord` once, at the store's edge,
and `encode` is its inverse (a round trip keeps every field; tests/unit prove it). Times are
Unix seconds; an unset time is 0.0 (stored as "").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from scheduler.core.model import GpuNeed, PendingTask, TaskClass, TaskState, WorkerType, task_kind


@dataclass(slots=True)
class TaskRecord:
    """One task as stored in `P:task:<id>` (metadata and state; the payload lives apart).
    Slotted: a big SubmitBatch builds one per task (a third faster, a fifth of the memory)."""

    task_id: str
    name: str
    queue: str
    state: TaskState = TaskState.PENDING
    priority: int = 0
    """Base priority 1-10 given at submission (aging is computed, never stored)."""
    seq: int = 0
    """Global submission order; ties within a priority go first-in first-out."""
    task_class: TaskClass = TaskClass.CPU
    gpu: GpuNeed = GpuNeed.UNSPECIFIED
    gpu_memory_mb: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    """Required worker labels."""
    preferred_labels: Mapping[str, str] = field(default_factory=dict)
    """Soft affinity labels."""
    content_type: str = ""
    user_initiated: bool = False
    submitted_at: float = 0.0
    reason: str = ""
    """Why the task is where it is now (classification, placement, retry...)."""
    class_reason: str = ""
    """Why it was classified as it was (kept when `reason` moves on)."""
    worker_id: str = ""
    """Worker of the current attempt ("" while pending or retrying)."""
    payload_bytes: int = 0
    payload_digest: str = ""
    idempotency_key: str = ""
    retry_policy: str = ""
    failures: int = 0
    """Failed attempts so far (worker losses do not count)."""
    soft_time_limit: float = 0.0
    hard_time_limit: float = 0.0
    attempt: int = 0
    """Hand-outs so far; the fence admits only the current one."""
    dispatched_at: float = 0.0
    gpu_index: int | None = None
    """Device the current attempt's GPU memory is reserved on."""
    served_queue: str = ""
    """Queue whose per-worker limit the current attempt counts against ("" = its own)."""
    started_at: float = 0.0
    progress: float = 0.0
    progress_message: str = ""
    finished_at: float = 0.0
    result_json: str = ""
    error: str = ""
    traceback: str = ""
    error_type: str = ""
    next_attempt_at: float = 0.0
    start_returns: int = 0
    """Times a hand-out of it missed the start deadline and it went back to pending."""
    serializer: str = "json"
    """Encoding of its Celery message: json or msgpack (scheduler/dispatch.py)."""
    body_ready: bool = False
    """The hash holds its msgpack Celery body ready-made (CELERY_BODY_FIELD), so the payload
    travels inline; a msgpack task without one travels by reference. Decided at submission."""

    def by_reference(self, inline_limit: int) -> bool:
        """Whether its payload travels by reference (the worker loads it from Redis), not in the
        Celery message: payloads over `inline_limit` bytes do. A msgpack body is built at
        submission (or not): the limit in force then decided."""
        return not self.body_ready if self.serializer == "msgpack" else self.payload_bytes > inline_limit

    def pending_task(self, inline_limit: int, seq: int | None = None) -> PendingTask:
        """The core's view of this task while it waits for a worker (payloads larger than
        `inline_limit` bytes travel by reference; `seq` overrides the record's). Tasks of one
        kind share one `TaskKind` (`task_kind`, in TaskKind's field order)."""
        kind = task_kind(
            sys.intern(self.queue), self.priority, self.task_class, self.gpu, self.gpu_memory_mb,
            tuple(sorted(self.labels.items())), sys.intern(self.class_reason),
            tuple(sorted(self.preferred_labels.items())), sys.intern(self.name),
            self.by_reference(inline_limit),
            (self.soft_time_limit, self.hard_time_limit) if self.soft_time_limit or self.hard_time_limit else None,
            "msgpack" if self.serializer == "msgpack" else "json",
        )
        return PendingTask.of_kind(self.task_id, self.seq if seq is None else seq, self.submitted_at,
                                   self.attempt, kind)


def _time(raw: str | None) -> float:
    return float(raw) if raw else 0.0


def _time_text(value: float) -> str:
    return repr(value) if value else ""


def _labels(raw: str | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in json.loads(raw or "{}").items()}


def _labels_text(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(labels), sort_keys=True) if labels else "{}"


# Stored field name -> (record attribute, decode, encode). Every name the scheduler reads or
# writes in a task hash is here and nowhere else in Python.
_CODEC: dict[str, tuple[str, Any, Any]] = {
    "id": ("task_id", str, str),
    "name": ("name", str, str),
    "queue": ("queue", str, str),
    "state": ("state", lambda raw: TaskState(raw or TaskState.PENDING), str),
    "priority": ("priority", lambda raw: int(raw or 0), str),
    "seq": ("seq", lambda raw: int(raw or 0), str),
    "class": ("task_class", lambda raw: TaskClass(raw or TaskClass.CPU), str),
    "gpu": ("gpu", lambda raw: GpuNeed(raw or GpuNeed.UNSPECIFIED), str),
    "gpu_mem": ("gpu_memory_mb", lambda raw: int(raw or 0), str),
    "labels": ("labels", _labels, _labels_text),
    "preferred_labels": ("preferred_labels", _labels, _labels_text),
    "content_type": ("content_type", str, str),
    "user_initiated": ("user_initiated", lambda raw: raw == "1", lambda v: "1" if v else "0"),
    "submitted_at": ("submitted_at", _time, _time_text),
    "reason": ("reason", str, str),
    "class_reason": ("class_reason", str, str),
    "worker": ("worker_id", str, str),
    "payload_bytes": ("payload_bytes", lambda raw: int(raw or 0), str),
    "payload_digest": ("payload_digest", str, str),
    "idem": ("idempotency_key", str, str),
    "retry_policy": ("retry_policy", str, str),
    "failures": ("failures", lambda raw: int(raw or 0), str),
    "soft_limit": ("soft_time_limit", _time, _time_text),
    "hard_limit": ("hard_time_limit", _time, _time_text),
    "attempt": ("attempt", lambda raw: int(raw or 0), str),
    "dispatched_at": ("dispatched_at", _time, _time_text),
    "gpu_index": ("gpu_index", lambda raw: int(raw) if raw else None,
                  lambda v: "" if v is None else str(v)),
    "served_queue": ("served_queue", str, str),
    "started_at": ("started_at", _time, _time_text),
    "progress": ("progress", lambda raw: float(raw or 0), repr),
    "progress_msg": ("progress_message", str, str),
    "finished_at": ("finished_at", _time, _time_text),
    "result_json": ("result_json", str, str),
    "error": ("error", str, str),
    "traceback": ("traceback", str, str),
    "error_type": ("error_type", str, str),
    "next_attempt_at": ("next_attempt_at", _time, _time_text),
    "start_returns": ("start_returns", lambda raw: int(raw or 0), str),
    "serializer": ("serializer", lambda raw: raw or "json", str),
    "body_ready": ("body_ready", lambda raw: raw == "1", lambda v: "1" if v else "0"),
}
assert {attr for attr, _d, _e in _CODEC.values()} == {f.name for f in fields(TaskRecord)}

SERIALIZER_FIELDS = ("serializer", "body_ready")
"""Written at submission only for a msgpack task: a JSON task's hash lacks them (their absence
reads as json), so the JSON submit path writes exactly what it wrote before msgpack existed."""

RECORD_FIELDS = tuple(_CODEC)
"""Every field of a task hash that a record holds: what reads fetch (HMGET), never the payload."""

CELERY_BODY_FIELD = "celery_body"
"""Payload field of a msgpack task whose body travels inline: its protocol-2 body as msgpack,
base64-encoded (as kombu's Redis transport stores a binary body); dispatch.lua splices it in."""

SUBMIT_FIELDS = tuple(name for name in _CODEC if name not in {
    "seq", "state", "attempt", "dispatched_at", "gpu_index", "served_queue",
    "started_at", "progress", "progress_msg", "finished_at", "result_json", "error", "traceback",
    "error_type", "next_attempt_at", "start_returns", *SERIALIZER_FIELDS,
})
"""Fields written at submission; the submit script adds seq, state and attempt itself (and
`encode_submitted` SERIALIZER_FIELDS for a task that is not JSON)."""


def decode_fields(values: Sequence[str | None]) -> TaskRecord | None:
    """A record from an HMGET of RECORD_FIELDS (None when the task does not exist)."""
    if values[0] is None:
        return None
    return decode_task({name: value for name, value in zip(RECORD_FIELDS, values, strict=True) if value is not None})


def decode_task(raw: Mapping[str, str]) -> TaskRecord:
    """A stored task hash as a typed record (fields the hash lacks take their defaults)."""
    values: dict[str, Any] = {}
    for name, (attr, decode, _encode) in _CODEC.items():
        text = raw.get(name)
        if text is not None:
            values[attr] = decode(text)
    return TaskRecord(**values)


def encode_task(record: TaskRecord, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """The record as hash fields: all of them, or only `names`."""
    codec = _CODEC.items() if names is None else [(name, _CODEC[name]) for name in names]
    return {name: encode(getattr(record, attr)) for name, (attr, _decode, encode) in codec}


_DEFAULT_TEXT = encode_task(TaskRecord(task_id="", name="", queue=""))
"""Each field's text for the record's default value: what a missing field decodes to."""
_REQUIRED = ("id", "name", "queue")
"""Written even when empty: a record has no default for them."""
_SUBMIT_CODEC = [(name, _CODEC[name][0], _CODEC[name][2], None if name in _REQUIRED else _DEFAULT_TEXT[name])
                 for name in SUBMIT_FIELDS]


def encode_submitted(record: TaskRecord) -> list[str]:
    """SUBMIT_FIELDS of the record as a flat [field, value, ...] list (the submit hot path), and
    SERIALIZER_FIELDS when the task is not JSON. A field at its default value is left out: a
    missing field reads as the default (`decode_task`), and a typical task's hash is half as big."""
    flat: list[str] = []
    for name, attr, encode, default in _SUBMIT_CODEC:
        text = encode(getattr(record, attr))
        if text != default:
            flat += (name, text)
    if record.serializer != "json":
        flat += ["serializer", record.serializer, "body_ready", "1" if record.body_ready else "0"]
    return flat


@dataclass(frozen=True)
class WorkerRecord:
    """A worker's last registration, kept in `P:workers` so a restart knows its ledgers' owners."""

    worker_id: str
    worker_type: WorkerType
    slots: int
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_memory_mb: tuple[int, ...] | None = None
    """Total memory of each of its GPUs, MiB (empty: none); None when not recorded (a
    registration written before it was kept). Admission judges GPU requests against it."""
    agent_instance: str = ""
    """Id of the agent process that registered it (after a scheduler restart, a hello with
    another id means the worker restarted too)."""


def encode_worker(record: WorkerRecord) -> str:
    """The registration as the JSON value stored under its worker id."""
    value: dict[str, object] = {"worker_type": record.worker_type.value, "slots": record.slots,
                                "labels": dict(record.labels)}
    if record.gpu_memory_mb is not None:
        value["gpu_memory_mb"] = list(record.gpu_memory_mb)
    if record.agent_instance:
        value["agent_instance"] = record.agent_instance
    return json.dumps(value, sort_keys=True)


def decode_worker(worker_id: str, raw: str) -> WorkerRecord:
    """A stored registration (unknown or missing parts take safe defaults)."""
    data = json.loads(raw or "{}")
    return WorkerRecord(
        worker_id=worker_id,
        worker_type=WorkerType(data.get("worker_type") or WorkerType.CPU),
        slots=int(data.get("slots") or 1),
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        gpu_memory_mb=(tuple(int(mb) for mb in data["gpu_memory_mb"])
                       if isinstance(data.get("gpu_memory_mb"), list) else None),
        agent_instance=str(data.get("agent_instance") or ""),
    )
