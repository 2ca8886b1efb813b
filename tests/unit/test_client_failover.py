"""The client with several schedulers: it finds the leader from a standby's answer, follows it
when leadership moves, retries submissions under one idempotency key, resumes a watch whose
stream broke, and gives up with a clear error.

Real gRPC servers on loopback serve a small hand-written fake of the ``Scheduler`` service; the
fakes share one :class:`Cluster` (who leads, the tasks, what was sent) the way real schedulers
share Redis. Tests wait on the cluster's condition, never on sleeps.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from switchyard import SchedulerClient, cli, exceptions
from switchyard._connection import parse_addresses
from switchyard.client import AUTO_IDEMPOTENCY_KEY_PREFIX
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc
from switchyard.wire import LEADER_METADATA_KEY

WAIT_S = 10.0
"""Longest a test waits for something the fakes or the client should do at once."""

PENDING = scheduler_pb2.TASK_STATE_PENDING
RUNNING = scheduler_pb2.TASK_STATE_RUNNING
SUCCEEDED = scheduler_pb2.TASK_STATE_SUCCEEDED
TERMINAL = {SUCCEEDED, scheduler_pb2.TASK_STATE_FAILED, scheduler_pb2.TASK_STATE_CANCELLED}


class Cluster:
    """What the fake schedulers share: the leader, the tasks, and a record of every call."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.leader: str | None = None
        self.tasks: dict[str, scheduler_pb2.TaskState] = {}
        self.task_by_key: dict[str, str] = {}
        self.submitted_keys: list[str] = []
        """Idempotency key of every SubmitTask the leader received, retries included."""
        self.calls: Counter[tuple[str, str]] = Counter()
        """(address, method) -> calls received."""
        self.watch_sent: dict[str, list[scheduler_pb2.TaskState]] = {}
        """address -> states its WatchTask streams sent."""
        self.fail_next: dict[str, list[grpc.StatusCode]] = {}
        """method -> statuses the leader answers its next calls with (after doing the work for
        SubmitTask: the reply is lost, the task is not)."""

    def update(self, **changes: Any) -> None:
        with self.changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self.changed.notify_all()

    def set_state(self, task_id: str, state: scheduler_pb2.TaskState) -> None:
        with self.changed:
            self.tasks[task_id] = state
            self.changed.notify_all()

    def wake(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait_until(self, predicate: Callable[[], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout=WAIT_S), "the fake cluster never got there"


class FakeScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """One scheduler: serves when the cluster says it leads, else answers like a standby."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.address = ""

    def _serve(self, method: str, context: grpc.ServicerContext) -> None:
        """Count the call; answer UNAVAILABLE (naming the leader) unless this one leads, or
        the status the test queued for this method."""
        cluster = self.cluster
        with cluster.changed:
            cluster.calls[(self.address, method)] += 1
            leader = cluster.leader
            serving = leader == self.address and method != "SubmitTask"  # SubmitTask fails after the work
            queued = cluster.fail_next.get(method) if serving else None
            status = queued.pop(0) if queued else None
            cluster.changed.notify_all()
        if leader != self.address:
            self._standby(context, leader)
        if status is not None:
            context.abort(status, f"the test says {status.name}")

    def _standby(self, context: grpc.ServicerContext, leader: str | None) -> None:
        if leader:
            context.set_trailing_metadata(((LEADER_METADATA_KEY, leader),))
        context.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"this scheduler ({self.address}) is a standby; the leader is at {leader or 'unknown'}",
        )

    def SubmitTask(self, request: scheduler_pb2.SubmitTaskRequest, context: grpc.ServicerContext) -> scheduler_pb2.SubmitTaskResponse:
        self._serve("SubmitTask", context)
        cluster = self.cluster
        with cluster.changed:
            cluster.submitted_keys.append(request.idempotency_key)
            known = cluster.task_by_key.get(request.idempotency_key) if request.idempotency_key else None
            task_id = known or f"t-{len(cluster.tasks) + 1}"
            if known is None:
                cluster.tasks[task_id] = PENDING
                if request.idempotency_key:
                    cluster.task_by_key[request.idempotency_key] = task_id
            lost = cluster.fail_next.get("SubmitTask")
            status = lost.pop(0) if lost else None
            cluster.changed.notify_all()
        if status is not None:  # accepted, but the answer never reaches the client
            context.abort(status, "connection lost after the task was accepted")
        return scheduler_pb2.SubmitTaskResponse(task_id=task_id, queue="cpu_standard", priority=5, deduplicated=known is not None)

    def GetTask(self, request: scheduler_pb2.GetTaskRequest, context: grpc.ServicerContext) -> scheduler_pb2.GetTaskResponse:
        self._serve("GetTask", context)
        state = self.cluster.tasks.get(request.task_id)
        if state is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id!r} does not exist")
        return scheduler_pb2.GetTaskResponse(task=scheduler_pb2.Task(task_id=request.task_id, state=state))

    def ListQueues(self, request: scheduler_pb2.ListQueuesRequest, context: grpc.ServicerContext) -> scheduler_pb2.ListQueuesResponse:
        self._serve("ListQueues", context)
        return scheduler_pb2.ListQueuesResponse()

    def CancelTask(self, request: scheduler_pb2.CancelTaskRequest, context: grpc.ServicerContext) -> scheduler_pb2.CancelTaskResponse:
        self._serve("CancelTask", context)
        self.cluster.set_state(request.task_id, scheduler_pb2.TASK_STATE_CANCELLED)
        task = scheduler_pb2.Task(task_id=request.task_id, state=scheduler_pb2.TASK_STATE_CANCELLED)
        return scheduler_pb2.CancelTaskResponse(task=task, previous_state=PENDING)

    def WatchTask(self, request: scheduler_pb2.WatchTaskRequest, context: grpc.ServicerContext) -> Iterator[scheduler_pb2.WatchTaskResponse]:
        """The current state, then every change, like the real one; a scheduler that stops
        leading ends the stream with UNAVAILABLE and the new leader's address."""
        self._serve("WatchTask", context)
        cluster = self.cluster
        context.add_callback(cluster.wake)  # the client went away, or the server stops
        last: scheduler_pb2.TaskState | int | None = -1  # none sent yet (None: no such task)

        def news(last: scheduler_pb2.TaskState | int | None) -> bool:
            return cluster.tasks.get(request.task_id) != last or cluster.leader != self.address or not context.is_active()

        while True:
            with cluster.changed:
                cluster.changed.wait_for(functools.partial(news, last))
                state, leader = cluster.tasks.get(request.task_id), cluster.leader
            if not context.is_active():
                return
            if leader != self.address:
                self._standby(context, leader)
            if state is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id!r} does not exist")
            assert state is not None
            last = state
            yield scheduler_pb2.WatchTaskResponse(task=scheduler_pb2.Task(task_id=request.task_id, state=state))
            with cluster.changed:
                cluster.watch_sent.setdefault(self.address, []).append(state)
                cluster.changed.notify_all()
            if state in TERMINAL:
                return


class Fleet:
    """Two fake schedulers, ``a`` and ``b``, on loopback ports."""

    def __init__(self) -> None:
        self.cluster = Cluster()
        self.servers: dict[str, grpc.Server] = {}
        self.a = self._serve()
        self.b = self._serve()

    def _serve(self) -> str:
        servicer = FakeScheduler(self.cluster)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        servicer.address = f"127.0.0.1:{port}"
        server.start()
        self.servers[servicer.address] = server
        return servicer.address

    def kill(self, address: str) -> None:
        """Stop a scheduler at once: open streams break, new connections are refused."""
        self.servers[address].stop(0).wait()

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop(0).wait()


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    started = Fleet()
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def client_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The client's log records; the logger's handlers and level come back as they were (the
    CLI adds a stderr handler to it)."""
    logger = logging.getLogger("switchyard.client")
    handlers, level = list(logger.handlers), logger.level
    caplog.set_level(logging.INFO, logger="switchyard.client")
    try:
        yield caplog
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "switchyard.client"]


# --- addresses ------------------------------------------------------------------------------


def test_addresses_are_split_on_commas_in_order_without_blanks_or_repeats() -> None:
    assert parse_addresses("a:1, b:2,,a:1 ") == ("a:1", "b:2")
    assert parse_addresses(["a:1", "b:2,c:3"]) == ("a:1", "b:2", "c:3")
    assert SchedulerClient("a:1,b:2").addresses == ("a:1", "b:2")
    with pytest.raises(exceptions.InvalidArgument, match="HOST:PORT,HOST:PORT"):
        parse_addresses(" , ")


# --- finding and following the leader ---------------------------------------------------------


def test_client_finds_the_leader_from_a_standby_and_then_goes_straight_to_it(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.b, tasks={"t-1": PENDING})
    with SchedulerClient(f"{fleet.a},{fleet.b}") as client:
        assert client.get("t-1").state == "pending"
        assert client.current_address == fleet.b
        client.get("t-1")
    assert cluster.calls[(fleet.a, "GetTask")] == 1  # asked once, it named the leader
    assert cluster.calls[(fleet.b, "GetTask")] == 2


def test_a_leader_outside_the_given_addresses_is_followed_last(fleet: Fleet) -> None:
    fleet.cluster.update(leader=fleet.b, tasks={"t-1": PENDING})
    with SchedulerClient(fleet.a) as client:
        assert client.get("t-1").state == "pending"
        assert client.current_address == fleet.b


def test_client_follows_the_leader_when_it_moves(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})
    with SchedulerClient([fleet.a, fleet.b]) as client:
        client.get("t-1")
        assert client.current_address == fleet.a
        cluster.update(leader=fleet.b)  # a steps down and names b
        client.get("t-1")
        assert client.current_address == fleet.b
        fleet.kill(fleet.b)  # b dies; a takes over again
        cluster.update(leader=fleet.a)
        client.get("t-1")
        assert client.current_address == fleet.a
    assert cluster.calls[(fleet.a, "GetTask")] == 3
    assert cluster.calls[(fleet.b, "GetTask")] == 1


def test_client_waits_out_a_failover_in_progress(fleet: Fleet, client_log: pytest.LogCaptureFixture) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})
    with SchedulerClient([fleet.a, fleet.b]) as client:
        client.get("t-1")
        fleet.kill(fleet.a)
        cluster.update(leader=None)  # b has not taken over yet: no leader known

        def take_over() -> None:
            # Promote b once the client has been turned away a second round.
            cluster.wait_until(lambda: cluster.calls[(fleet.b, "GetTask")] >= 2)
            cluster.update(leader=fleet.b)

        promoter = threading.Thread(target=take_over)
        promoter.start()
        assert client.get("t-1").state == "pending"
        promoter.join()
        assert client.current_address == fleet.b
    messages = _messages(client_log)
    assert any(message.startswith("lost the scheduler at ") for message in messages), messages
    assert f"reconnected to {fleet.b}" in messages


# --- submissions --------------------------------------------------------------------------------


def test_a_retried_submit_reuses_its_idempotency_key_and_creates_one_task(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.b)
    with SchedulerClient([fleet.a, fleet.b]) as client:
        client.queues()  # reach the schedulers once
        cluster.update(fail_next={"SubmitTask": [grpc.StatusCode.UNAVAILABLE]})
        submitted = client.submit("text.summarize", kwargs={"text": "x"})
        client.submit("text.summarize", kwargs={"text": "x"})
    first_key, retried_key, second_key = cluster.submitted_keys
    assert first_key == retried_key and first_key.startswith(AUTO_IDEMPOTENCY_KEY_PREFIX)
    assert second_key != first_key  # one key per submit call, not per client
    assert sorted(cluster.tasks) == ["t-1", "t-2"]
    assert submitted.task_id == "t-1"
    assert not submitted.deduplicated  # its own first attempt is no earlier submission


def test_a_callers_idempotency_key_is_sent_as_given_and_batches_get_keys(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a)
    with SchedulerClient(fleet.a) as client:
        client.submit("t", idempotency_key="order-42")
        assert client.submit("t", idempotency_key="order-42").deduplicated
    assert cluster.submitted_keys == ["order-42", "order-42"]
    with SchedulerClient(fleet.a, auto_idempotency_keys=False) as client:
        client.submit("t")
    assert cluster.submitted_keys[-1] == ""


# --- what is retried ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, exceptions.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, exceptions.NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, exceptions.FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, exceptions.ResourceExhausted),
        (grpc.StatusCode.INTERNAL, exceptions.InternalError),
    ],
)
def test_other_errors_are_raised_at_once(fleet: Fleet, status: grpc.StatusCode, expected: type[Exception]) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING}, fail_next={"GetTask": [status]})
    with SchedulerClient([fleet.a, fleet.b]) as client, pytest.raises(expected):
        client.get("t-1")
    assert cluster.calls[(fleet.a, "GetTask")] == 1
    assert cluster.calls[(fleet.b, "GetTask")] == 0


def test_deadline_exceeded_is_retried_for_reads_but_not_for_cancel(fleet: Fleet) -> None:
    cluster = fleet.cluster
    deadline = grpc.StatusCode.DEADLINE_EXCEEDED
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING}, fail_next={"GetTask": [deadline], "CancelTask": [deadline]})
    with SchedulerClient([fleet.a, fleet.b]) as client:
        assert client.get("t-1").state == "pending"
        with pytest.raises(exceptions.DeadlineExceeded):
            client.cancel("t-1")
        cluster.update(fail_next={"CancelTask": [grpc.StatusCode.UNAVAILABLE]})
        assert client.cancel("t-1").task.state == "cancelled"
    assert cluster.calls[(fleet.a, "GetTask")] == 2
    assert cluster.calls[(fleet.a, "CancelTask")] == 3


def test_failover_timeout_ends_with_an_error_naming_what_was_tried(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})
    with SchedulerClient([fleet.a, fleet.b], failover_timeout=0.5) as client:
        client.get("t-1")
        cluster.update(leader=None)  # nobody leads
        with pytest.raises(exceptions.Unavailable) as raised:
            client.get("t-1")
    message = raised.value.message
    assert message.startswith(f"no scheduler at {fleet.a}, {fleet.b} could serve the call within 0.5 s"), message
    assert "is a standby; the leader is at unknown" in message
    assert cluster.calls[(fleet.a, "GetTask")] >= 2 and cluster.calls[(fleet.b, "GetTask")] >= 2


def test_first_contact_with_nothing_listening_fails_at_once() -> None:
    started = time.monotonic()
    with SchedulerClient("127.0.0.1:1,127.0.0.1:2") as client, pytest.raises(exceptions.Unavailable) as raised:
        client.get("t-1")
    assert time.monotonic() - started < WAIT_S  # one round, not the 30 s of a failover
    assert raised.value.message.startswith("no scheduler at 127.0.0.1:1, 127.0.0.1:2 could serve the call; ")


# --- watch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["dies", "steps_down"])
def test_a_watch_resumes_on_the_new_leader_and_ends_at_the_terminal_state(
    fleet: Fleet, client_log: pytest.LogCaptureFixture, how: str
) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING})

    def finish_on_b() -> None:
        # b has re-sent the state the client saw last; only now does the task move on.
        cluster.wait_until(lambda: cluster.watch_sent.get(fleet.b) == [RUNNING])
        cluster.set_state("t-1", SUCCEEDED)

    finisher = threading.Thread(target=finish_on_b)
    finisher.start()
    with SchedulerClient(f"{fleet.a},{fleet.b}") as client:
        watch = client.watch("t-1")
        seen = [next(watch).state]
        cluster.set_state("t-1", RUNNING)
        seen.append(next(watch).state)
        if how == "dies":
            fleet.kill(fleet.a)
        cluster.update(leader=fleet.b)
        seen += [view.state for view in watch]
    finisher.join()
    assert seen == ["pending", "running", "succeeded"]
    messages = _messages(client_log)
    assert any(message.startswith(f"lost the scheduler at {fleet.a} (UNAVAILABLE: ") for message in messages), messages
    assert messages[-1] == f"reconnected to {fleet.b}"
    if how == "steps_down":  # a named b: straight there
        assert cluster.calls[(fleet.a, "WatchTask")] == 1


def test_wait_rides_out_a_restart(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": RUNNING})

    def restart() -> None:
        cluster.wait_until(lambda: cluster.watch_sent.get(fleet.a) == [RUNNING])
        fleet.kill(fleet.a)
        cluster.update(leader=fleet.b)
        cluster.wait_until(lambda: cluster.watch_sent.get(fleet.b) == [RUNNING])
        cluster.set_state("t-1", SUCCEEDED)

    restarter = threading.Thread(target=restart)
    restarter.start()
    with SchedulerClient([fleet.a, fleet.b]) as client:
        assert client.wait("t-1", timeout=WAIT_S).state == "succeeded"
    restarter.join()


@pytest.mark.parametrize("command", ["watch", "submit"])
def test_cli_watch_and_submit_wait_say_on_stderr_that_they_reconnected(
    fleet: Fleet, client_log: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a, tasks={"t-1": PENDING} if command == "watch" else {})

    def fail_over() -> None:
        cluster.wait_until(lambda: cluster.watch_sent.get(fleet.a) == [PENDING])
        fleet.kill(fleet.a)
        cluster.update(leader=fleet.b)
        cluster.wait_until(lambda: cluster.watch_sent.get(fleet.b) == [PENDING])
        cluster.set_state("t-1", SUCCEEDED)

    driver = threading.Thread(target=fail_over)
    driver.start()
    argv = ["watch", "t-1"] if command == "watch" else ["submit", "text.summarize", "--wait"]
    assert cli.main(["--scheduler", f"{fleet.a},{fleet.b}", *argv]) == 0
    driver.join()
    out, err = capsys.readouterr()
    assert f"switchyard: lost the scheduler at {fleet.a} (UNAVAILABLE: " in err, err
    assert err.rstrip().endswith(f"switchyard: reconnected to {fleet.b}"), err
    if command == "watch":
        states = [line.split()[1] for line in out.splitlines()]
        assert states == ["pending", "succeeded"], out
    else:
        assert "succeeded" in out and cluster.submitted_keys[0].startswith(AUTO_IDEMPOTENCY_KEY_PREFIX)


def test_a_watch_of_an_unknown_task_is_not_retried(fleet: Fleet) -> None:
    cluster = fleet.cluster
    cluster.update(leader=fleet.a)
    with SchedulerClient([fleet.a, fleet.b]) as client, pytest.raises(exceptions.NotFound):
        list(client.watch("nope"))
    assert cluster.calls[(fleet.a, "WatchTask")] == 1
