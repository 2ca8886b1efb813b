"""Validation of submissions: every check a task passes before anything is stored.

Plain data in (`TaskInput` and the `SubmitLimits` taken from configuration), a domain error out
(`InvalidArgument` or `PayloadTooLarge`) with a message a person can act on. It knows nothing
of the settings object, gRPC or Redis; the API layer builds a `TaskInput` per submitted task and
the engine checks each one (and a batch as a whole) here before classification.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from switchyard.wire import MAX_LABEL_VALUE_CHARS

from scheduler.core.model import MAX_PRIORITY, GpuNeed, Submission
from scheduler.errors import InvalidArgument, PayloadTooLarge, SchedulerError

TASK_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
"""What a Celery task name may look like."""

MAX_GPU_MEMORY_MB = 10_000_000
"""More MiB than this is a unit mistake, not a request."""
MAX_IDEMPOTENCY_KEY_CHARS = 256
MAX_LABEL_KEY_CHARS = 128
BATCH_ERRORS_SHOWN = 20
"""A batch error spells out this many invalid items and counts the rest."""


@dataclass(frozen=True)
class TaskInput:
    """One submission as the API layer hands it over (already plain data, not yet validated)."""

    submission: Submission
    args_json: str
    """Positional arguments as a JSON array ("" = none)."""
    kwargs_json: str
    """Keyword arguments as a JSON object ("" = none)."""
    idempotency_key: str = ""
    soft_time_limit_seconds: float = 0.0
    hard_time_limit_seconds: float = 0.0
    allow_unschedulable: bool = False
    """Accept it even when no known worker could ever run it (scheduler/core/schedulable.py)."""
    serializer: str = ""
    """Encoding of its Celery message: "json", "msgpack", or "" for its queue's."""


@dataclass(frozen=True)
class SubmitLimits:
    """What submissions are checked against, taken from configuration."""

    max_payload_bytes: int
    """Largest args_json + kwargs_json accepted, in bytes of UTF-8."""
    queue_names: tuple[str, ...]
    """Queues a submission may name, in configuration order (as error messages list them)."""
    retry_policy_names: tuple[str, ...]
    """Retry policies a submission may name."""


def validate_input(item: TaskInput, limits: SubmitLimits, index: int | None = None,
                   valid_payloads: set[tuple[str, str]] | None = None) -> None:
    """Raise InvalidArgument / PayloadTooLarge with a message a person can act on.

    `index` is the item's position in a batch; messages then start with `tasks[<index>]: `.
    `valid_payloads`, shared by the items of one call, remembers the argument texts found
    valid, so a batch whose items repeat them (the same kwargs, say) parses each text once.
    """
    where = f"tasks[{index}]: " if index is not None else ""
    sub = item.submission
    if not TASK_NAME_PATTERN.match(sub.task_name):
        raise InvalidArgument(
            f"{where}task_name {sub.task_name!r} is not a Celery task name "
            "(letters, digits, '_', '.', ':', '-'; 1-200 characters)"
        )
    size = len(item.args_json.encode()) + len(item.kwargs_json.encode())
    if size > limits.max_payload_bytes:
        raise PayloadTooLarge(
            f"{where}args_json + kwargs_json is {size} bytes; the limit is {limits.max_payload_bytes} "
            "(SWITCHYARD_MAX_PAYLOAD_BYTES). Store large data elsewhere and pass a reference."
        )
    _check_payload(item, where, valid_payloads)
    _check_routing(sub, limits, where)
    if not (math.isfinite(item.soft_time_limit_seconds) and math.isfinite(item.hard_time_limit_seconds)):
        raise InvalidArgument(f"{where}time limits must be finite numbers of seconds (0 = none)")
    if item.soft_time_limit_seconds < 0 or item.hard_time_limit_seconds < 0:
        raise InvalidArgument(f"{where}time limits must not be negative")
    if item.hard_time_limit_seconds and item.soft_time_limit_seconds > item.hard_time_limit_seconds:
        raise InvalidArgument(f"{where}soft_time_limit_seconds must not exceed hard_time_limit_seconds")
    if len(item.idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(f"{where}idempotency_key is longer than {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    for key, value in sub.labels.items():
        if not key or len(key) > MAX_LABEL_KEY_CHARS or len(value) > MAX_LABEL_VALUE_CHARS:
            raise InvalidArgument(
                f"{where}label {key!r}: keys must be 1-{MAX_LABEL_KEY_CHARS} "
                f"and values 0-{MAX_LABEL_VALUE_CHARS} characters"
            )


def _check_payload(item: TaskInput, where: str, valid: set[tuple[str, str]] | None) -> None:
    """args_json must be a JSON array and kwargs_json a JSON object (either may be empty)."""
    for name, raw, kind in (("args_json", item.args_json, list), ("kwargs_json", item.kwargs_json, dict)):
        if not raw or (valid is not None and (name, raw) in valid):
            continue
        try:
            value = _parse_json(raw)
        except ValueError as exc:
            raise InvalidArgument(f"{where}{name} is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidArgument(f"{where}{name} is nested too deeply to decode; flatten it") from None
        if not isinstance(value, kind):
            wanted = "a JSON array" if kind is list else "a JSON object"
            raise InvalidArgument(f"{where}{name} must be {wanted}, got {type(value).__name__}")
        if valid is not None:
            valid.add((name, raw))


ORJSON_TRUSTED_NESTING = 200
"""A text with at most this many brackets and braces cannot nest deep enough for the standard
library's decoder to give up, so orjson's verdict on it is the standard library's."""


def _parse_json(raw: str) -> object:
    """JSON text as Python, accepting exactly what `json.loads` accepts (and Celery's worker
    decodes), with its error messages. orjson (in C, about 10x faster) decides a text that cannot
    nest deeper than `ORJSON_TRUSTED_NESTING`; it is strict RFC 8259, so a text it refuses (NaN,
    lone surrogates, or plain bad JSON) is judged again by the standard library. Deeper texts go
    to the standard library alone: orjson takes nesting to 1,024 levels, where `json.loads` runs
    out of recursion somewhat below 1,000 and the task could never be decoded by its worker."""
    if raw.count("[") + raw.count("{") <= ORJSON_TRUSTED_NESTING:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def _check_routing(sub: Submission, limits: SubmitLimits, where: str) -> None:
    """Priority, queue, GPU request and retry policy must name something that exists and agree."""
    if not 0 <= sub.priority <= MAX_PRIORITY:
        raise InvalidArgument(f"{where}priority {sub.priority} is outside 0-10 (0 lets the scheduler decide)")
    if sub.queue and sub.queue not in limits.queue_names:
        known = ", ".join(limits.queue_names)
        raise InvalidArgument(f"{where}queue {sub.queue!r} does not exist; known queues: {known}")
    if sub.gpu_memory_mb > MAX_GPU_MEMORY_MB:
        raise InvalidArgument(f"{where}gpu_memory_mb {sub.gpu_memory_mb} is not a plausible amount of MiB")
    if sub.gpu is GpuNeed.NONE and sub.gpu_memory_mb:
        raise InvalidArgument(f"{where}gpu=none contradicts gpu_memory_mb={sub.gpu_memory_mb}")
    if sub.retry_policy and sub.retry_policy not in limits.retry_policy_names:
        known_policies = ", ".join(sorted(limits.retry_policy_names))
        raise InvalidArgument(f"{where}retry_policy {sub.retry_policy!r} does not exist; known: {known_policies}")


def batch_error(problems: Sequence[SchedulerError], shown: int = BATCH_ERRORS_SHOWN) -> SchedulerError:
    """One error naming every invalid item (by index); nothing of the batch was accepted.

    A single problem is returned as it is. Several are InvalidArgument when any of them is
    (a malformed item outweighs an oversized one), else of the first problem's kind.
    """
    if len(problems) == 1:
        return problems[0]
    kind = InvalidArgument if any(isinstance(p, InvalidArgument) for p in problems) else type(problems[0])
    lines = [str(p) for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"... and {len(problems) - shown} more invalid item(s)")
    return kind(f"{len(problems)} invalid item(s), nothing accepted: " + "; ".join(lines))


def payload_digest(item: TaskInput) -> str:
    """SHA-256 of task name and payload: an idempotency key reused with another payload is caught by it.

    An empty args/kwargs counts as `[]`/`{}`, so leaving one out and sending it empty agree.
    """
    digest = hashlib.sha256()
    for part in (item.submission.task_name, item.args_json or "[]", item.kwargs_json or "{}"):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()
