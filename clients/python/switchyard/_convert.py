"""Protobuf → Python conversions shared by the client's views: enum names, times, JSON text.

Views read ``state == "succeeded"`` and aware datetimes instead of enum numbers and unset
``Timestamp`` messages; these helpers are the one place that translation is written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp


def enum_label(enum_type: Any, value: int, prefix: str) -> str:
    """``TASK_STATE_SUCCEEDED`` → ``"succeeded"``; a value this client does not know → ``"unknown(<n>)"``."""
    try:
        name = str(enum_type.Name(value))
    except ValueError:
        return f"unknown({value})"
    return name.removeprefix(prefix).lower()


def timestamp(message: Any, field_name: str) -> datetime | None:
    """The message's ``Timestamp`` field as an aware UTC datetime, or None when it is unset."""
    if not message.HasField(field_name):
        return None
    stamp: Timestamp = getattr(message, field_name)
    return stamp.ToDatetime(tzinfo=UTC)


def decode_json(text: str) -> Any:
    """JSON text as Python data; None for "", and the text itself when it is not JSON."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end``, or None when either is unknown."""
    if start is None or end is None:
        return None
    return (end - start).total_seconds()
