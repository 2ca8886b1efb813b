"""The start-up handshake between the agent and its Celery worker, and the NotRegistered text."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from worker_agent import environment
from worker_agent.celery_hooks import not_registered_text
from worker_agent.handshake import (
    AgentChannel,
    HandshakeError,
    WorkerRelease,
    WorkerReport,
    worker_handshake,
)


def test_worker_reports_its_tasks_and_waits_for_the_agents_release(monkeypatch: pytest.MonkeyPatch) -> None:
    report = WorkerReport(("app.a", "app.b"), "redis://:pw@h:1/0", 4242)
    released: list[WorkerRelease | None] = []

    async def agent() -> WorkerReport | None:
        channel = AgentChannel()
        # What the worker process inherits is a copy of its end; the agent then drops its own.
        monkeypatch.setenv(environment.AGENT_CHANNEL_FD, str(os.dup(channel.worker_fd)))
        channel.worker_started()
        # The worker's side blocks until the release, as it does inside Celery's worker_init.
        worker = threading.Thread(target=lambda: released.append(worker_handshake(report)))
        worker.start()
        try:
            received = await channel.read_report()
            assert not released, "the worker went on before the agent released it"
            await channel.release(WorkerRelease("redis://h:1/0", "sy"))
        finally:
            await asyncio.to_thread(worker.join, 5)
            channel.close()
        return received

    assert asyncio.run(agent()) == report
    assert released == [WorkerRelease("redis://h:1/0", "sy")]


def test_a_worker_not_started_by_an_agent_skips_the_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment.AGENT_CHANNEL_FD, raising=False)
    assert worker_handshake(WorkerReport((), "", 1)) is None


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b'{"registered_tasks": "app.a"}\n'])
def test_an_unreadable_report_is_a_handshake_error(line: bytes) -> None:
    with pytest.raises(HandshakeError):
        WorkerReport.from_line(line)


def test_a_release_without_a_state_redis_is_a_handshake_error() -> None:
    with pytest.raises(HandshakeError, match="names no state Redis"):
        WorkerRelease.from_line(b'{"key_prefix": "sy"}\n')


def test_not_registered_error_names_the_task_the_worker_and_what_it_registers() -> None:
    text = not_registered_text("x.y", "w1", ["a", "b"])
    assert text == "task 'x.y' is not registered on worker w1 (its Celery app registers: a, b)"
    many = not_registered_text("x.y", "w1", [f"t{i:02d}" for i in range(25)])
    assert many.endswith("t19 and 5 more)")
    assert not_registered_text("x.y", "w1", []).endswith("(its Celery app registers: no tasks)")


def test_a_sentinel_brokers_master_name_travels_with_the_report() -> None:
    report = WorkerReport(("app.a",), "sentinel://s1:26379;sentinel://s2:26379", 7, broker_master_name="mymaster")
    assert WorkerReport.from_line(report.to_line()) == report
    # A report from a worker that predates the field reads as "no master name".
    assert WorkerReport.from_line(b'{"registered_tasks": [], "broker_url": "", "pid": 1}\n').broker_master_name == ""
