"""The asyncio client (`switchyard.aio`): the same operations, requests, options and
leader-following as the synchronous one.

* Parity: every public method of `SchedulerClient` exists on `AsyncSchedulerClient` with the same
  parameters, the constructors take the same options, and every operation sends the request the
  synchronous client sends (both over recording channels, no network).
* Several schedulers: the fake schedulers of `test_client_failover` (real gRPC servers on
  loopback sharing one `Cluster`) serve the asyncio client through the same scenarios: find and
  follow the leader, wait out a failover, retry a submission under one idempotency key, resume a
  watch, give up with the same error.
* A `grpc.aio` server on loopback, in the client's own loop, sees the bearer token on unary calls
  and on the watch stream (a token file re-read when it changes), sees a watch left early
  cancelled, and serves TLS and mTLS to the sync client's TLS options (a wrong CA or a missing
  client certificate fails).

Each test runs its coroutine on a fresh event loop (`asyncio.run`); whatever must wait for the
fakes runs in a thread, so the loop keeps serving the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from switchyard import SchedulerClient, exceptions
from switchyard.aio import AsyncSchedulerClient
from switchyard.client import AUTO_IDEMPOTENCY_KEY_PREFIX
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc

from tests.support.certs import make_ca, make_cert
from tests.unit.test_client_api import RecordingChannel
from tests.unit.test_client_failover import PENDING, RUNNING, SUCCEEDED, WAIT_S, Fleet, _messages


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """Two fake schedulers on loopback sharing one cluster (test_client_failover's)."""
    started = Fleet()
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def client_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The ``switchyard.client`` logger's records at INFO and above."""
    logger = logging.getLogger("switchyard.client")
    level = logger.level
    caplog.set_level(logging.INFO, logger="switchyard.client")
    try:
        yield caplog
    finally:
        logger.setLevel(level)


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test on its own event loop; pytest still sees its fixtures."""

    @functools.wraps(test)
    def runner(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=60))

    return runner


def in_thread(work: Callable[[], None]) -> threading.Thread:
    """Start ``work`` (which waits on the fake cluster) beside the event loop."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


# --- parity with the synchronous client -----------------------------------------------------------


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_") and name != "close"
    }


def test_every_operation_of_the_sync_client_is_there_with_the_same_parameters() -> None:
    sync_methods = _public_methods(SchedulerClient)
    async_methods = _public_methods(AsyncSchedulerClient)
    assert set(sync_methods) == set(async_methods)
    for name, signature in sync_methods.items():
        assert list(async_methods[name].parameters) == list(signature.parameters), name
        member = getattr(AsyncSchedulerClient, name)
        assert inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member), name
    assert inspect.isasyncgenfunction(AsyncSchedulerClient.watch)
    assert inspect.isasyncgenfunction(AsyncSchedulerClient.iter_tasks)


def test_the_constructors_take_the_same_options_with_the_same_defaults() -> None:
    sync_parameters = inspect.signature(SchedulerClient.__init__).parameters
    async_parameters = inspect.signature(AsyncSchedulerClient.__init__).parameters
    assert list(async_parameters) == list(sync_parameters)
    for name, parameter in sync_parameters.items():
        assert async_parameters[name].default == parameter.default, name
        assert async_parameters[name].kind == parameter.kind, name


class SyncRecordingChannel(RecordingChannel):
    """The synchronous recording channel, with a WatchTask stream like the one below."""

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     **_: Any) -> Any:
        channel = self

        class Stream:
            def __init__(self, request: Any, timeout: float | None = None) -> None:
                channel.requests.append((method.rsplit("/", 1)[-1], request))

            def __iter__(self) -> Iterator[Any]:
                yield scheduler_pb2.WatchTaskResponse(task=scheduler_pb2.Task(task_id="t-1", state=SUCCEEDED))

            def cancel(self) -> bool:
                return True

        return Stream


class AsyncRecordingChannel:
    """A ``grpc.aio`` channel stand-in: every call records (method, request, metadata) and
    answers an empty response (a one-message stream ending in SUCCEEDED for WatchTask)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.metadata: list[Any] = []

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    **_: Any) -> Any:
        async def call(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            self.requests.append((method.rsplit("/", 1)[-1], request))
            self.metadata.append(metadata)
            return response_deserializer(b"")

        return call

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     **_: Any) -> Any:
        channel = self

        class Stream:
            def __init__(self, request: Any, timeout: float | None = None, metadata: Any = None) -> None:
                channel.requests.append((method.rsplit("/", 1)[-1], request))
                channel.metadata.append(metadata)

            async def __aiter__(self) -> AsyncIterator[Any]:
                yield scheduler_pb2.WatchTaskResponse(task=scheduler_pb2.Task(task_id="t-1", state=SUCCEEDED))

            def cancel(self) -> bool:
                return True

        return Stream

    async def close(self, grace: float | None = None) -> None:
        raise AssertionError("a channel passed in by the caller stays open")


OPTIONS: dict[str, Any] = {"content_type": "audio", "gpu": "required", "priority": 9, "labels": {"zone": "eu"},
                           "soft_time_limit": 30, "idempotency_key": "k-1"}

# Every operation, called the same way on both clients.
OPERATIONS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("submit", ("media.transcribe_audio", ["a.mp3"], {"language": "de"}), OPTIONS),
    ("submit_batch", ([{"task_name": "text.summarize", "kwargs": {"text": "x"}, "idempotency_key": "k-2"}],), {}),
    ("get", ("t-1",), {}),
    ("cancel", ("t-1",), {}),
    ("list_tasks", (["running", "pending"],), {"queue": "cpu_standard", "page_size": 7, "page_token": "p"}),
    ("explain", ("media.transcribe_audio", ["a.mp3"]), OPTIONS),
    ("explain_task", ("t-1",), {}),
    ("queues", (), {}),
    ("pause", ("gpu_priority",), {}),
    ("resume", ("gpu_priority",), {}),
    ("workers", (), {}),
    ("drain", ("w-1",), {}),
    ("undrain", ("w-1",), {}),
    ("unquarantine", ("w-1",), {}),
    ("dead_letters", ("cpu_standard", 5), {}),
    ("retry_dead_letter", ("t-1",), {}),
    ("purge_dead_letters", (["t-1", "t-2"],), {}),
]


@run_async
async def test_every_operation_sends_the_request_the_sync_client_sends() -> None:
    sync_channel, async_channel = SyncRecordingChannel(), AsyncRecordingChannel()
    with SchedulerClient(channel=sync_channel) as sync_client:  # type: ignore[arg-type]
        for name, args, kwargs in OPERATIONS:
            getattr(sync_client, name)(*args, **kwargs)
        list(sync_client.watch("t-1"))
        sync_client.wait("t-1")
    async with AsyncSchedulerClient(channel=async_channel) as client:  # type: ignore[arg-type]
        for name, args, kwargs in OPERATIONS:
            await getattr(client, name)(*args, **kwargs)
        assert [view.state async for view in client.watch("t-1")] == ["succeeded"]
        assert (await client.wait("t-1")).succeeded
    assert async_channel.requests == sync_channel.requests
    assert [name for name, _ in async_channel.requests][-2:] == ["WatchTask", "WatchTask"]
    assert async_channel.metadata == [None] * len(async_channel.requests)  # no token: no metadata


@run_async
async def test_bad_arguments_raise_before_any_call() -> None:
    channel = AsyncRecordingChannel()
    async with AsyncSchedulerClient(channel=channel) as client:  # type: ignore[arg-type]
        with pytest.raises(exceptions.InvalidArgument, match="soft_time_limit"):
            await client.submit("t", soft_time_limit=60, hard_time_limit=30)
        with pytest.raises(exceptions.InvalidArgument, match="unknown task state 'runing'"):
            await client.list_tasks("runing")
        with pytest.raises(exceptions.InvalidArgument, match="exactly one of them"):
            await client.purge_dead_letters()
        with pytest.raises(exceptions.InvalidArgument, match="limit must be >= 0"):
            [task async for task in client.iter_tasks(limit=-1)]
    assert channel.requests == []
    with pytest.raises(exceptions.InvalidArgument, match="failover_timeout"):
        AsyncSchedulerClient(failover_timeout=-1)


@run_async
async def test_submissions_without_a_key_get_one_of_their_own() -> None:
    channel = AsyncRecordingChannel()
    async with AsyncSchedulerClient(channel=channel) as client:  # type: ignore[arg-type]
        await client.submit("t")
        await client.submit("t")
    keys = [request.idempotency_key for _, request in channel.requests]
    assert all(key.startswith(AUTO_IDEMPOTENCY_KEY_PREFIX) for key in keys) and len(set(keys)) == 2
    channel = AsyncRecordingChannel()
    async with AsyncSchedulerClient(channel=channel, auto_idempotency_keys=False) as client:  # type: ignore[arg-type]
        await client.submit("t")
    assert channel.requests[0][1].idempotency_key == ""


# --- several schedulers (the fakes of test_client_failover) --------------------------------------


@run_async
async def test_client_finds_the_leader_from_a_standby_and_then_goes_straight_to_it(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.b, tasks={"t-1": PENDING})
    async with AsyncSchedulerClient(f"{fleet.a},{fleet.b}") as client:
        assert (await client.get("t-1")).state == "pending"
        assert client.current_address == fleet.b
        await client.get("t-1")
    assert cluster.calls[(fleet.a, "GetTask")] == 1  # asked once, it named the leader
    assert cluster.calls[(fleet.b, "GetTask")] == 2


@run_async
async def test_client_follows_the_leader_when_it_moves(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})
    async with AsyncSchedulerClient([fleet.a, fleet.b]) as client:
        await client.get("t-1")
        cluster.update(leader=fleet.b)  # a steps down and names b
        await client.get("t-1")
        assert client.current_address == fleet.b
        await asyncio.to_thread(fleet.kill, fleet.b)  # b dies; a takes over again
        cluster.update(leader=fleet.a)
        await client.get("t-1")
        assert client.current_address == fleet.a
    assert cluster.calls[(fleet.a, "GetTask")] == 3
    assert cluster.calls[(fleet.b, "GetTask")] == 1


@run_async
async def test_client_waits_out_a_failover_in_progress(fleet: Fleet, client_log: pytest.LogCaptureFixture) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})
    async with AsyncSchedulerClient([fleet.a, fleet.b]) as client:
        await client.get("t-1")
        await asyncio.to_thread(fleet.kill, fleet.a)
        cluster.update(leader=None)  # b has not taken over yet: no leader known

        def take_over() -> None:
            # Promote b once the client has been turned away a second round (it backed off
            # in between, awaiting, so the loop kept running).
            cluster.wait_until(lambda: cluster.calls[(fleet.b, "GetTask")] >= 2)
            cluster.update(leader=fleet.b)

        promoter = in_thread(take_over)
        assert (await client.get("t-1")).state == "pending"
        promoter.join()
        assert client.current_address == fleet.b
    messages = _messages(client_log)
    assert any(message.startswith("lost the scheduler at ") for message in messages), messages
    assert f"reconnected to {fleet.b}" in messages


@run_async
async def test_a_retried_submit_reuses_its_idempotency_key_and_creates_one_task(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.b)
    async with AsyncSchedulerClient([fleet.a, fleet.b]) as client:
        await client.queues()  # reach the schedulers once
        cluster.update(fail_next={"SubmitTask": [grpc.StatusCode.UNAVAILABLE]})
        submitted = await client.submit("text.summarize", kwargs={"text": "x"})
    first_key, retried_key = cluster.submitted_keys
    assert first_key == retried_key and first_key.startswith(AUTO_IDEMPOTENCY_KEY_PREFIX)
    assert sorted(cluster.tasks) == ["t-1"]
    assert submitted.task_id == "t-1" and not submitted.deduplicated


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, exceptions.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, exceptions.NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, exceptions.PermissionDenied),
    ],
)
@run_async
async def test_other_errors_are_raised_at_once(fleet: Fleet, status: grpc.StatusCode, expected: type[Exception]) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING}, fail_next={"GetTask": [status]})
    async with AsyncSchedulerClient([fleet.a, fleet.b]) as client:
        with pytest.raises(expected):
            await client.get("t-1")
    assert cluster.calls[(fleet.a, "GetTask")] == 1
    assert cluster.calls[(fleet.b, "GetTask")] == 0


@run_async
async def test_deadline_exceeded_is_retried_for_reads_but_not_for_cancel(fleet: Fleet) -> None:
    cluster = fleet.cluster
    deadline = grpc.StatusCode.DEADLINE_EXCEEDED
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING}, fail_next={"GetTask": [deadline], "CancelTask": [deadline]})
    async with AsyncSchedulerClient([fleet.a, fleet.b]) as client:
        assert (await client.get("t-1")).state == "pending"
        with pytest.raises(exceptions.DeadlineExceeded):
            await client.cancel("t-1")
        cluster.update(fail_next={"CancelTask": [grpc.StatusCode.UNAVAILABLE]})
        assert (await client.cancel("t-1")).task.state == "cancelled"
    assert cluster.calls[(fleet.a, "GetTask")] == 2
    assert cluster.calls[(fleet.a, "CancelTask")] == 3


@run_async
async def test_failover_timeout_ends_with_an_error_naming_what_was_tried(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})
    async with AsyncSchedulerClient([fleet.a, fleet.b], failover_timeout=0.5) as client:
        await client.get("t-1")
        cluster.update(leader=None)  # nobody leads
        with pytest.raises(exceptions.Unavailable) as raised:
            await client.get("t-1")
    message = raised.value.message
    assert message.startswith(f"no scheduler at {fleet.a}, {fleet.b} could serve the call within 0.5 s"), message
    assert "is a standby; the leader is at unknown" in message


@run_async
async def test_first_contact_with_nothing_listening_fails_at_once() -> None:
    started = time.monotonic()
    async with AsyncSchedulerClient("127.0.0.1:1,127.0.0.1:2") as client:
        with pytest.raises(exceptions.Unavailable) as raised:
            await client.get("t-1")
    assert time.monotonic() - started < WAIT_S  # one round, not the 30 s of a failover
    assert raised.value.message.startswith("no scheduler at 127.0.0.1:1, 127.0.0.1:2 could serve the call; ")


@pytest.mark.parametrize("how", ["dies", "steps_down"])
@run_async
async def test_a_watch_resumes_on_the_new_leader_and_ends_at_the_terminal_state(
    fleet: Fleet, client_log: pytest.LogCaptureFixture, how: str
) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})

    def finish_on_b() -> None:
        # b has re-sent the state the client saw last; only now does the task move on.
        cluster.wait_until(lambda: cluster.watch_sent.get(fleet.b) == [RUNNING])
        cluster.set_state("t-1", SUCCEEDED)

    finisher = in_thread(finish_on_b)
    async with AsyncSchedulerClient(f"{fleet.a},{fleet.b}") as client:
        watch = client.watch("t-1")
        seen = [(await anext(watch)).state]
        cluster.set_state("t-1", RUNNING)
        seen.append((await anext(watch)).state)
        if how == "dies":
            await asyncio.to_thread(fleet.kill, fleet.a)
        cluster.update(leader=fleet.b)
        seen += [view.state async for view in watch]
    finisher.join()
    assert seen == ["pending", "running", "succeeded"]
    messages = _messages(client_log)
    assert any(message.startswith(f"lost the scheduler at {fleet.a} (UNAVAILABLE: ") for message in messages), messages
    assert messages[-1] == f"reconnected to {fleet.b}"
    if how == "steps_down":  # a named b: straight there
        assert cluster.calls[(fleet.a, "WatchTask")] == 1


@run_async
async def test_wait_rides_out_a_restart(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": RUNNING})

    def restart() -> None:
        cluster.wait_until(lambda: cluster.watch_sent.get(fleet.a) == [RUNNING])
        fleet.kill(fleet.a)
        cluster.update(leader=fleet.b)
        cluster.wait_until(lambda: cluster.watch_sent.get(fleet.b) == [RUNNING])
        cluster.set_state("t-1", SUCCEEDED)

    restarter = in_thread(restart)
    async with AsyncSchedulerClient([fleet.a, fleet.b]) as client:
        assert (await client.wait("t-1", timeout=WAIT_S)).state == "succeeded"
    restarter.join()


@run_async
async def test_a_watch_of_an_unknown_task_is_not_retried_and_a_timeout_ends_a_watch(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})
    async with AsyncSchedulerClient([fleet.a, fleet.b]) as client:
        with pytest.raises(exceptions.NotFound):
            [view async for view in client.watch("nope")]
        with pytest.raises(exceptions.DeadlineExceeded, match=r"did not finish within 0\.3 s"):
            await client.wait("t-1", timeout=0.3)
    assert cluster.calls[(fleet.a, "WatchTask")] == 2


# --- a grpc.aio server on loopback: the token goes with every call --------------------------------


class RecordingScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Answers GetTask and WatchTask, recording the authorization metadata of each call. With
    ``hold`` its watch sends PENDING and then nothing until the client cancels the stream."""

    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.authorizations: list[str | None] = []
        self.stream_cancelled = asyncio.Event()

    def _record(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.authorizations.append(metadata.get("authorization"))

    async def GetTask(self, request: scheduler_pb2.GetTaskRequest, context: grpc.aio.ServicerContext[Any, Any]) -> scheduler_pb2.GetTaskResponse:
        self._record(context)
        return scheduler_pb2.GetTaskResponse(task=scheduler_pb2.Task(task_id=request.task_id, state=PENDING))

    async def WatchTask(self, request: scheduler_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[scheduler_pb2.WatchTaskResponse]:
        self._record(context)
        if not self.hold:
            yield scheduler_pb2.WatchTaskResponse(task=scheduler_pb2.Task(task_id=request.task_id, state=SUCCEEDED))
            return
        yield scheduler_pb2.WatchTaskResponse(task=scheduler_pb2.Task(task_id=request.task_id, state=PENDING))
        try:
            await asyncio.Event().wait()  # no news, ever
        finally:  # the handler is cancelled when the client cancels the call
            self.stream_cancelled.set()


@contextlib.asynccontextmanager
async def aio_server(servicer: scheduler_pb2_grpc.SchedulerServicer) -> AsyncIterator[str]:
    """A grpc.aio server for ``servicer`` on a loopback port, in the running loop; its address."""
    server = grpc.aio.server()
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@run_async
async def test_the_token_goes_with_every_call_and_stream(tmp_path: Path) -> None:
    recorder = RecordingScheduler()
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    async with aio_server(recorder) as address:
        async with AsyncSchedulerClient(address, token_file=token_file) as client:
            await client.get("t-1")
            assert (await client.wait("t-1", timeout=WAIT_S)).succeeded
            token_file.write_text("rotated-token\n")  # read again on the next call
            await client.get("t-1")
        async with AsyncSchedulerClient(address, tls=False) as client:
            await client.get("t-1")
    assert recorder.authorizations == ["Bearer first-token", "Bearer first-token", "Bearer rotated-token", None]


@run_async
async def test_leaving_a_watch_early_cancels_its_stream() -> None:
    recorder = RecordingScheduler(hold=True)
    async with aio_server(recorder) as address, AsyncSchedulerClient(address) as client:
        async with contextlib.aclosing(client.watch("t-1")) as watch:
            assert (await anext(watch)).state == "pending"
        await asyncio.wait_for(recorder.stream_cancelled.wait(), timeout=WAIT_S)


@run_async
async def test_tls_and_mtls_with_the_options_of_the_sync_client(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    server_cert, server_key = make_cert(tmp_path / "server", ca, "scheduler")
    client_cert, client_key = make_cert(tmp_path / "client", ca, "ci", client=True)
    other_ca = make_ca(tmp_path / "other", name="another-ca")
    credentials = grpc.ssl_server_credentials(
        [(server_key.read_bytes(), server_cert.read_bytes())],
        root_certificates=ca.cert_path.read_bytes(), require_client_auth=True,
    )
    recorder = RecordingScheduler()
    server = grpc.aio.server()
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(recorder, server)  # type: ignore[no-untyped-call]
    address = f"localhost:{server.add_secure_port('127.0.0.1:0', credentials)}"
    await server.start()
    try:
        async with AsyncSchedulerClient(address, tls_ca=ca.cert_path, tls_cert=client_cert, tls_key=client_key,
                                        token="ci-token") as client:
            assert (await client.get("t-1")).state == "pending"
            assert (await client.wait("t-1", timeout=WAIT_S)).succeeded
        async with AsyncSchedulerClient(address, tls_ca=other_ca.cert_path, tls_cert=client_cert,
                                        tls_key=client_key) as client:
            with pytest.raises(exceptions.Unavailable):  # the scheduler's certificate is not trusted
                await client.get("t-1")
        async with AsyncSchedulerClient(address, tls_ca=ca.cert_path) as client:
            with pytest.raises(exceptions.Unavailable):  # no client certificate for an mTLS scheduler
                await client.get("t-1")
    finally:
        await server.stop(None)
    assert recorder.authorizations == ["Bearer ci-token", "Bearer ci-token"]
