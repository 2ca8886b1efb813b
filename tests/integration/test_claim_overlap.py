"""The worker's fenced claim with work overlapping its round trip (`StateStore.claim`'s
`meanwhile`, which the Celery hooks use to write the attempt's pid file): the work runs once,
after the claim is sent and before its answer is read, whatever the claim meets on the way (a
Redis that forgot its scripts, a connection that breaks after the script ran, a stale attempt).

A real redis-server; the claim script is the shared one of `switchyard.wire`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.connection import Connection
from switchyard.wire import FENCE_FIELD, Keys, fence_started

from tests.support.redis_server import RedisServer
from worker_agent.attempts import Attempt
from worker_agent.state_client import Claimed, Refused, StateStore

PREFIX = "sy"


@pytest.fixture
def store(fresh_redis: RedisServer) -> Iterator[StateStore]:
    state = StateStore(fresh_redis.url, PREFIX)
    try:
        yield state
    finally:
        state.close()


def dispatched(server: RedisServer, task_id: str, attempt: int) -> Attempt:
    """A task hash whose fence admits `attempt`, as the scheduler's hand-out leaves it."""
    server.client().hset(Keys(PREFIX).task(task_id), mapping={
        "id": task_id, FENCE_FIELD: str(attempt), "state": "dispatched",
        "args_json": "[1]", "kwargs_json": "{}",
    })
    return Attempt(task_id, attempt, "w1", payload_by_reference=False)


class Steps:
    """What the claim's connection did, in order, with the `meanwhile` calls among it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[str] = []
        send, read = Connection.send_command, Connection.read_response
        steps = self

        def logged_send(connection: Connection, *args: Any, **kwargs: Any) -> None:
            steps.log.append(f"send {args[0]}")
            send(connection, *args, **kwargs)

        def logged_read(connection: Connection, *args: Any, **kwargs: Any) -> Any:
            steps.log.append("read")
            return read(connection, *args, **kwargs)

        monkeypatch.setattr(Connection, "send_command", logged_send)
        monkeypatch.setattr(Connection, "read_response", logged_read)

    def meanwhile(self) -> None:
        self.log.append("meanwhile")


def test_the_work_runs_between_sending_the_claim_and_reading_its_answer(
        fresh_redis: RedisServer, store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    attempt = dispatched(fresh_redis, "t1", 1)
    store.claim(attempt, wait_seconds=5)  # connects and loads the script: not what is looked at
    attempt = dispatched(fresh_redis, "t2", 1)
    steps = Steps(monkeypatch)

    assert isinstance(store.claim(attempt, wait_seconds=5, meanwhile=steps.meanwhile), Claimed)

    assert steps.log == ["send EVALSHA", "meanwhile", "read"]
    assert fresh_redis.client().hget(Keys(PREFIX).task("t2"), FENCE_FIELD) == fence_started(1)


def test_a_redis_that_forgot_the_script_is_sent_its_source_and_the_work_still_runs_once(
        fresh_redis: RedisServer, store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.claim(dispatched(fresh_redis, "t1", 1), wait_seconds=5)
    fresh_redis.client().script_flush()  # what a Redis restart does to loaded scripts
    attempt = dispatched(fresh_redis, "t2", 3)
    steps = Steps(monkeypatch)

    assert isinstance(store.claim(attempt, wait_seconds=5, meanwhile=steps.meanwhile), Claimed)

    assert steps.log == ["send EVALSHA", "meanwhile", "read", "send EVAL", "read"]
    assert fresh_redis.client().hget(Keys(PREFIX).task("t2"), "state") == "running"


def test_an_answer_lost_after_the_script_ran_is_recognized_and_the_work_is_not_repeated(
        fresh_redis: RedisServer, store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    attempt = dispatched(fresh_redis, "t1", 2)
    read = Connection.read_response
    lost: list[bool] = []

    def lose_the_first_answer(connection: Connection, *args: Any, **kwargs: Any) -> Any:
        answer = read(connection, *args, **kwargs)  # the script ran: the fence moved
        if not lost:
            lost.append(True)
            raise redis.ConnectionError("connection reset while reading the answer")
        return answer

    monkeypatch.setattr(Connection, "read_response", lose_the_first_answer)
    calls: list[str] = []

    claimed = store.claim(attempt, wait_seconds=5, meanwhile=lambda: calls.append("pid file"))

    # The retry finds "<attempt>:started", ours: claimed, and the work was done once.
    assert isinstance(claimed, Claimed)
    assert calls == ["pid file"]
    assert lost == [True]


def test_a_stale_attempt_is_refused_after_the_work_ran(
        fresh_redis: RedisServer, store: StateStore) -> None:
    dispatched(fresh_redis, "t1", 2)  # the scheduler moved on to attempt 2
    calls: list[str] = []

    refused = store.claim(Attempt("t1", 1, "w1", payload_by_reference=False), wait_seconds=5,
                          meanwhile=lambda: calls.append("pid file"))

    assert refused == Refused(task_missing=False)
    assert calls == ["pid file"]  # the caller removes what it wrote (celery_hooks)
    assert fresh_redis.client().hget(Keys(PREFIX).task("t1"), FENCE_FIELD) == "2"


def test_a_claim_that_cannot_be_sent_does_not_do_the_work(fresh_redis: RedisServer) -> None:
    fresh_redis.kill()
    state = StateStore(fresh_redis.url, PREFIX)
    calls: list[str] = []
    try:
        with pytest.raises(redis.ConnectionError):
            state.claim(Attempt("t1", 1, "w1", payload_by_reference=False), wait_seconds=0.2,
                        meanwhile=lambda: calls.append("pid file"))
    finally:
        state.close()
        fresh_redis.restart()
    assert calls == []
