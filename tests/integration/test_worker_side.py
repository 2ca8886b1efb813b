"""The Celery side of the wire contract, against a real redis-server and a real worker.

One Celery worker (started through `worker_agent.celery_boot`, as the agent starts it) serves
the whole module, once per pool. Work is handed out the way the scheduler's hand-out script
records it: the task hash `P:task:<id>` says `dispatched` with its `attempt` and the `fence`
field set to that attempt; the message itself is a stock Celery `send_task` with the `sy_*`
headers, which also proves that an ordinary Celery message works with the hooks (the scheduler's
own message construction is scheduler/dispatch.py). The broker uses Redis db 0 and the
Switchyard state db 1, so the test also proves that the hooks use the state Redis the agent
names, not the broker connection (in production both are one Redis, docs/wire-contract.md).

The claim records the start itself (task hash `running`, `started_at`, fence `<attempt>:started`)
and announces it on the `P:notify` channel; the tests subscribe before the hand-out and wait for
that announcement. Pub/sub delivers a connection's messages in order and the worker runs one
message at a time, so once a later task's announcement arrives, every claim before it has been
announced too: that is how "never started" is proved without sleeping.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from switchyard.wire import (
    FENCE_FIELD,
    HEADER_ATTEMPT,
    HEADER_PAYLOAD_REF,
    HEADER_TASK_ID,
    HEADER_WORKER_ID,
    PAYLOAD_FIELDS,
    Keys,
    fence_started,
    worker_queue,
)

from tests.support.redis_server import RedisServer, env_without_switchyard, wait_until

WORKER_ID = "test"
QUEUE = worker_queue(WORKER_ID)
PREFIX = "sy"
KEYS = Keys(PREFIX)


def sy_headers(tid: str, attempt: int, payload_ref: bool = False) -> dict[str, Any]:
    """The Switchyard headers the scheduler puts on a hand-out."""
    return {HEADER_TASK_ID: tid, HEADER_ATTEMPT: attempt, HEADER_WORKER_ID: WORKER_ID,
            HEADER_PAYLOAD_REF: 1 if payload_ref else 0}


class Announcements:
    """Claims announced on `P:notify`, seen by a subscriber that joined before the hand-out."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(KEYS.notify)
        # Wait for Redis to confirm: a PUBLISH before that would not reach us.
        confirmed = self.pubsub.get_message(timeout=10)
        assert confirmed is not None and confirmed["type"] == "subscribe", confirmed
        self.seen: list[list[str]] = []

    def for_task(self, tid: str) -> list[list[str]]:
        """Every announcement seen so far for `tid`, as its words."""
        return [words for words in self.seen if words[1:2] == [tid]]

    def wait_for(self, tid: str, timeout: float = 15.0) -> list[str]:
        """The first announcement for `tid`, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        while not self.for_task(tid):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no claim of {tid} announced on {KEYS.notify} within {timeout}s "
                                     f"(seen: {self.seen})")
            message = self.pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "message":
                self.seen.append(str(message["data"]).split(" "))
        return self.for_task(tid)[0]

    def close(self) -> None:
        self.pubsub.close()


class WorkerSide:
    """Handles for one test module: broker + state clients, a publisher and the worker process."""

    def __init__(self, server: RedisServer, run_dir: Path, log_path: Path) -> None:
        self.broker_url = f"redis://127.0.0.1:{server.port}/0"
        self.state_url = f"redis://127.0.0.1:{server.port}/1"
        self.broker = redis.Redis.from_url(self.broker_url, decode_responses=True)
        self.state = redis.Redis.from_url(self.state_url, decode_responses=True)
        self.publisher = Celery("publisher", broker=self.broker_url)
        self.run_dir = run_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.pool = "prefork"

    def hand_out(self, tid: str, attempt: int, **fields: str) -> None:
        """Record a hand-out in the task hash as the hand-out script does (`fields` override)."""
        self.state.hset(KEYS.task(tid), mapping={
            "state": "dispatched", "attempt": str(attempt), FENCE_FIELD: str(attempt),
            "worker": WORKER_ID, "watched": "1", **fields,
        })

    def publish(self, task_name: str, tid: str, attempt: int, args: list[Any] | None = None,
                kwargs: dict[str, Any] | None = None, payload_ref: bool = False,
                hand_out: bool = True, **send_options: Any) -> None:
        """Hand out `attempt` of `tid`: record it (unless `hand_out` is False), then publish."""
        if hand_out:
            self.hand_out(tid, attempt)
        self.publisher.send_task(
            task_name, args=args or [], kwargs=kwargs or {}, queue=QUEUE,
            task_id=f"{tid}-{attempt}", headers=sy_headers(tid, attempt, payload_ref),
            serializer="json", **send_options,
        )

    def task(self, tid: str) -> dict[str, str]:
        return dict(self.state.hgetall(KEYS.task(tid)))

    def events(self, tid: str) -> list[dict[str, str]]:
        return [fields for _, fields in self.state.xrange(KEYS.events) if fields.get("task_id") == tid]

    def event_types(self, tid: str) -> list[str]:
        return [event["type"] for event in self.events(tid)]

    def runs(self) -> list[str]:
        return list(self.broker.lrange("runs", 0, -1))

    def worker_log(self) -> str:
        return self.log_path.read_text(errors="replace")


def assert_start_recorded(side: WorkerSide, tid: str, attempt: int, before_ts: str) -> None:
    """The task hash says the attempt runs, as the claim wrote it, no later than `before_ts`."""
    task = side.task(tid)
    assert task[FENCE_FIELD] == fence_started(attempt)
    assert task["state"] == "running"
    assert task["attempt"] == str(attempt)
    assert 0 < float(task["started_at"]) <= float(before_ts)


@pytest.fixture(scope="module", params=["prefork", "threads"])
def worker_side(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[WorkerSide]:
    """One worker per pool: prefork wraps tasks before the fork, threads in the main process."""
    run_dir = Path(tempfile.mkdtemp(prefix="sy-run-"))
    side = WorkerSide(redis_server, run_dir, run_dir / "worker.log")
    side.pool = request.param
    side.broker.delete("runs")
    env = env_without_switchyard()
    env.update(
        AGENT_TEST_BROKER_URL=side.broker_url,
        SWITCHYARD_WORKER_ID=WORKER_ID,
        SWITCHYARD_STATE_REDIS_URL=side.state_url,
        SWITCHYARD_KEY_PREFIX=PREFIX,
        SWITCHYARD_RUN_DIR=str(run_dir),
    )
    argv = [sys.executable, "-m", "worker_agent.celery_boot", "-A", "tests.support.agent_app",
            "worker", "-P", request.param, "-c", "1", "-Q", QUEUE, "-n", "test@%h",
            "--without-mingle", "--without-gossip", "-l", "INFO"]
    with side.log_path.open("wb") as log_file:
        side.process = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                        cwd=Path(__file__).resolve().parents[2])
    try:
        wait_until(lambda: "ready." in side.worker_log() or side.process.poll() is not None,  # type: ignore[union-attr]
                   timeout=30, message="celery worker ready")
        assert side.process.poll() is None, side.worker_log()
        yield side
    finally:
        side.process.send_signal(signal.SIGTERM)
        try:
            side.process.wait(20)
        except subprocess.TimeoutExpired:
            side.process.kill()
            side.process.wait(10)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture()
def announcements(worker_side: WorkerSide) -> Iterator[Announcements]:
    """A subscriber to the claim announcements, joined before the test hands anything out."""
    subscriber = Announcements(worker_side.state)
    try:
        yield subscriber
    finally:
        subscriber.close()


def new_tid() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def test_current_attempt_runs_once_and_its_start_is_recorded(
        worker_side: WorkerSide, announcements: Announcements) -> None:
    tid = new_tid()
    worker_side.publish("agent_app.add", tid, 1, args=[2, 3])

    assert announcements.wait_for(tid) == ["started", tid, "1", WORKER_ID]
    wait_until(lambda: "succeeded" in worker_side.event_types(tid), timeout=15, message="succeeded event")
    # The start is recorded by the claim in the task hash; the stream carries only the outcome.
    events = worker_side.events(tid)
    assert [e["type"] for e in events] == ["succeeded"]
    assert events[0]["attempt"] == "1" and events[0]["worker_id"] == WORKER_ID
    assert json.loads(events[0]["result_json"]) == 5
    assert_start_recorded(worker_side, tid, 1, before_ts=events[0]["ts"])
    assert worker_side.runs().count("add:2:3") == 1
    assert announcements.for_task(tid) == [["started", tid, "1", WORKER_ID]]
    # The pid file exists only while the attempt runs.
    assert not (worker_side.run_dir / f"{tid}.1.pid").exists()


def test_stale_attempt_never_runs(worker_side: WorkerSide, announcements: Announcements) -> None:
    tid = new_tid()
    # The scheduler has moved on to attempt 2; attempt 1's message surfaces afterwards.
    worker_side.hand_out(tid, 2)
    before = worker_side.task(tid)
    worker_side.publish("agent_app.record", tid, 1, args=[f"stale-{tid}"], hand_out=False)
    # A marker task queued behind it proves the stale message was consumed, not just slow.
    marker = new_tid()
    worker_side.publish("agent_app.record", marker, 1, args=[f"marker-{marker}"])

    announcements.wait_for(marker)
    wait_until(lambda: "succeeded" in worker_side.event_types(marker), timeout=15, message="marker ran")
    assert f"stale-{tid}" not in worker_side.runs()
    assert announcements.for_task(tid) == []
    assert worker_side.events(tid) == []
    assert worker_side.task(tid) == before
    # Its pid file, written while the claim travelled, went with the refusal (one process: before the marker ran).
    assert list(worker_side.run_dir.glob(f"{tid}.*.pid")) == []


def test_duplicate_delivery_runs_once(worker_side: WorkerSide, announcements: Announcements) -> None:
    tid = new_tid()
    worker_side.publish("agent_app.record", tid, 3, args=[f"dup-{tid}"])
    # A redelivery: the same message again, with no new hand-out (the fence is not rewritten).
    worker_side.publish("agent_app.record", tid, 3, args=[f"dup-{tid}"], hand_out=False)
    marker = new_tid()
    worker_side.publish("agent_app.record", marker, 1, args=[f"marker-{marker}"])

    announcements.wait_for(marker)
    wait_until(lambda: "succeeded" in worker_side.event_types(marker), timeout=15, message="marker ran")
    assert worker_side.runs().count(f"dup-{tid}") == 1
    assert announcements.for_task(tid) == [["started", tid, "3", WORKER_ID]]
    assert worker_side.event_types(tid) == ["succeeded"]
    assert worker_side.task(tid)[FENCE_FIELD] == fence_started(3)


def test_raising_task_reports_failed_with_traceback(
        worker_side: WorkerSide, announcements: Announcements) -> None:
    tid = new_tid()
    worker_side.publish("agent_app.boom", tid, 1, args=["disk on fire"])

    announcements.wait_for(tid)
    wait_until(lambda: "failed" in worker_side.event_types(tid), timeout=15, message="failed event")
    failed = worker_side.events(tid)[-1]
    assert failed["error_type"] == "ValueError"
    assert failed["error"] == "ValueError: disk on fire"
    assert "Traceback (most recent call last)" in failed["traceback"]
    assert "raise ValueError(message)" in failed["traceback"]
    assert worker_side.event_types(tid) == ["failed"]
    assert_start_recorded(worker_side, tid, 1, before_ts=failed["ts"])


def test_update_state_progress_becomes_progress_events(worker_side: WorkerSide) -> None:
    tid = new_tid()
    worker_side.publish("agent_app.progress", tid, 1, args=[4])

    wait_until(lambda: "succeeded" in worker_side.event_types(tid), timeout=15, message="succeeded event")
    progress = [e for e in worker_side.events(tid) if e["type"] == "progress"]
    assert [float(e["progress"]) for e in progress] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert progress[-1]["message"] == "all done"


def test_progress_report_helper(worker_side: WorkerSide) -> None:
    tid = new_tid()
    worker_side.publish("agent_app.report_progress", tid, 1)

    wait_until(lambda: "succeeded" in worker_side.event_types(tid), timeout=15, message="succeeded event")
    progress = [e for e in worker_side.events(tid) if e["type"] == "progress"]
    assert [(float(e["progress"]), e["message"]) for e in progress] == [(0.25, "a quarter")]


def test_payload_by_reference_including_10_mb(worker_side: WorkerSide) -> None:
    tid = new_tid()
    blob = "x" * (10 * 1024 * 1024)
    # Stored once, in the task hash, at submission; the message carries args=[] and kwargs={}.
    args_field, kwargs_field = PAYLOAD_FIELDS
    worker_side.state.hset(KEYS.task(tid), mapping={
        args_field: json.dumps([blob]), kwargs_field: json.dumps({"label": "big"}),
    })
    worker_side.publish("agent_app.sizes", tid, 1, payload_ref=True)

    wait_until(lambda: "succeeded" in worker_side.event_types(tid), timeout=20, message="succeeded event")
    succeeded = worker_side.events(tid)[-1]
    assert json.loads(succeeded["result_json"]) == {"len": 10 * 1024 * 1024, "label": "big"}
    assert worker_side.runs().count("sizes:big") == 1


def test_payload_by_reference_missing_fails_with_a_reason(worker_side: WorkerSide) -> None:
    # The message says the payload is stored, but the task hash has none: a failure that names
    # the task hash, not user code called with empty arguments (that would be a TypeError).
    tid = new_tid()
    worker_side.publish("agent_app.sizes", tid, 1, payload_ref=True)

    wait_until(lambda: "failed" in worker_side.event_types(tid), timeout=15, message="failed event")
    failed = worker_side.events(tid)[-1]
    assert failed["error_type"] == "PayloadMissingError"
    assert f"the payload in {KEYS.task(tid)} is missing" in failed["error"]


def test_plain_celery_message_runs_unchanged(worker_side: WorkerSide) -> None:
    tag = f"plain-{new_tid()}"
    worker_side.publisher.send_task("agent_app.record", args=[tag], queue=QUEUE, serializer="json")

    wait_until(lambda: tag in worker_side.runs(), timeout=15, message="plain task ran")
    assert not any(fields.get("task_id") == tag for _, fields in worker_side.state.xrange(KEYS.events))


def test_claim_survives_redis_forgetting_scripts(
        worker_side: WorkerSide, announcements: Announcements) -> None:
    # What a Redis restart does to loaded Lua scripts; the claim must reload it, not fail.
    worker_side.state.script_flush()
    tid = new_tid()
    worker_side.publish("agent_app.add", tid, 1, args=[20, 22])

    announcements.wait_for(tid)
    wait_until(lambda: "succeeded" in worker_side.event_types(tid), timeout=15, message="succeeded event")
    succeeded = worker_side.events(tid)[-1]
    assert json.loads(succeeded["result_json"]) == 42
    assert_start_recorded(worker_side, tid, 1, before_ts=succeeded["ts"])


def test_every_message_acked_including_stale_ones(worker_side: WorkerSide) -> None:
    # Ignore (stale attempt) must ack: the message is consumed, not given back to the queue.
    # (No kombu ack emulation: its `unacked` ledger is never written.)
    tid = new_tid()
    worker_side.hand_out(tid, 1, state="cancelled", **{FENCE_FIELD: "cancelled"})
    worker_side.publish("agent_app.record", tid, 1, args=["never"], hand_out=False)
    marker = new_tid()
    worker_side.publish("agent_app.record", marker, 1, args=[f"marker-{marker}"])
    wait_until(lambda: "succeeded" in worker_side.event_types(marker), timeout=15, message="marker ran")

    assert worker_side.broker.exists("unacked", "unacked_index") == 0
    assert worker_side.broker.llen(QUEUE) == 0
    assert "stale attempt 1 of task " + tid in worker_side.worker_log()
    assert worker_side.task(tid)[FENCE_FIELD] == "cancelled"
    fenced_line = next(line for line in worker_side.worker_log().splitlines() if "switchyard: fenced" in line)
    assert "agent_app.record" in fenced_line and "celery." not in fenced_line


def test_late_acks_forced_and_kombu_ack_emulation_off() -> None:
    from celery import Celery as CeleryApp

    from worker_agent.celery_hooks import force_worker_settings

    app = CeleryApp("forced", broker="memory://")
    app.conf.task_acks_late = False
    app.conf.worker_prefetch_multiplier = 4
    app.conf.broker_transport_options = {"fanout_prefix": True}
    force_worker_settings(app.conf)
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_reject_on_worker_lost is False
    assert app.conf.broker_transport_options == {"fanout_prefix": True,
                                                   "ack_emulation": False}


def test_task_events_follow_celery_unless_switchyard_task_events_says(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import Celery as CeleryApp

    from worker_agent.celery_hooks import force_worker_settings

    monkeypatch.delenv("SWITCHYARD_TASK_EVENTS", raising=False)
    app = CeleryApp("events", broker="memory://")
    force_worker_settings(app.conf)
    assert app.conf.worker_send_task_events is False  # Celery's default: off until Flower asks
    configured = CeleryApp("configured", broker="memory://")
    configured.conf.worker_send_task_events = True
    force_worker_settings(configured.conf)
    assert configured.conf.worker_send_task_events is True  # the app's own choice stands
    monkeypatch.setenv("SWITCHYARD_TASK_EVENTS", "1")
    on = CeleryApp("on", broker="memory://")
    force_worker_settings(on.conf)
    assert on.conf.worker_send_task_events is True
    monkeypatch.setenv("SWITCHYARD_TASK_EVENTS", "0")
    quiet = CeleryApp("quiet", broker="memory://")
    quiet.conf.worker_send_task_events = True
    force_worker_settings(quiet.conf)
    assert quiet.conf.worker_send_task_events is False


def test_hard_time_limit_kill_reported_as_failed(
        worker_side: WorkerSide, announcements: Announcements) -> None:
    # The pool child is killed, so it cannot report; the worker's main process must.
    if worker_side.pool != "prefork":
        pytest.skip("hard time limits exist only in the prefork pool")
    tid = new_tid()
    worker_side.publish("agent_app.sleep", tid, 1, args=[30], time_limit=1)

    announcements.wait_for(tid)
    wait_until(lambda: "failed" in worker_side.event_types(tid), timeout=15, message="failed event")
    failed = worker_side.events(tid)[-1]
    assert failed["error_type"] == "TimeLimitExceeded"
    assert worker_side.event_types(tid) == ["failed"]
    assert_start_recorded(worker_side, tid, 1, before_ts=failed["ts"])
    assert not (worker_side.run_dir / f"{tid}.1.pid").exists()
