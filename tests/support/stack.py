"""A real Switchyard stack for end-to-end tests: scheduler process, agents, Celery workers.

`Stack` owns every process it starts and kills all of them on `close()`, even when a test
failed half-way. Each process runs in its own session (process group), so a worker's agent,
its Celery main process and the prefork pool children are killed, frozen or thawed together.
Logs go to one directory per test; `log_tails()` is what the e2e conftest attaches to a
failing test's report.

Tests talk to the scheduler through the generated stubs only, so they do not depend on the
client library.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from switchyard.redis_urls import sync_client
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc, worker_pb2
from switchyard.wire import EVENTS_GROUP, Keys, worker_queue

from tests.support.redis_server import RedisServer, env_without_switchyard, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pb = scheduler_pb2
S = scheduler_pb2.TaskState
TERMINAL_STATES = frozenset(
    {
        S.TASK_STATE_SUCCEEDED,
        S.TASK_STATE_FAILED,
        S.TASK_STATE_DEAD_LETTERED,
        S.TASK_STATE_CANCELLED,
    }
)

# Channel limits a client that sends 10 MB payloads must set (gRPC's default is 4 MiB).
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

# The knobs every e2e scheduler runs with: short, so liveness tests finish in seconds.
TEST_SCHEDULER_ENV = {
    "SWITCHYARD_HEARTBEAT_INTERVAL_SECONDS": "0.3",
    "SWITCHYARD_HEARTBEAT_TIMEOUT_SECONDS": "2",
    "SWITCHYARD_LOST_GRACE_SECONDS": "2",
}

WORKER_TYPES = {"cpu", "gpu", "hybrid"}

PLACEMENT_ROUNDS = "switchyard_placement_rounds_total"
KOMBU_UNACKED = "unacked"
"""Hash where kombu's Redis transport keeps delivered, not yet acknowledged messages (its
default `unacked_key`); Switchyard's workers acknowledge late, at the end of a task."""


def state_name(state: int) -> str:
    """`TASK_STATE_RUNNING` for 3, for readable assertion messages."""
    return S.Name(state)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


class WorkerProc:
    """One `switchyard-agent` and the Celery worker it supervises, as one process group."""

    def __init__(
        self,
        worker_id: str,
        worker_type: str,
        concurrency: int,
        proc: subprocess.Popen[bytes],
        log_path: Path,
    ) -> None:
        self.worker_id = worker_id
        self.worker_type = worker_type
        self.concurrency = concurrency
        self.proc = proc
        self.pgid = proc.pid  # start_new_session=True: the agent leads its own group
        self.log_path = log_path
        self.frozen = False

    @property
    def celery_queue(self) -> str:
        return worker_queue(self.worker_id)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: agent, Celery main process and pool children die at once."""
        _signal_group(self.pgid, signal.SIGKILL)
        self.frozen = False
        _wait(self.proc, 10)

    def freeze(self) -> None:
        """SIGSTOP the whole group: the worker looks alive to the kernel but does nothing."""
        _signal_group(self.pgid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT the whole group."""
        _signal_group(self.pgid, signal.SIGCONT)
        self.frozen = False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the agent (graceful), then SIGKILL whatever is left of the group."""
        if self.frozen:
            self.thaw()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            _wait(self.proc, timeout)
        _signal_group(self.pgid, signal.SIGKILL)
        _wait(self.proc, 5)


class Stack:
    """A scheduler (restartable on the same ports) plus any number of workers, on one Redis."""

    def __init__(
        self,
        redis_server: RedisServer,
        workdir: Path,
        scheduler_env: Mapping[str, str] | None = None,
    ) -> None:
        self.redis_server = redis_server
        self.redis_url = redis_server.url
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.scheduler_env = {**TEST_SCHEDULER_ENV, **(scheduler_env or {})}
        self.scheduler_proc: subprocess.Popen[bytes] | None = None
        self.scheduler_starts = 0
        self.workers: dict[str, WorkerProc] = {}
        self._channel: grpc.Channel | None = None
        self._stub: scheduler_pb2_grpc.SchedulerStub | None = None
        # sync_client: the Redis may be a Sentinel group (redis+sentinel://, tests/support/sentinel.py).
        self.redis: redis.Redis = sync_client(self.redis_url, decode_responses=True)

    # ------------------------------------------------------------------ scheduler

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def scheduler_log_path(self) -> Path:
        """The log of the scheduler started last (each start writes a log of its own)."""
        return self.workdir / f"scheduler-{self.scheduler_starts}.log"

    def start_scheduler(self, timeout: float = 30.0) -> None:
        """Start `switchyard-scheduler` on this stack's ports and wait for health SERVING."""
        self.scheduler_starts += 1
        log_path = self.scheduler_log_path
        env = env_without_switchyard()
        env.update(self.scheduler_env)
        env["PYTHONUNBUFFERED"] = "1"
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        args = [
            str(VENV_BIN / "switchyard-scheduler"),
            "--redis-url",
            self.redis_url,
            "--listen",
            self.address,
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
        ]
        with open(log_path, "ab") as log:
            self.scheduler_proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        self._reset_channel()
        self._wait_serving(timeout)

    def _wait_serving(self, timeout: float) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.scheduler_proc is not None
            if self.scheduler_proc.poll() is not None:
                raise AssertionError(
                    f"switchyard-scheduler exited with {self.scheduler_proc.returncode}:\n{self.log_tails()}"
                )
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = reply.status
            except grpc.RpcError as err:
                last = err.code()
            time.sleep(0.1)
        raise AssertionError(
            f"scheduler not SERVING after {timeout}s (last: {last}):\n{self.log_tails()}"
        )

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler: a crash, nothing flushed, no goodbye to the agents."""
        if self.scheduler_proc is not None:
            _signal_group(self.scheduler_proc.pid, signal.SIGKILL)
            _wait(self.scheduler_proc, 10)

    def stop_scheduler(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful stop); SIGKILL if it does not exit in `timeout`. Returns the exit code."""
        proc = self.scheduler_proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            _wait(proc, timeout)
        code = proc.poll()
        _signal_group(proc.pid, signal.SIGKILL)
        _wait(proc, 5)
        return code

    # ------------------------------------------------------------------ gRPC

    def _reset_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._reset_channel()
        assert self._channel is not None
        return self._channel

    @property
    def stub(self) -> scheduler_pb2_grpc.SchedulerStub:
        if self._stub is None:
            self._reset_channel()
        assert self._stub is not None
        return self._stub

    def submit_request(
        self,
        task_name: str = "e2e.sleep",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        content_type: str = "",
        gpu: int = 0,
        gpu_memory_mb: int = 0,
        priority: int = 0,
        queue: str = "",
        labels: Mapping[str, str] | None = None,
        idempotency_key: str = "",
        user_initiated: bool = False,
    ) -> scheduler_pb2.SubmitTaskRequest:
        return pb.SubmitTaskRequest(
            task_name=task_name,
            args_json=json.dumps(list(args)),
            kwargs_json=json.dumps(dict(kwargs or {})),
            content_type=content_type,
            gpu=gpu,
            gpu_memory_mb=gpu_memory_mb,
            priority=priority,
            queue=queue,
            labels=dict(labels or {}),
            idempotency_key=idempotency_key,
            user_initiated=user_initiated,
        )

    def submit(
        self,
        task_name: str = "e2e.sleep",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> scheduler_pb2.SubmitTaskResponse:
        """SubmitTask with JSON-encoded args/kwargs; `fields` are the other SubmitTaskRequest fields."""
        return self.stub.SubmitTask(
            self.submit_request(task_name, args, kwargs, **fields), timeout=30
        )

    def get(self, task_id: str) -> scheduler_pb2.Task:
        return self.stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10).task

    def cancel(self, task_id: str) -> scheduler_pb2.CancelTaskResponse:
        return self.stub.CancelTask(pb.CancelTaskRequest(task_id=task_id), timeout=10)

    def queues(self) -> dict[str, scheduler_pb2.QueueStats]:
        return {q.name: q for q in self.stub.ListQueues(pb.ListQueuesRequest(), timeout=10).queues}

    def list_workers(self) -> dict[str, scheduler_pb2.WorkerInfo]:
        return {
            w.worker_id: w
            for w in self.stub.ListWorkers(pb.ListWorkersRequest(), timeout=10).workers
        }

    def pause(self, queue: str) -> scheduler_pb2.PauseQueueResponse:
        return self.stub.PauseQueue(pb.PauseQueueRequest(queue=queue), timeout=10)

    def resume(self, queue: str) -> scheduler_pb2.ResumeQueueResponse:
        return self.stub.ResumeQueue(pb.ResumeQueueRequest(queue=queue), timeout=10)

    def drain(self, worker_id: str) -> scheduler_pb2.DrainWorkerResponse:
        return self.stub.DrainWorker(pb.DrainWorkerRequest(worker_id=worker_id), timeout=10)

    def _get_quietly(self, task_id: str) -> scheduler_pb2.Task | None:
        try:
            return self.get(task_id)
        except grpc.RpcError:
            return None  # scheduler restarting: keep polling

    def wait_state(
        self, task_id: str, states: int | Iterable[int], timeout: float = 30.0
    ) -> scheduler_pb2.Task:
        """Poll GetTask until the task is in one of `states`; fail with its last state on timeout."""
        wanted = {states} if isinstance(states, int) else set(states)
        deadline = time.monotonic() + timeout
        task = None
        while time.monotonic() < deadline:
            task = self._get_quietly(task_id)
            if task is not None and task.state in wanted:
                return task
            if task is not None and task.state in TERMINAL_STATES:
                break  # terminal and not wanted: it will never change
            time.sleep(0.1)
        names = sorted(state_name(s) for s in wanted)
        got = (
            "unreachable"
            if task is None
            else f"{state_name(task.state)} (worker={task.worker_id!r} attempt={task.attempt} reason={task.reason!r} error={task.error!r})"
        )
        raise AssertionError(f"task {task_id} not in {names} after waiting up to {timeout}s: {got}")

    def wait_all(
        self,
        task_ids: Iterable[str],
        states: int | Iterable[int] = S.TASK_STATE_SUCCEEDED,
        timeout: float = 60.0,
    ) -> dict[str, scheduler_pb2.Task]:
        """Wait for every task to reach `states` (one shared deadline)."""
        deadline = time.monotonic() + timeout
        return {
            tid: self.wait_state(tid, states, max(0.5, deadline - time.monotonic()))
            for tid in task_ids
        }

    def wait_workers_connected(
        self, worker_ids: Iterable[str], timeout: float = 45.0
    ) -> dict[str, scheduler_pb2.WorkerInfo]:
        """Wait until ListWorkers shows every id as CONNECTED."""
        ids = set(worker_ids)

        def connected() -> dict[str, scheduler_pb2.WorkerInfo] | None:
            try:
                workers = self.list_workers()
            except grpc.RpcError:
                return None
            ok = {
                i: w
                for i, w in workers.items()
                if i in ids and w.status == pb.WORKER_STATUS_CONNECTED
            }
            return ok if set(ok) == ids else None

        try:
            return wait_until(
                connected, timeout=timeout, interval=0.1, message=f"workers {sorted(ids)} CONNECTED"
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.log_tails()}") from None

    def wait_worker_status(
        self, worker_id: str, statuses: Iterable[int], timeout: float = 30.0
    ) -> scheduler_pb2.WorkerInfo | None:
        """Wait until the worker shows one of `statuses`, or (if LOST is wanted) drops out of ListWorkers."""
        wanted = set(statuses)

        def check() -> Any:
            try:
                worker = self.list_workers().get(worker_id)
            except grpc.RpcError:
                return None
            if worker is None:
                return "gone" if pb.WORKER_STATUS_LOST in wanted else None
            return worker if worker.status in wanted else None

        result = wait_until(
            check,
            timeout=timeout,
            interval=0.1,
            message=f"worker {worker_id} status in {sorted(wanted)}",
        )
        return None if result == "gone" else result

    # ------------------------------------------------------------------ workers

    def add_worker(
        self,
        worker_id: str,
        type: str = "cpu",
        concurrency: int = 1,
        simulate_gpu: str | None = None,
        labels: Mapping[str, str] | None = None,
        app: str = "tests.support.e2e_app",
        extra_celery_args: Sequence[str] = (),
        scheduler_address: str | None = None,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> WorkerProc:
        """Start `switchyard-agent` supervising a prefork Celery worker of `app` (the e2e app).

        `app` is the Celery `-A` module; `extra_celery_args` are appended to the worker's
        command line. Does not wait: call `wait_workers_connected` (several workers start
        faster together). `scheduler_address` and `redis_url` replace the scheduler's address and
        the Redis the worker uses as broker and state store (the chaos suite routes one worker
        through a TCP proxy it can cut). `env` overrides variables of the agent's (and so the
        worker's) environment, e.g. another CELERY_BROKER_URL.
        """
        if type not in WORKER_TYPES:
            raise ValueError(f"worker type must be one of {sorted(WORKER_TYPES)}")
        if type in {"gpu", "hybrid"} and simulate_gpu is None:
            simulate_gpu = "1xA100:40960"
        log_path = self.workdir / f"worker-{worker_id}.log"
        args = [
            str(VENV_BIN / "switchyard-agent"),
            "--scheduler",
            scheduler_address or self.address,
            "--worker-id",
            worker_id,
            "--type",
            type,
        ]
        if simulate_gpu:
            args += ["--simulate-gpu", simulate_gpu]
        if labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        if redis_url:
            args += ["--state-redis-url", redis_url]
        args += [
            "--",
            str(VENV_BIN / "celery"),
            "-A",
            app,
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "--loglevel",
            "WARNING",
            *extra_celery_args,
        ]
        extra_env = dict(env or {})
        env = env_without_switchyard()
        env["CELERY_BROKER_URL"] = redis_url or self.redis_url
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra_env)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        worker = WorkerProc(worker_id, type, concurrency, proc, log_path)
        self.workers[worker_id] = worker
        return worker

    def celery_queue_len(self, worker_id: str) -> int:
        """Messages waiting in the worker's own Celery queue (every kombu priority sub-list)."""
        queue = worker_queue(worker_id)
        keys = [queue] + [f"{queue}\x06\x16{p}" for p in range(1, 10)]
        pipe = self.redis.pipeline()
        for key in keys:
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())

    # ------------------------------------------------------------------ what really ran

    def runs(self) -> list[dict[str, Any]]:
        """Every start of user code recorded by the e2e app, in start order."""
        return [json.loads(r) for r in self.redis.lrange("e2e:runs", 0, -1)]

    def done(self) -> list[dict[str, Any]]:
        """Every end of user code recorded by the e2e app, in end order."""
        return [json.loads(r) for r in self.redis.lrange("e2e:done", 0, -1)]

    def open_gate(self, name: str) -> None:
        """Release every `e2e.gate` task waiting on `name`."""
        self.redis.set(f"e2e:gate:{name}", "1")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:
            return reply.read().decode()

    # ------------------------------------------------------------------ events to wait on
    # A test that proves something did NOT happen waits for one of these, then asserts.

    def metric_value(self, sample: str) -> float:
        """Current value of one unlabelled sample on /metrics; 0 while it is not exported."""
        for family in text_string_to_metric_families(self.metrics_text()):
            for metric in family.samples:
                if metric.name == sample and not metric.labels:
                    return float(metric.value)
        return 0.0

    def placement_rounds(self) -> int:
        """Placement rounds so far that had pending work and some free slot in view."""
        return int(self.metric_value(PLACEMENT_ROUNDS))

    def wait_placement_rounds(self, since: int, rounds: int = 1, timeout: float = 15.0) -> int:
        """Wait until `rounds` whole placement rounds ran after `since` was read from
        `placement_rounds()`; returns the count reached.

        A round is counted as it starts and rounds run one after another, so a count of
        since + rounds + 1 means `rounds` rounds started after the read and have finished. Rounds
        run only when something wakes placement (a submission, a freed slot, a worker joining):
        the test must cause those events.
        """
        wanted = since + rounds + 1
        deadline = time.monotonic() + timeout
        while (count := self.placement_rounds()) < wanted:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{count - since} placement round(s) after {since}, waited for {wanted - since} "
                    f"in {timeout}s:\n{self.log_tails()}"
                )
            time.sleep(0.05)
        return count

    def run_probe(self, task_name: str = "e2e.sleep", tag: str = "probe", **fields: Any) -> scheduler_pb2.Task:
        """Submit a short task (`task_name(0.05, tag)`) and wait until it succeeded.

        A known later event: its hand-out came from a placement round that started after every
        earlier submission, with all of them and the whole fleet in view, and that round had
        committed its hand-outs long before the task ended.
        """
        task_id = self.submit(task_name, [0.05, tag], **fields).task_id
        return self.wait_state(task_id, S.TASK_STATE_SUCCEEDED, timeout=30)

    def wait_reports_applied(self, timeout: float = 15.0) -> None:
        """Wait until the scheduler has applied every lifecycle report workers wrote so far.

        The scheduler reads the report stream through one consumer group and acknowledges a
        report only once applied: when the group has been handed the newest report present now
        and none up to it is unacknowledged, all of them are applied.
        """
        events = Keys().events
        newest = _stream_id(self.redis.xinfo_stream(events)["last-generated-id"])

        def applied() -> bool:
            group = next(g for g in self.redis.xinfo_groups(events) if g["name"] == EVENTS_GROUP)
            if _stream_id(group["last-delivered-id"]) < newest:
                return False
            unacked = self.redis.xpending(events, EVENTS_GROUP)
            return unacked["pending"] == 0 or _stream_id(unacked["min"]) > newest

        wait_until(applied, timeout=timeout, interval=0.05, message="the scheduler to apply every report")

    def wait_celery_drained(self, timeout: float = 15.0) -> None:
        """Wait until no Celery message is left that could still start user code: every worker's
        own queue is empty and none is delivered but unacknowledged. Workers acknowledge at the
        end of a task, so from then on user code starts only from a new hand-out."""

        def drained() -> bool:
            return self.redis.hlen(KOMBU_UNACKED) == 0 and not any(
                self.celery_queue_len(worker_id) for worker_id in self.workers
            )

        wait_until(drained, timeout=timeout, interval=0.05, message="every Celery message acknowledged")

    # ------------------------------------------------------------------ teardown and diagnostics

    def log_tails(self, lines: int = 60) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            parts.append(f"----- {path} (last {lines} lines) -----\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def close(self) -> None:
        """Kill every process this stack started; never raises."""
        for worker in list(self.workers.values()):
            _signal_group(worker.pgid, signal.SIGKILL)
            _wait(worker.proc, 5)
        with contextlib.suppress(Exception):  # teardown must go on
            self.stop_scheduler(timeout=5)
        if self._channel is not None:
            self._channel.close()
        self.redis.close()


def _stream_id(entry_id: str) -> tuple[int, int]:
    """`1700000000000-3` as (1700000000000, 3), so stream ids compare in stream order."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def worker_type_name(value: int) -> str:
    """`gpu` for WORKER_TYPE_GPU."""
    return worker_pb2.WorkerType.Name(value).removeprefix("WORKER_TYPE_").lower()
