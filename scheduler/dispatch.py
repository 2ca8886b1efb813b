"""Celery messages for hand-outs: the only module that knows Celery's message protocol.

The hand-out script (state/scripts/dispatch.lua) commits "task T goes to worker W as attempt N"
and pushes the message onto W's own queue in one atomic step, so a crash can never leave a
committed hand-out unpublished or a published one uncommitted, and no separate publish round trip
is made. This module builds that message with Celery's own protocol-2 construction
(`app.amqp.as_task_v2`) in kombu's Redis-transport envelope, exactly as `send_task` would, with two
differences the consumer handles natively: the body travels as UTF-8 JSON (kombu's
`body_encoding="utf-8"`) rather than base64, and the parts that only the script knows (the stored
args and kwargs, and their repr) are spliced in there. The envelope therefore goes to the script as
four pieces, between which it inserts the body, argsrepr and kwargsrepr, each JSON-encoded (cjson).

A task whose serializer is msgpack gets the envelope `send_task(serializer="msgpack")` would
produce: content-type application/x-msgpack, content-encoding binary, and the body as msgpack
bytes, base64-encoded (kombu's Redis transport stores every body it publishes so; `body_encoding`
"base64" tells the consumer to decode it). Lua has no base64 and the stored JSON cannot be
transcoded faithfully in Lua (cjson reads every number as a double and cannot tell an empty
object from an empty array), so that body is built here once, at submission
(`msgpack_celery_body`), stored with the task, and spliced in by the script as it is. The JSON
path is untouched.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

import msgpack
from celery import Celery
from switchyard.wire import (
    HEADER_ATTEMPT,
    HEADER_PAYLOAD_REF,
    HEADER_TASK_ID,
    HEADER_WORKER_ID,
    worker_queue,
)

from scheduler.ids import random_uuid

BODY_EMBED = json.dumps({"callbacks": None, "errbacks": None, "chain": None, "chord": None})
"""Third element of a protocol-2 body: no canvas, as for a plain `send_task`."""

_EMBED = json.loads(BODY_EMBED)

SERIALIZERS = ("json", "msgpack")
"""Encodings a hand-out's Celery message may use."""
_CONTENT_TYPE = {"json": ("application/json", "utf-8"), "msgpack": ("application/x-msgpack", "binary")}
"""(content-type, content-encoding) of each, as kombu's serializer registry names them."""
_BODY_ENCODING = {"json": "utf-8", "msgpack": "base64"}
"""How the Redis transport stores each body: JSON text as it is, binary msgpack as base64."""


def msgpack_celery_body(args_json: str, kwargs_json: str) -> str:
    """The protocol-2 body `[args, kwargs, embed]` as msgpack, base64-encoded.

    Raises ValueError when msgpack cannot carry the arguments: an integer outside -2^63 to
    2^64 - 1 (JSON has no such limit). Nesting is no limit in practice: validation refuses JSON
    nested deeper than Python's parser reads, well within what msgpack packs and unpacks.
    """
    try:
        packed = msgpack.packb([json.loads(args_json or "[]"), json.loads(kwargs_json or "{}"), _EMBED],
                               use_bin_type=True)
    except OverflowError:
        raise ValueError("msgpack cannot carry an integer beyond 64 bits; send it as a string, or use "
                         "serializer json") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"msgpack cannot carry these arguments ({exc}); flatten them, or use serializer json") \
            from None
    return base64.b64encode(packed).decode("ascii")


EMPTY_MSGPACK_BODY = msgpack_celery_body("[]", "{}")
"""The msgpack body of a by-reference hand-out (the worker loads the arguments from Redis)."""


def payload_mode(by_reference: bool, serializer: str) -> str:
    """How dispatch.lua builds a hand-out's body: '0' JSON from the stored arguments, '1' JSON with
    none (by reference), '2' the stored msgpack body, '3' EMPTY_MSGPACK_BODY (by reference)."""
    return ("2" if serializer == "msgpack" else "0") if not by_reference else \
        ("3" if serializer == "msgpack" else "1")


_BODY, _ARGSREPR, _KWARGSREPR = "\x00sy-body\x00", "\x00sy-argsrepr\x00", "\x00sy-kwargsrepr\x00"
_MARKERS = tuple(json.dumps(marker) for marker in (_BODY, _ARGSREPR, _KWARGSREPR))
"""The placeholders as they appear in the dumped envelope, in the order they appear there."""


@dataclass(frozen=True)
class HandOut:
    """One attempt to hand to a worker."""

    task_id: str
    attempt: int
    worker_id: str
    task_name: str
    by_reference: bool
    """True when args/kwargs stay in Redis and the worker loads them when it claims the attempt."""
    soft_time_limit: float | None = None
    """Seconds before Celery raises SoftTimeLimitExceeded in the task."""
    hard_time_limit: float | None = None
    """Seconds before Celery kills the task's process."""
    serializer: str = "json"
    """Encoding of the message body: json or msgpack."""

    @property
    def celery_task_id(self) -> str:
        """Celery's id of this hand-out: unique per attempt."""
        return f"{self.task_id}-{self.attempt}"


@dataclass(frozen=True)
class Envelope:
    """A hand-out's Celery message in four pieces, with the queue it goes to: the script writes
    head, body, piece 2, argsrepr, piece 3, kwargsrepr, tail (each value JSON-encoded)."""

    queue: str
    pieces: tuple[str, str, str, str]
    serializer: str = "json"
    """Encoding of the body the script splices in: json or msgpack (see `payload_mode`)."""


_SLOTS = {
    "celery_id": "\x00sy-celery-id\x00", "task_id": "\x00sy-task-id\x00", "attempt": "\x00sy-attempt\x00",
    "worker_id": "\x00sy-worker-id\x00", "queue": "\x00sy-queue\x00", "delivery_tag": "\x00sy-delivery-tag\x00",
    "body": _BODY, "argsrepr": _ARGSREPR, "kwargsrepr": _KWARGSREPR,
}
"""Placeholders of an envelope template: the per-hand-out values and the script's three parts."""
_SLOT_OF = {json.dumps(marker): name for name, marker in _SLOTS.items()}
_SLOT_PATTERN = re.compile("|".join(re.escape(text) for text in _SLOT_OF))
_SPLICED = ("body", "argsrepr", "kwargsrepr")
TEMPLATE_CACHE_SIZE = 4096
"""Envelope templates kept (one per task name, time limits, serializer and payload mode)."""


class _Template:
    """An envelope as text, cut at its placeholders into the four pieces the script joins
    (around body, argsrepr and kwargsrepr); each piece is its text with the per-hand-out values
    left out, and where they go."""

    def __init__(self, text: str) -> None:
        parts: list[str] = []
        position = 0
        for match in _SLOT_PATTERN.finditer(text):
            parts += [text[position:match.start()], _SLOT_OF[match.group()]]
            position = match.end()
        parts.append(text[position:])
        assert [p for p in parts[1::2] if p in _SPLICED] == list(_SPLICED), parts
        pieces: list[tuple[list[str], tuple[tuple[int, str], ...]]] = []
        texts: list[str] = []
        slots: list[tuple[int, str]] = []
        for index, part in enumerate(parts):
            if not index % 2:
                texts.append(part)
            elif part in _SPLICED:
                pieces.append((texts, tuple(slots)))
                texts, slots = [], []
            else:
                slots.append((len(texts), part))
                texts.append("")  # the value goes here
        pieces.append((texts, tuple(slots)))
        self._pieces = tuple(pieces)
        """Per piece: its texts, with an empty string where each value goes, and (place, name)."""

    def pieces(self, values: dict[str, str]) -> tuple[str, str, str, str]:
        """The four pieces with `values` (JSON text) in place; cut where the script splices."""
        filled = []
        for texts, slots in self._pieces:  # a join of a few strings: str.format costs 3x as much
            if slots:
                texts = texts.copy()
                for place, name in slots:
                    texts[place] = values[name]
            filled.append("".join(texts))
        head, after_body, after_argsrepr, tail = filled
        return head, after_body, after_argsrepr, tail


class CeleryMessages:
    """Builds hand-out messages as Celery's `send_task` would (JSON or msgpack, protocol 2, never pickle).

    Celery builds each kind of message once (task name, time limits, serializer, payload mode),
    with placeholders for what differs per hand-out; a hand-out fills them in (a few
    microseconds, where Celery's construction takes tens)."""

    def __init__(self) -> None:
        # No broker connection is ever opened: the app only lends its message construction.
        self.app = Celery("switchyard-scheduler", set_as_current=False)
        self.app.conf.update(task_serializer="json", accept_content=["json"])
        self._reply_to = str(uuid.uuid4())
        self._templates: dict[tuple[Any, ...], _Template] = {}

    def envelope(self, hand_out: HandOut) -> Envelope:
        """The message for `hand_out`, split where the script inserts body, argsrepr and kwargsrepr."""
        key = (hand_out.task_name, hand_out.soft_time_limit, hand_out.hard_time_limit, hand_out.serializer,
               hand_out.by_reference)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= TEMPLATE_CACHE_SIZE:
                self._templates.clear()
            template = self._templates[key] = _Template(self._template_text(hand_out))
        queue = worker_queue(hand_out.worker_id)
        values = {
            "celery_id": _json(hand_out.celery_task_id), "task_id": _json(hand_out.task_id),
            "attempt": str(int(hand_out.attempt)), "worker_id": _json(hand_out.worker_id),
            "queue": _json(queue), "delivery_tag": f'"{random_uuid()}"',
        }
        return Envelope(queue, template.pieces(values), hand_out.serializer)

    def _template_text(self, hand_out: HandOut) -> str:
        """Celery's message for this kind of hand-out, placeholders where the values go."""
        message = self.app.amqp.as_task_v2(
            _SLOTS["celery_id"], hand_out.task_name, args=(), kwargs={},
            soft_time_limit=hand_out.soft_time_limit, time_limit=hand_out.hard_time_limit,
            argsrepr=_ARGSREPR, kwargsrepr=_KWARGSREPR,
        )
        headers: dict[str, Any] = dict(message.headers)
        headers.update({
            HEADER_TASK_ID: _SLOTS["task_id"],
            HEADER_ATTEMPT: _SLOTS["attempt"],
            HEADER_WORKER_ID: _SLOTS["worker_id"],
            HEADER_PAYLOAD_REF: "1" if hand_out.by_reference else "0",
        })
        content_type, content_encoding = _CONTENT_TYPE[hand_out.serializer]
        envelope = {
            "body": _BODY,
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": {
                "correlation_id": _SLOTS["celery_id"],
                "reply_to": self._reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": _SLOTS["queue"]},
                "priority": 0,
                "body_encoding": _BODY_ENCODING[hand_out.serializer],
                "delivery_tag": _SLOTS["delivery_tag"],
            },
        }
        return json.dumps(envelope)


def _json(text: str) -> str:
    """`text` as a JSON string literal, as `json.dumps(text)` writes it."""
    return encode_basestring_ascii(text)
