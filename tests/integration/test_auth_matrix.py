"""Tokens with roles on the real scheduler (scheduler/api/auth.py), over real gRPC and HTTP on
loopback against real Redis.

The matrix: every method of every service the scheduler serves (Scheduler, AgentGateway, KEDA's
ExternalScaler, reflection, health; read from the service descriptors, so a new RPC cannot be
missed) x {no token, unknown token, client, admin, agent bound to another worker id, agent bound
to this one}, each with the status code it must get. Then token rotation and revocation without
a restart (a revoked agent is disconnected and its work fails over), the HTTP API's tokens, and
a search of every log line the module wrote for the tokens it used.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from itertools import product
from pathlib import Path
from typing import Any

import grpc
import pytest
from externalscaler import externalscaler_pb2 as keda
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from switchyard.v1 import agent_pb2, scheduler_pb2, worker_pb2

from scheduler.api.auth import AccessPolicy, TokenFile
from scheduler.api.http_api import HttpApi
from tests.integration.conftest import fast_settings
from tests.support.inproc import InProcessScheduler, ProtocolWorker
from tests.support.redis_server import RedisServer, wait_until
from tests.support.secret_logs import SecretWatch

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

SERVICES = (
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"],
    agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"],
    keda.DESCRIPTOR.services_by_name["ExternalScaler"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)
METHODS: dict[str, MethodDescriptor] = {f"{s.full_name}/{m.name}": m for s in SERVICES for m in s.methods}
"""Every method the scheduler serves, by `service/method`."""

WATCH = SecretWatch()
TOKENS = {name: WATCH.secret(f"sytok-{name}-{secrets.token_urlsafe(18)}")
          for name in ("client", "admin", "agent-other", "agent-this", "unknown", "rotated-in")}
"""Distinctive tokens: each appears nowhere but in the calls' metadata (the log search looks for them)."""
THIS_WORKER = "gpu-1"

# What each kind of caller may do, written here independently of the scheduler's own table.
CLIENT_OR_ADMIN = {f"switchyard.v1.Scheduler/{m}" for m in (
    "SubmitTask", "SubmitBatch", "GetTask", "WatchTask", "CancelTask", "ListTasks", "ListQueues", "ListWorkers",
    "ExplainPlacement", "ListDeadLetters")} | {f"externalscaler.ExternalScaler/{m}" for m in (
        "IsActive", "StreamIsActive", "GetMetricSpec", "GetMetrics")}
ADMIN_ONLY = {f"switchyard.v1.Scheduler/{m}" for m in (
    "PauseQueue", "ResumeQueue", "DrainWorker", "UndrainWorker", "UnquarantineWorker", "RetryDeadLetter",
    "PurgeDeadLetters")}
AGENT_ONLY = {"switchyard.v1.AgentGateway/Connect"}
ANY_TOKEN = {"grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}
OPEN = {"grpc.health.v1.Health/Check", "grpc.health.v1.Health/List", "grpc.health.v1.Health/Watch"}

POOL = {"workerType": "cpu"}


def _hello(worker_id: str) -> agent_pb2.ConnectRequest:
    return agent_pb2.ConnectRequest(hello=agent_pb2.AgentHello(
        worker_id=worker_id, worker_type=worker_pb2.WORKER_TYPE_CPU, slots=1, celery_queue=f"sy.w.{worker_id}",
        capabilities=worker_pb2.WorkerCapabilities(cpu_count=1)))


# The request each method is called with, and the code an admitted caller gets: OK, or the
# servicer's own NOT_FOUND for a name that does not exist (proof the call got past auth without
# changing anything the other cases depend on).
REQUESTS: dict[str, tuple[Callable[[], Any], grpc.StatusCode]] = {
    "switchyard.v1.Scheduler/SubmitTask": (lambda: scheduler_pb2.SubmitTaskRequest(
        task_name="auth.probe", queue="cpu_standard", allow_unschedulable=True), OK),
    "switchyard.v1.Scheduler/SubmitBatch": (lambda: scheduler_pb2.SubmitBatchRequest(tasks=[
        scheduler_pb2.SubmitTaskRequest(task_name="auth.probe", queue="cpu_standard", allow_unschedulable=True)]), OK),
    "switchyard.v1.Scheduler/GetTask": (lambda: scheduler_pb2.GetTaskRequest(task_id="no-such-task"), NOT_FOUND),
    "switchyard.v1.Scheduler/WatchTask": (lambda: scheduler_pb2.WatchTaskRequest(task_id="no-such-task"), NOT_FOUND),
    "switchyard.v1.Scheduler/CancelTask": (lambda: scheduler_pb2.CancelTaskRequest(task_id="no-such-task"), NOT_FOUND),
    "switchyard.v1.Scheduler/ListTasks": (scheduler_pb2.ListTasksRequest, OK),
    "switchyard.v1.Scheduler/ListQueues": (scheduler_pb2.ListQueuesRequest, OK),
    "switchyard.v1.Scheduler/PauseQueue": (lambda: scheduler_pb2.PauseQueueRequest(queue="no_such_queue"), NOT_FOUND),
    "switchyard.v1.Scheduler/ResumeQueue": (lambda: scheduler_pb2.ResumeQueueRequest(queue="no_such_queue"), NOT_FOUND),
    "switchyard.v1.Scheduler/ListWorkers": (scheduler_pb2.ListWorkersRequest, OK),
    "switchyard.v1.Scheduler/DrainWorker": (lambda: scheduler_pb2.DrainWorkerRequest(worker_id="no-such-worker"),
                                            NOT_FOUND),
    "switchyard.v1.Scheduler/UndrainWorker": (lambda: scheduler_pb2.UndrainWorkerRequest(worker_id="no-such-worker"),
                                              NOT_FOUND),
    "switchyard.v1.Scheduler/UnquarantineWorker": (
        lambda: scheduler_pb2.UnquarantineWorkerRequest(worker_id="no-such-worker"), NOT_FOUND),
    "switchyard.v1.Scheduler/ExplainPlacement": (
        lambda: scheduler_pb2.ExplainPlacementRequest(task_id="no-such-task"), NOT_FOUND),
    "switchyard.v1.Scheduler/ListDeadLetters": (scheduler_pb2.ListDeadLettersRequest, OK),
    "switchyard.v1.Scheduler/RetryDeadLetter": (lambda: scheduler_pb2.RetryDeadLetterRequest(task_id="no-such-task"),
                                                NOT_FOUND),
    "switchyard.v1.Scheduler/PurgeDeadLetters": (
        lambda: scheduler_pb2.PurgeDeadLettersRequest(task_ids=["no-such-task"]), OK),
    "switchyard.v1.AgentGateway/Connect": (lambda: _hello(THIS_WORKER), OK),
    "externalscaler.ExternalScaler/IsActive": (lambda: keda.ScaledObjectRef(name="w", scalerMetadata=POOL), OK),
    "externalscaler.ExternalScaler/StreamIsActive": (lambda: keda.ScaledObjectRef(name="w", scalerMetadata=POOL), OK),
    "externalscaler.ExternalScaler/GetMetricSpec": (lambda: keda.ScaledObjectRef(name="w", scalerMetadata=POOL), OK),
    "externalscaler.ExternalScaler/GetMetrics": (lambda: keda.GetMetricsRequest(
        scaledObjectRef=keda.ScaledObjectRef(name="w", scalerMetadata=POOL), metricName="switchyard-cpu"), OK),
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": (
        lambda: reflection_pb2.ServerReflectionRequest(list_services=""), OK),
    "grpc.health.v1.Health/Check": (health_pb2.HealthCheckRequest, OK),
    # Open; grpcio-health-checking's aio servicer may not implement List yet (1.85 does not).
    "grpc.health.v1.Health/List": (health_pb2.HealthListRequest, OK if "List" in vars(health.aio.HealthServicer)
                                   else grpc.StatusCode.UNIMPLEMENTED),
    "grpc.health.v1.Health/Watch": (health_pb2.HealthCheckRequest, OK),
}

CALLERS = ("no token", "unknown token", "client", "admin", "agent bound to another worker", "agent bound to this worker")


def metadata_of(caller: str) -> tuple[tuple[str, str], ...]:
    token = {"no token": None, "unknown token": TOKENS["unknown"], "client": TOKENS["client"],
             "admin": TOKENS["admin"], "agent bound to another worker": TOKENS["agent-other"],
             "agent bound to this worker": TOKENS["agent-this"]}[caller]
    return () if token is None else (("authorization", f"Bearer {token}"),)


def expected_code(method: str, caller: str) -> grpc.StatusCode:
    """The code `caller` must get from `method` (the matrix, from the issue's role rules)."""
    admitted_code = REQUESTS[method][1]
    if method in OPEN:
        return admitted_code
    if caller in ("no token", "unknown token"):
        return UNAUTHENTICATED
    if method in ANY_TOKEN:
        return admitted_code
    allowed = {"client": CLIENT_OR_ADMIN, "admin": CLIENT_OR_ADMIN | ADMIN_ONLY,
               "agent bound to another worker": AGENT_ONLY, "agent bound to this worker": AGENT_ONLY}[caller]
    if method not in allowed:
        return PERMISSION_DENIED
    if caller == "agent bound to another worker":
        return PERMISSION_DENIED  # the right role, the wrong worker id (the hello names gpu-1)
    return admitted_code


def token_file(path: Path, entries: list[dict[str, str]]) -> Path:
    """Write a token file (the digests of the tokens, never the tokens)."""
    lines = ["tokens:"]
    for entry in entries:
        digest = hashlib.sha256(TOKENS[entry["token"]].encode()).hexdigest()
        fields = {"name": entry["name"], "role": entry["role"], **({"worker_id": entry["worker_id"]}
                                                                    if "worker_id" in entry else {}),
                  "sha256": digest}
        lines.append("  - " + json.dumps(fields))
    path.write_text("\n".join(lines) + "\n")
    return path


STANDARD_TOKENS = [
    {"name": "ci", "role": "client", "token": "client"},
    {"name": "ops", "role": "admin", "token": "admin"},
    {"name": "agent-gpu-2", "role": "agent", "worker_id": "gpu-2", "token": "agent-other"},
    {"name": "agent-gpu-1", "role": "agent", "worker_id": THIS_WORKER, "token": "agent-this"},
]


def call(channel: grpc.Channel, method: str, request: Any, metadata: tuple[tuple[str, str], ...]
         ) -> tuple[grpc.StatusCode, str]:
    """Call `method` the way its descriptor says (unary or streaming); (code, details). A stream
    counts as OK once its first response arrives (then it is cancelled)."""
    descriptor = METHODS[method]
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    path = f"/{method}"
    serializers = {"request_serializer": type(request).SerializeToString,
                   "response_deserializer": response_class.FromString}
    done = threading.Event()

    def requests() -> Iterator[Any]:
        yield request
        done.wait(15)  # keep a bidi stream open until the first answer came (Connect)

    try:
        if not descriptor.server_streaming:
            channel.unary_unary(path, **serializers)(request, metadata=metadata, timeout=15)
            return OK, ""
        if descriptor.client_streaming:
            responses = channel.stream_stream(path, **serializers)(requests(), metadata=metadata, timeout=15)
        else:
            responses = channel.unary_stream(path, **serializers)(request, metadata=metadata, timeout=15)
        try:
            next(responses)
        finally:
            done.set()
        responses.cancel()
        return OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""


@pytest.fixture(scope="module", autouse=True)
def secret_watch() -> Iterator[SecretWatch]:
    """Every log line of the module is recorded; at the end none may hold a token."""
    WATCH.start()
    try:
        yield WATCH
    finally:
        WATCH.stop()
    assert WATCH.leaks() == []


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessScheduler]:
    """One scheduler with the standard token file, for the whole matrix (on a Redis of its own:
    the other tests flush the module's)."""
    redis = RedisServer().start()
    path = token_file(tmp_path_factory.mktemp("tokens") / "tokens.yaml", STANDARD_TOKENS)
    scheduler = InProcessScheduler(fast_settings(redis.url, auth_tokens_file=str(path))).start()
    try:
        yield scheduler
    finally:
        scheduler.stop()
        redis.stop()


def test_the_matrix_covers_every_method_the_scheduler_serves() -> None:
    unlisted = sorted(set(METHODS) - set(REQUESTS))
    assert not unlisted, f"add these RPCs to the auth matrix (REQUESTS and a role set): {unlisted}"
    classified = CLIENT_OR_ADMIN | ADMIN_ONLY | AGENT_ONLY | ANY_TOKEN | OPEN
    assert set(METHODS) <= classified, f"classify {sorted(set(METHODS) - classified)}"


@pytest.mark.parametrize(("method", "caller"), list(product(sorted(METHODS), CALLERS)),
                         ids=[f"{m.rpartition('/')[2]}-{c.replace(' ', '_')}" for m, c in
                              product(sorted(METHODS), CALLERS)])
def test_auth_matrix(guarded: InProcessScheduler, method: str, caller: str) -> None:
    assert guarded.channel is not None
    code, details = call(guarded.channel, method, REQUESTS[method][0](), metadata_of(caller))
    expected = expected_code(method, caller)
    assert code == expected, f"{method} as {caller}: {code.name} ({details}), expected {expected.name}"
    assert not any(token in details for token in TOKENS.values())
    if code is UNAUTHENTICATED:
        assert ("needs a token" in details) if caller == "no token" else ("not valid on this scheduler" in details)
    if code is PERMISSION_DENIED:
        assert ("bound to worker 'gpu-2'" in details) if method in AGENT_ONLY and caller.startswith("agent") \
            else ("needs role" in details)


def test_a_malformed_authorization_header_says_how_to_send_one(guarded: InProcessScheduler) -> None:
    stub = guarded.stub
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListQueues(scheduler_pb2.ListQueuesRequest(), metadata=(("authorization", TOKENS["client"]),))
    assert raised.value.code() is UNAUTHENTICATED
    assert "must read 'Bearer <token>'" in raised.value.details()
    assert TOKENS["client"] not in raised.value.details()


def test_refused_calls_are_counted_with_their_code(guarded: InProcessScheduler) -> None:
    sample = ("grpc_server_handled_total", {"grpc_type": "unary", "grpc_service": "switchyard.v1.Scheduler",
                                            "grpc_method": "PurgeDeadLetters", "grpc_code": "PermissionDenied"})
    before = guarded.metrics.registry.get_sample_value(*sample) or 0.0
    with pytest.raises(grpc.RpcError):
        guarded.stub.PurgeDeadLetters(scheduler_pb2.PurgeDeadLettersRequest(all=True),
                                      metadata=metadata_of("client"))
    # The status reaches the caller before the server's interceptor counts it: wait for the count.
    wait_until(lambda: guarded.metrics.registry.get_sample_value(*sample) == before + 1, timeout=5,
               message="the refused call to be counted as PermissionDenied")


def test_tokens_rotate_without_a_restart(fresh_redis: RedisServer, tmp_path: Path, make_scheduler) -> None:
    path = token_file(tmp_path / "tokens.yaml", [{"name": "ci", "role": "client", "token": "client"}])
    sched = make_scheduler(auth_tokens_file=str(path))

    def answer(token: str) -> grpc.StatusCode:
        try:
            sched.stub.ListQueues(scheduler_pb2.ListQueuesRequest(), metadata=(("authorization", f"Bearer {token}"),))
        except grpc.RpcError as error:
            return error.code()
        return OK

    assert answer(TOKENS["client"]) is OK
    assert answer(TOKENS["rotated-in"]) is UNAUTHENTICATED
    # A watch opened with the old token is ended when that token is revoked.
    old_token = (("authorization", f"Bearer {TOKENS['client']}"),)
    task_id = sched.stub.SubmitTask(scheduler_pb2.SubmitTaskRequest(
        task_name="auth.watched", queue="cpu_standard", allow_unschedulable=True), metadata=old_token).task_id
    watch = sched.stub.WatchTask(scheduler_pb2.WatchTaskRequest(task_id=task_id), metadata=old_token, timeout=30)
    assert next(watch).task.task_id == task_id
    token_file(path, [{"name": "ci-2", "role": "client", "token": "rotated-in"}])
    wait_until(lambda: answer(TOKENS["rotated-in"]) is OK, timeout=10, message="the new token to be accepted")
    assert answer(TOKENS["client"]) is UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as ended:
        for _update in watch:
            pass
    assert ended.value.code() is UNAUTHENTICATED and "revoked" in ended.value.details()
    # A file that no longer parses keeps the tokens in force (and says so in the log).
    path.write_text("tokens:\n  - {name: broken, role: wizard, sha256: nope}\n")
    wait_until(lambda: any("token file" in line and "stay in force" in line for line in WATCH.lines()),
               timeout=10, message="the broken token file to be reported")
    assert answer(TOKENS["rotated-in"]) is OK


def test_a_revoked_agent_is_disconnected_and_its_work_fails_over(
        fresh_redis: RedisServer, tmp_path: Path, make_scheduler) -> None:
    agents = [{"name": "agent-w1", "role": "agent", "worker_id": "w-1", "token": "agent-this"},
              {"name": "agent-w2", "role": "agent", "worker_id": "w-2", "token": "agent-other"},
              {"name": "ci", "role": "client", "token": "client"}]
    path = token_file(tmp_path / "tokens.yaml", agents)
    # A long grace period: the failover below can only come from the revocation itself.
    sched = make_scheduler(auth_tokens_file=str(path), lost_grace_seconds=60.0, heartbeat_timeout_seconds=60.0)
    client = (("authorization", f"Bearer {TOKENS['client']}"),)
    first = ProtocolWorker(sched.target, "w-1", fresh_redis.url, fresh_redis.url,
                           metadata=(("authorization", f"Bearer {TOKENS['agent-this']}"),)).connect()
    second: ProtocolWorker | None = None
    try:
        task_id = sched.stub.SubmitTask(scheduler_pb2.SubmitTaskRequest(task_name="auth.revoke", queue="cpu_standard"),
                                        metadata=client).task_id
        wait_until(lambda: any(d.task_id == task_id for d in first.deliveries), timeout=10,
                   message="the task to reach w-1")
        second = ProtocolWorker(sched.target, "w-2", fresh_redis.url, fresh_redis.url,
                                metadata=(("authorization", f"Bearer {TOKENS['agent-other']}"),)).connect()
        token_file(path, agents[1:])  # w-1's token is revoked
        wait_until(lambda: first.stream_error is not None, timeout=10, message="w-1's stream to be ended")
        assert first.stream_error.code() is UNAUTHENTICATED
        assert "revoked" in first.stream_error.details()
        moved = wait_until(lambda: next((d for d in second.deliveries if d.task_id == task_id), None), timeout=10,
                           message="the task to fail over to w-2")
        assert moved.attempt == 2
        workers = {w.worker_id: w for w in sched.stub.ListWorkers(scheduler_pb2.ListWorkersRequest(),
                                                                  metadata=client).workers}
        assert workers["w-1"].state == scheduler_pb2.WORKER_STATE_LOST
    finally:
        first.close()
        if second is not None:
            second.close()


def test_reflection_can_be_switched_off(fresh_redis: RedisServer, tmp_path: Path, make_scheduler) -> None:
    path = token_file(tmp_path / "tokens.yaml", STANDARD_TOKENS)
    sched = make_scheduler(auth_tokens_file=str(path), reflection=False)
    method = "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    code, _details = call(sched.channel, method, REQUESTS[method][0](), metadata_of("admin"))
    assert code is grpc.StatusCode.UNIMPLEMENTED


def _http(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_the_http_api_needs_a_client_or_admin_token_but_metrics_and_health_stay_open(
        guarded: InProcessScheduler) -> None:
    policy = AccessPolicy(TokenFile(guarded.settings.auth_tokens_file))
    http_api = HttpApi(guarded.metrics.registry, policy)
    port = http_api.serve("127.0.0.1", 0)
    http_api.attach(guarded.running.leadership, guarded.loop)
    try:
        status, headers, body = _http(port, "/api/v1/queues")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(body)["code"] == "UNAUTHENTICATED"
        status, _, body = _http(port, "/api/v1/queues", TOKENS["unknown"])
        assert status == 401 and TOKENS["unknown"] not in body
        status, _, body = _http(port, "/api/v1/workers", TOKENS["agent-this"])
        assert status == 403 and json.loads(body)["code"] == "PERMISSION_DENIED"
        for token in (TOKENS["client"], TOKENS["admin"]):
            status, _, body = _http(port, "/api/v1/queues", token)
            assert status == 200 and "queues" in json.loads(body)
        status, _, body = _http(port, "/api/v1/health")
        assert status == 200 and json.loads(body)["leader"] is True
        status, _, body = _http(port, "/metrics")
        assert status == 200 and "switchyard_queue_depth" in body
    finally:
        http_api.close()


def test_no_log_line_holds_a_token() -> None:
    """Runs last in the module: every line logged so far (the scheduler's included, at DEBUG)."""
    lines = WATCH.lines()
    assert any("token file" in line for line in lines), "the watch saw no scheduler log lines at all"
    assert WATCH.leaks() == []
