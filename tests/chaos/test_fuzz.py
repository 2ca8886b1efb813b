"""Chaos: fuzzed and malformed requests across every RPC get clear statuses and change nothing.

10,000 requests under `make chaos` (1,000 in `make test`), drawn with plain `random` from a
fixed seed (printed; `CHAOS_SEED=<n>` replays another), spread over every Scheduler RPC and
AgentGateway.Connect:

* typed requests with hostile field values: empty, huge (past the payload limit and past the
  gRPC message limit), control characters, every Unicode plane, deeply nested or non-finite
  JSON, out-of-range enums and numbers, NaN and infinite doubles, maps with odd keys, batches
  of every size, names of real queues and tasks mixed with made-up ones;
* streams: WatchTask on made-up and real tasks; Connect with random message sequences, with
  and without a hello first, hellos of fuzzed workers, heartbeats and exits out of order;
* raw bytes: mutated serializations and random bytes sent through a raw channel method with
  identity serializers. Bytes that protobuf parses go to the main test; bytes it cannot parse
  (invalid UTF-8 in a string field, broken wire format) are kept for
  `test_undecodable_requests_are_invalid_argument`, which documents a known bug.

No answer may be INTERNAL or UNKNOWN; the scheduler must stay up; afterwards its state must be
intact: every acknowledged fuzz submission reaches a terminal state (the test cancels what is
left), the queues count nothing left over, and a normal task runs to success on a real worker.
"""

from __future__ import annotations

import collections
import json
import os
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from switchyard.v1 import agent_pb2, agent_pb2_grpc, worker_pb2
from switchyard.v1 import scheduler_pb2 as pb

from tests.chaos.conftest import FULL, scale
from tests.chaos.ledger import Ledger, assert_balanced
from tests.support.stack import CHANNEL_OPTIONS, S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900 if FULL else 200)]

REQUESTS = scale(1000, 10_000)
SEED = int(os.environ.get("CHAOS_SEED", "20261130"))
PAYLOAD_LIMIT = 1024 * 1024
"""The fuzzed scheduler's payload limit (small, so 'too large' needs no huge message)."""
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
QUEUES = ["gpu_priority", "gpu_fallback", "cpu_standard"]
TASK_NAMES = ["e2e.sleep", "e2e.echo", "e2e.fail", "celery.backend_cleanup", "a", "x" * 200]
SCHEDULER = pb.DESCRIPTOR.services_by_name["Scheduler"]
SERVICE = f"/{SCHEDULER.full_name}/"
UNARY_REQUESTS: dict[str, type[Message]] = {
    method.name: message_factory.GetMessageClass(method.input_type)
    for method in SCHEDULER.methods if not (method.client_streaming or method.server_streaming)
}
"""Every unary RPC of the Scheduler service and its request type, read from the contract, so an
RPC added later is fuzzed too (by `generic_message` until it gets a generator of its own)."""
STREAMS = {"WatchTask"}
"""The Scheduler's streaming RPCs, each fuzzed by its own function (as is AgentGateway.Connect)."""


def test_every_rpc_is_fuzzed() -> None:
    streams = {m.name for m in SCHEDULER.methods if m.client_streaming or m.server_streaming}
    assert streams == STREAMS, "a new streaming RPC: teach the fuzzer to call it"
    gateway = agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"]
    assert {m.name for m in gateway.methods} == {"Connect"}, "a new AgentGateway RPC: fuzz it"


class Values:
    """Hostile values for each field type, from one seeded `random.Random`."""

    def __init__(self, rng: random.Random, known_task_ids: list[str]) -> None:
        self.rng = rng
        self.known_task_ids = known_task_ids

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def text(self, max_len: int = 40) -> str:
        rng = self.rng
        kind = rng.randrange(10)
        if kind == 0:
            return ""
        if kind == 1:
            return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, max_len)))
        if kind == 2:  # any code point but lone surrogates (protobuf refuses to encode those)
            return "".join(chr(rng.choice([rng.randrange(0x20, 0xD800), rng.randrange(0xE000, 0x110000)]))
                           for _ in range(rng.randrange(1, max_len)))
        if kind == 3:
            return "".join(chr(rng.randrange(0, 0x20)) for _ in range(rng.randrange(1, 10)))
        if kind == 4:
            return rng.choice(["../../etc/passwd", "*", "%s%n", "sy.w.", "'; DROP TABLE", "\x00", "NaN",
                               "\u202e", "\ufeff", "null", "{}", "[]", " ", "\t\n"])
        if kind == 5:
            return rng.choice(QUEUES + TASK_NAMES)
        if kind == 6 and self.known_task_ids:
            return rng.choice(self.known_task_ids)
        if kind == 7 and self.chance(0.05):
            return "x" * rng.choice([PAYLOAD_LIMIT // 2, PAYLOAD_LIMIT + 10, 3 * PAYLOAD_LIMIT])
        return "".join(rng.choice(string.ascii_letters + string.digits + "._-:")
                       for _ in range(rng.randrange(1, max_len)))

    def json_text(self, want: type) -> str:
        rng = self.rng
        kind = rng.randrange(12)
        if kind < 4:
            value: Any = [self.text(8) for _ in range(rng.randrange(4))] if want is list else {
                self.text(8): self.text(8) for _ in range(rng.randrange(4))}
            return json.dumps(value)
        if kind == 4:
            # Nesting past Python's recursion limit is a known bug (see test_deeply_nested_json_...).
            return nested_json(want, rng.choice([10, 100, 500]))
        if kind == 5:
            return rng.choice(["[NaN]", "[Infinity]", "[-Infinity]", "[1e999]", '{"a": NaN}', "[1]" * 3])
        if kind == 6:
            return rng.choice(["", "null", "1", '"s"', "true", "[", "{", "[1,]", "{'a': 1}", "\x00"])
        if kind == 7:
            return json.dumps({"a": 1}) if want is list else json.dumps([1])
        if kind == 8 and self.chance(0.1):
            return json.dumps(["y" * rng.choice([PAYLOAD_LIMIT // 4, PAYLOAD_LIMIT + 1])])
        return self.text()

    def structured(self) -> Any:
        """A value for a Struct/ListValue: hostile numbers (NaN, infinities, beyond 2^53 and 2^64),
        text, nesting, nothing."""
        rng = self.rng
        kind = rng.randrange(6)
        if kind == 0:
            return self.double()
        if kind == 1:
            return float(rng.choice([2**53 + 1, 2**64, -(2**63) - 1, 10**300]))
        if kind == 2:
            return self.text(20)
        if kind == 3:
            return {"n": self.double(), "l": [self.text(4), None, True]}
        if kind == 4:
            return [[[]], {}]
        return None

    def uint(self, bits: int) -> int:
        top = (1 << bits) - 1
        return self.rng.choice([0, 1, 2, 10, 11, 255, top, top - 1, self.rng.randrange(top + 1)])

    def enum(self) -> int:
        return self.rng.choice([0, 1, 2, 3, 4, 5, 99, -1, 2**31 - 1, -(2**31)])

    def double(self) -> float:
        return self.rng.choice([0.0, -0.0, -1.0, 0.5, 3600.0, 1e308, 5e-324, float("nan"),
                                float("inf"), float("-inf"), self.rng.uniform(-1e6, 1e6)])

    def labels(self) -> dict[str, str]:
        size = self.rng.choice([0, 0, 1, 3, 20, 300 if self.chance(0.1) else 5])
        return {self.text(70) or "k": self.text(300) for _ in range(size)}

    def worker_id(self) -> str:
        # Fuzzed workers only: never a real worker's id (a hello would take over its stream).
        return self.rng.choice([f"fz-{self.rng.randrange(50)}", "", "-bad", "a" * 200, "fz x", "fz/\u00e9"])


def nested_json(want: type, depth: int) -> str:
    """A JSON array (or object) nested `depth` deep."""
    return "[" * depth + "]" * depth if want is list else '{"a":' * depth + "1" + "}" * depth


def submit_request(v: Values) -> pb.SubmitTaskRequest:
    """Every field hostile, or (40%) a valid submission with a few hostile fields."""
    if v.chance(0.4):
        request = pb.SubmitTaskRequest(task_name="e2e.sleep", args_json='[0.01, "fuzz"]', content_type="text")
        hostile = submit_request(v) if v.chance(0.7) else pb.SubmitTaskRequest()
        for descriptor, value in hostile.ListFields():
            if v.chance(0.25):
                if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
                    getattr(request, descriptor.name).update(value)
                elif descriptor.message_type is not None:  # structured args/kwargs
                    getattr(request, descriptor.name).CopyFrom(value)
                else:
                    setattr(request, descriptor.name, value)
        return request
    request = pb.SubmitTaskRequest()
    if v.chance(0.9):
        request.task_name = v.rng.choice(TASK_NAMES) if v.chance(0.5) else v.text()
    if v.chance(0.8):
        request.args_json = v.json_text(list)
    if v.chance(0.6):
        request.kwargs_json = v.json_text(dict)
    # Structured arguments (alone, or clashing with the text form above) and the serializer.
    if v.chance(0.2):
        request.args.extend(v.structured() for _ in range(v.rng.choice([0, 1, 3])))
    if v.chance(0.2):
        request.kwargs.update({v.text(8): v.structured() for _ in range(v.rng.choice([0, 1, 3]))})
    if v.chance(0.3):
        request.serializer = v.enum()
    if v.chance(0.5):
        request.content_type = v.text(20)
    if v.chance(0.3):
        request.gpu = v.enum()
    if v.chance(0.3):
        request.gpu_memory_mb = v.uint(64)
    if v.chance(0.5):
        request.priority = v.uint(32)
    if v.chance(0.4):
        request.queue = v.text()
    if v.chance(0.3):
        request.idempotency_key = v.text(300)
    if v.chance(0.3):
        request.labels.update(v.labels())
    if v.chance(0.2):
        request.preferred_labels.update(v.labels())
    request.user_initiated = v.chance(0.3)
    if v.chance(0.3):
        request.retry_policy = v.rng.choice(["none", "default", "", v.text()])
    if v.chance(0.3):
        request.soft_time_limit_seconds = v.double()
    if v.chance(0.3):
        request.hard_time_limit_seconds = v.double()
    if v.chance(0.3):
        request.batch_size = v.uint(32)
    return request


def generic_message(v: Values, message: Message, depth: int = 0) -> Message:
    """Fill any message from its descriptor with hostile values (nested messages 3 deep)."""
    for descriptor in message.DESCRIPTOR.fields:
        if not v.chance(0.6):
            continue
        entry = descriptor.message_type
        if entry is not None and entry.GetOptions().map_entry:
            if all(f.type == f.TYPE_STRING for f in entry.fields):
                getattr(message, descriptor.name).update(v.labels())
        elif descriptor.is_repeated:
            values = getattr(message, descriptor.name)
            for _ in range(v.rng.choice([0, 1, 3, 40])):
                if entry is not None:
                    generic_message(v, values.add(), depth + 1)
                else:
                    values.append(scalar(v, descriptor))
        elif entry is not None:
            if depth < 3:
                child = getattr(message, descriptor.name)
                child.SetInParent()
                generic_message(v, child, depth + 1)
        else:
            setattr(message, descriptor.name, scalar(v, descriptor))
    return message


def scalar(v: Values, descriptor: Any) -> Any:
    """A hostile value of one scalar field's type."""
    kind = descriptor.type
    if kind == descriptor.TYPE_STRING:
        return v.text()
    if kind == descriptor.TYPE_BYTES:
        return bytes(v.rng.randrange(256) for _ in range(v.rng.randrange(64)))
    if kind == descriptor.TYPE_BOOL:
        return v.chance(0.5)
    if kind in (descriptor.TYPE_DOUBLE, descriptor.TYPE_FLOAT):
        return v.double()
    if kind == descriptor.TYPE_ENUM:
        return v.enum()
    if kind in (descriptor.TYPE_UINT32, descriptor.TYPE_FIXED32):
        return v.uint(32)
    if kind in (descriptor.TYPE_UINT64, descriptor.TYPE_FIXED64):
        return v.uint(64)
    if kind in (descriptor.TYPE_INT64, descriptor.TYPE_SINT64, descriptor.TYPE_SFIXED64):
        return v.rng.choice([0, -1, 1, 2**63 - 1, -(2**63), v.rng.randrange(-(2**63), 2**63)])
    return v.rng.choice([0, -1, 1, 2**31 - 1, -(2**31), v.rng.randrange(-(2**31), 2**31)])


def unary_request(method: str, v: Values) -> Message:
    """A fuzzed request for one unary RPC: its own generator, or (sometimes, and always for an RPC
    that has none) one filled from the descriptor."""
    if method not in KNOWN_REQUESTS or v.chance(0.2):
        return generic_message(v, UNARY_REQUESTS[method]())
    if method == "SubmitTask":
        return submit_request(v)
    if method == "SubmitBatch":
        size = v.rng.choice([0, 1, 2, 5, 11, 50, 500 if v.chance(0.05) else 3])
        if v.chance(0.4):  # valid items, so some batches get through (odd priorities and labels)
            return pb.SubmitBatchRequest(tasks=[pb.SubmitTaskRequest(
                task_name="e2e.sleep", args_json="[0.01]", content_type=v.rng.choice(["text", "audio", ""]),
                priority=v.rng.randrange(11), labels={"fuzz": v.text(20)} if v.chance(0.2) else {},
                user_initiated=v.chance(0.5)) for _ in range(size)])
        return pb.SubmitBatchRequest(tasks=[submit_request(v) for _ in range(size)])
    if method == "ExplainPlacement":
        request = pb.ExplainPlacementRequest()
        if v.chance(0.6):
            request.task.CopyFrom(submit_request(v))
        if v.chance(0.5):
            request.task_id = v.text()
        return request
    if method in {"GetTask", "CancelTask", "RetryDeadLetter"}:
        return UNARY_REQUESTS[method](task_id=v.text())
    if method in {"PauseQueue", "ResumeQueue"}:
        return UNARY_REQUESTS[method](queue=v.text())
    if method in {"DrainWorker", "UndrainWorker", "UnquarantineWorker"}:
        return UNARY_REQUESTS[method](worker_id=v.worker_id() if v.chance(0.5) else v.text())
    if method == "ListDeadLetters":
        return pb.ListDeadLettersRequest(queue=v.text() if v.chance(0.5) else "", limit=v.uint(32))
    if method == "PurgeDeadLetters":
        return pb.PurgeDeadLettersRequest(task_ids=[v.text() for _ in range(v.rng.choice([0, 1, 5, 200]))],
                                          queue=v.text() if v.chance(0.3) else "", all=v.chance(0.2))
    return UNARY_REQUESTS[method]()  # ListQueues, ListWorkers: nothing to fill


KNOWN_REQUESTS = frozenset({
    "SubmitTask", "SubmitBatch", "ExplainPlacement", "GetTask", "CancelTask", "RetryDeadLetter",
    "PauseQueue", "ResumeQueue", "DrainWorker", "UndrainWorker", "UnquarantineWorker",
    "ListDeadLetters", "PurgeDeadLetters", "ListQueues", "ListWorkers",
})
"""RPCs with a generator of their own in `unary_request` (the others are filled generically)."""


def valid_hello(v: Values) -> agent_pb2.ConnectRequest:
    return agent_pb2.ConnectRequest(hello=agent_pb2.AgentHello(
        worker_id=f"fz-{v.rng.randrange(50)}", worker_type=v.rng.choice([0, 1, 2, 3]),
        slots=v.rng.randrange(1, 5), labels={"fuzz": "yes"}))


def connect_message(v: Values) -> agent_pb2.ConnectRequest:
    kind = v.rng.randrange(5)
    if kind in (0, 1):
        caps = worker_pb2.WorkerCapabilities(
            cpu_count=v.uint(32), memory_total_mb=v.uint(64), gpu_simulated=v.chance(0.5),
            driver_version=v.text(), hostname=v.text(),
            gpus=[worker_pb2.GpuDevice(index=v.uint(32), name=v.text(), uuid=v.text(),
                                       memory_total_mb=v.uint(64), memory_free_mb=v.uint(64),
                                       utilization_percent=v.uint(32))
                  for _ in range(v.rng.choice([0, 1, 2, 64 if v.chance(0.05) else 0]))],
        )
        hello = agent_pb2.AgentHello(
            worker_id=v.worker_id(), worker_type=v.enum(), capabilities=caps, labels=v.labels(),
            slots=v.uint(32), celery_queue=v.text(), agent_version=v.text(), celery_pid=v.rng.choice([0, -1, 2**62]),
            registered_tasks=[v.text() for _ in range(v.rng.choice([0, 1, 5]))],
        )
        return agent_pb2.ConnectRequest(hello=hello)
    if kind == 2:
        return agent_pb2.ConnectRequest(heartbeat=agent_pb2.AgentHeartbeat(
            sequence=v.uint(64), labels=v.labels(), labels_replaced=v.chance(0.5),
            load=worker_pb2.WorkerLoad(active_tasks=v.uint(32), cpu_percent=v.double(),
                                       memory_percent=v.double())))
    if kind == 3:
        return agent_pb2.ConnectRequest(worker_exited=agent_pb2.WorkerExited(
            exit_code=v.rng.choice([0, 1, -9, 2**31 - 1, -(2**31)]), reason=v.text()))
    return agent_pb2.ConnectRequest()  # no message set at all


def mutated_bytes(v: Values, request_type: type[Message], good: bytes) -> bytes:
    """A serialization bent out of shape, or plain random bytes."""
    rng = v.rng
    kind = rng.randrange(6)
    data = bytearray(good)
    if kind == 0 or not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == 1:
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 2:
        return bytes(data[: rng.randrange(len(data))])
    if kind == 3:  # unknown fields appended: must be ignored, not refused
        field_number = rng.randrange(100, 2000)
        return bytes(data) + bytes([(field_number << 3 | 2) & 0x7F | 0x80, field_number >> 4, 3]) + b"abc"
    if kind == 4:  # a string field (number 1 in every request that has one) with invalid UTF-8
        bad = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
        return bytes([0x0A, len(bad)]) + bad + bytes(data)
    return bytes(data) + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))


def decodes(request_type: type[Message], data: bytes) -> bool:
    try:
        request_type.FromString(data)
    except DecodeError:
        return False
    return True


@dataclass
class FuzzRun:
    """What the fuzzer sent and what came back."""

    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    by_rpc: dict[str, collections.Counter[str]] = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    forbidden: list[str] = field(default_factory=list)
    undecodable: list[tuple[str, bytes]] = field(default_factory=list)

    def note(self, rpc: str, code: grpc.StatusCode, details: str, what: str) -> None:
        self.codes[code.name] += 1
        self.by_rpc[rpc][code.name] += 1
        if code in FORBIDDEN:
            self.forbidden.append(f"{rpc} -> {code.name}: {details[:300]!r} (request: {what[:300]})")


def _code(err: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    if isinstance(err, grpc.Call):
        return err.code(), err.details() or ""
    return grpc.StatusCode.UNKNOWN, repr(err)


def fuzz(stack: Stack, ledger: Ledger, rng: random.Random, requests: int) -> FuzzRun:
    run = FuzzRun()
    known_ids: list[str] = []
    v = Values(rng, known_ids)
    big_channel = grpc.insecure_channel(stack.address, options=[
        ("grpc.max_send_message_length", 64 * 1024 * 1024), ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    raw = {name: big_channel.unary_unary(SERVICE + name, request_serializer=None, response_deserializer=None)
           for name in UNARY_REQUESTS}
    typed = {name: big_channel.unary_unary(SERVICE + name, request_serializer=t.SerializeToString,
                                           response_deserializer=None)
             for name, t in UNARY_REQUESTS.items()}
    gateway = agent_pb2_grpc.AgentGatewayStub(big_channel)  # type: ignore[no-untyped-call]
    rpcs = [*UNARY_REQUESTS, "WatchTask", "Connect", "raw"]
    try:
        for _ in range(requests):
            rpc = rng.choice(rpcs)
            if rpc == "WatchTask":
                _watch(stack, v, run)
            elif rpc == "Connect":
                _connect(gateway, v, run)
            elif rpc == "raw":
                name = rng.choice(list(UNARY_REQUESTS))
                request_type = UNARY_REQUESTS[name]
                data = mutated_bytes(v, request_type, unary_request(name, v).SerializeToString())
                if not decodes(request_type, data):
                    run.undecodable.append((name, data))
                    continue
                _unary(raw[name], data, f"raw {name}", data.hex()[:200], run, ledger, known_ids)
            else:
                request = unary_request(rpc, v)
                _unary(typed[rpc], request, rpc, str(request)[:300], run, ledger, known_ids)
    finally:
        big_channel.close()
    return run


def _unary(call: Any, request: Any, rpc: str, what: str, run: FuzzRun, ledger: Ledger,
           known_ids: list[str]) -> None:
    try:
        reply = call(request, timeout=10)
    except grpc.RpcError as err:
        code, details = _code(err)
        run.note(rpc, code, details, what)
        return
    run.note(rpc, grpc.StatusCode.OK, "", what)
    name = rpc.removeprefix("raw ")
    if name == "SubmitTask":
        task_id = pb.SubmitTaskResponse.FromString(reply).task_id
        ledger.acknowledge(task_id, "fuzz")
        known_ids.append(task_id)
    elif name == "SubmitBatch":
        for result in pb.SubmitBatchResponse.FromString(reply).results:
            ledger.acknowledge(result.task_id, "fuzz")
            known_ids.append(result.task_id)


def _watch(stack: Stack, v: Values, run: FuzzRun) -> None:
    task_id = v.text()
    call = stack.stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=0.3)
    try:
        for _update in call:
            if v.chance(0.5):
                call.cancel()
                break
    except grpc.RpcError as err:
        code, details = _code(err)
        if code not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
            run.note("WatchTask", code, details, repr(task_id))
            return
    run.note("WatchTask", grpc.StatusCode.OK, "", repr(task_id))


def _connect(gateway: Any, v: Values, run: FuzzRun) -> None:
    messages = [connect_message(v) for _ in range(v.rng.choice([0, 1, 1, 2, 3, 6]))]
    if v.chance(0.5):
        messages.insert(0, valid_hello(v))
    call = gateway.Connect(iter(messages), timeout=1.0)
    what = " | ".join(m.WhichOneof("message") or "empty" for m in messages)
    try:
        for _response in call:
            pass
    except grpc.RpcError as err:
        code, details = _code(err)
        if code != grpc.StatusCode.DEADLINE_EXCEEDED:
            run.note("Connect", code, details, what)
            return
    run.note("Connect", grpc.StatusCode.OK, "", what)


@pytest.fixture()
def fuzz_rng() -> random.Random:
    print(f"fuzz seed {SEED} (replay with CHAOS_SEED={SEED})")
    return random.Random(SEED)


@pytest.mark.scheduler_env(SWITCHYARD_MAX_PAYLOAD_BYTES=str(PAYLOAD_LIMIT))
def test_fuzzed_requests_get_clear_statuses_and_leave_state_intact(
    stack: Stack, fuzz_rng: random.Random, record_figures: Callable[[str, dict[str, Any]], Any],
) -> None:
    ledger = Ledger()
    started = time.monotonic()
    run = fuzz(stack, ledger, fuzz_rng, REQUESTS)
    seconds = time.monotonic() - started
    record_figures("fuzz", {"seed": SEED, "requests": REQUESTS, "seconds": round(seconds, 1),
                            "status_codes": dict(run.codes), "undecodable_skipped": len(run.undecodable),
                            "by_rpc": {rpc: dict(codes) for rpc, codes in sorted(run.by_rpc.items())}})
    assert stack.scheduler_proc is not None and stack.scheduler_proc.poll() is None, stack.log_tails()
    assert not run.forbidden, f"seed {SEED}: {len(run.forbidden)} INTERNAL/UNKNOWN answer(s):\n  " + "\n  ".join(
        run.forbidden[:20])
    assert run.codes["OK"] > REQUESTS / 20, f"the fuzzer hardly ever got through validation: {run.codes}"

    # State intact: no queue left paused, nothing of the fuzz left running or waiting.
    for name in stack.queues():
        stack.resume(name)
    for task_id in list(ledger.acks):
        try:
            stack.cancel(task_id)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err  # already ended
    finals = ledger.settle(stack, timeout=60)
    stack.add_worker("real", "cpu", concurrency=1)
    stack.wait_workers_connected(["real"])
    probe = ledger.submit(stack, "e2e.sleep", [0.05, "after-fuzz"], tag="after-fuzz", content_type="text")
    assert probe is not None
    finals.update(ledger.settle(stack, ids=[probe], timeout=60))
    verdict = ledger.verify(stack, finals, expected=lambda ack: (
        {S.TASK_STATE_SUCCEEDED} if ack.tag == "after-fuzz" else {S.TASK_STATE_CANCELLED, S.TASK_STATE_FAILED}))
    assert_balanced(verdict, stack)
    for name, queue in stack.queues().items():
        assert (queue.pending, queue.processing, queue.paused) == (0, 0, False), (name, queue)
    assert stack.scheduler_proc.poll() is None


@pytest.mark.timeout(60)
def test_deeply_nested_json_is_invalid_argument(stack: Stack) -> None:
    codes: collections.Counter[str] = collections.Counter()
    for depth in (1000, 100_000):
        for args_json, kwargs_json in ((nested_json(list, depth), "{}"), ("[]", nested_json(dict, depth))):
            request = pb.SubmitTaskRequest(task_name="e2e.sleep", args_json=args_json, kwargs_json=kwargs_json)
            for method, message in ((stack.stub.SubmitTask, request),
                                    (stack.stub.SubmitBatch, pb.SubmitBatchRequest(tasks=[request])),
                                    (stack.stub.ExplainPlacement, pb.ExplainPlacementRequest(task=request))):
                try:
                    method(message, timeout=10)
                    codes["OK"] += 1
                except grpc.RpcError as err:
                    codes[_code(err)[0].name] += 1
    assert stack.scheduler_proc is not None and stack.scheduler_proc.poll() is None
    assert set(codes) == {"INVALID_ARGUMENT"}, dict(codes)


@pytest.mark.timeout(120)
def test_undecodable_requests_are_invalid_argument(stack: Stack) -> None:
    rng = random.Random(SEED)
    v = Values(rng, [])
    channel = grpc.insecure_channel(stack.address, options=CHANNEL_OPTIONS)
    codes: collections.Counter[str] = collections.Counter()
    try:
        sent = 0
        while sent < scale(50, 500):
            name = rng.choice(list(UNARY_REQUESTS))
            request_type = UNARY_REQUESTS[name]
            data = mutated_bytes(v, request_type, unary_request(name, v).SerializeToString())
            if decodes(request_type, data):
                continue
            call = channel.unary_unary(SERVICE + name, request_serializer=None, response_deserializer=None)
            try:
                call(data, timeout=10)
                codes["OK"] += 1
            except grpc.RpcError as err:
                codes[_code(err)[0].name] += 1
            sent += 1
    finally:
        channel.close()
    assert stack.scheduler_proc is not None and stack.scheduler_proc.poll() is None
    assert set(codes) == {"INVALID_ARGUMENT"}, dict(codes)
