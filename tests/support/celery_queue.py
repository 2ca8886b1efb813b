"""The Celery messages hand-outs put on workers' queues, as tests build and read them.

`hand_out_request` builds a `HandOutRequest` with a real envelope (scheduler/dispatch.py), as the
placement loop does; `message_text` assembles a queued message from an envelope and the stored
payload exactly as scheduler/state/scripts/dispatch.lua does (the fake state uses it);
`decode_message` reads a queued message back as kombu's Redis transport and Celery would
(JSON envelope, `body_encoding` utf-8: the body is the protocol-2 JSON itself, not base64).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import msgpack
from switchyard.wire import HEADER_ATTEMPT, HEADER_PAYLOAD_REF, HEADER_TASK_ID, HEADER_WORKER_ID

from scheduler.dispatch import BODY_EMBED, CeleryMessages, Envelope, HandOut
from scheduler.state.interface import HandOutRequest

REPR_LIMIT = 1024
"""Bytes of argsrepr/kwargsrepr the hand-out script keeps (dispatch.lua's REPR_LIMIT)."""

_MESSAGES: CeleryMessages | None = None


def messages() -> CeleryMessages:
    """One message builder for the whole test run (building a Celery app per test is waste)."""
    global _MESSAGES
    if _MESSAGES is None:
        _MESSAGES = CeleryMessages()
    return _MESSAGES


def hand_out_request(task_id: str, worker_id: str = "w1", attempt: int = 1, *, by_reference: bool = False,
                     gpu_index: int | None = None, served_queue: str = "", reason: str = "",
                     task_name: str = "t.job", serializer: str = "json") -> HandOutRequest:
    """A placement decision to commit, with the Celery message the engine would build for it."""
    envelope = messages().envelope(HandOut(task_id, attempt, worker_id, task_name, by_reference,
                                           serializer=serializer))
    return HandOutRequest(task_id, worker_id, attempt, by_reference, gpu_index, served_queue,
                          reason or f"placed on {worker_id}", envelope)


def _clip(text: str) -> str:
    """dispatch.lua's clip: at most REPR_LIMIT bytes, cut on a UTF-8 character boundary."""
    raw = text.encode()
    if len(raw) <= REPR_LIMIT:
        return text
    cut = REPR_LIMIT
    while cut > 0 and 128 <= raw[cut] < 192:
        cut -= 1
    return raw[:cut].decode() + "..."


def message_text(envelope: Envelope, args_json: str, kwargs_json: str, celery_body: str | None = None) -> str:
    """The queued message: the envelope's pieces with the body, argsrepr and kwargsrepr between
    them, each JSON-encoded (the script uses cjson; the decoded values are the same). A msgpack
    envelope takes its ready-made body (`celery_body`, base64) as it is."""
    head, after_body, after_argsrepr, tail = envelope.pieces
    body = f"[{args_json}, {kwargs_json}, {BODY_EMBED}]" if celery_body is None else celery_body
    encode = json.dumps
    return (head + encode(body, ensure_ascii=False) + after_body + encode(_clip(args_json), ensure_ascii=False)
            + after_argsrepr + encode(_clip(kwargs_json), ensure_ascii=False) + tail)


@dataclass(frozen=True)
class QueuedMessage:
    """One message on a worker's Celery queue, as the worker side reads it."""

    task_id: str
    attempt: int
    worker_id: str
    task_name: str
    celery_id: str
    by_reference: bool
    args: Any
    kwargs: Any
    headers: dict[str, Any]
    properties: dict[str, Any]

    @property
    def key(self) -> tuple[str, int, str, str, str, bool, str, str]:
        """What two backends must agree on (the envelope's random ids aside)."""
        return (self.task_id, self.attempt, self.worker_id, self.task_name, self.celery_id, self.by_reference,
                json.dumps(self.args, sort_keys=True), json.dumps(self.kwargs, sort_keys=True))


def decode_message(raw: str) -> QueuedMessage:
    """A queued message as the worker's consumer decodes it (utf-8 body: raw protocol-2 JSON;
    base64 body: msgpack, as kombu's Redis transport stores binary bodies)."""
    envelope = json.loads(raw)
    properties = envelope["properties"]
    if envelope["content-type"] == "application/x-msgpack":
        assert properties["body_encoding"] == "base64", properties
        assert envelope["content-encoding"] == "binary"
        args, kwargs, embed = msgpack.unpackb(base64.b64decode(envelope["body"]), raw=False)
    else:
        assert properties["body_encoding"] == "utf-8", properties
        assert envelope["content-type"] == "application/json"
        args, kwargs, embed = json.loads(envelope["body"])
    assert embed == json.loads(BODY_EMBED)
    headers = envelope["headers"]
    return QueuedMessage(
        task_id=headers[HEADER_TASK_ID], attempt=headers[HEADER_ATTEMPT], worker_id=headers[HEADER_WORKER_ID],
        task_name=headers["task"], celery_id=headers["id"], by_reference=headers[HEADER_PAYLOAD_REF] == "1",
        args=args, kwargs=kwargs, headers=headers, properties=properties,
    )
