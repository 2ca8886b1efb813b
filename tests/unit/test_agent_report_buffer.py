"""Lifecycle reports while the state Redis is away: kept in order, bounded, written when it answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from worker_agent.report_buffer import Report, ReportBuffer


class Unreachable(ConnectionError):
    """What the fake Redis raises while it is down."""


class FakeStream:
    """An events stream that can be taken down and brought back; records every write."""

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []
        self.up = threading.Event()
        self.up.set()
        self.batches = 0
        self.written = threading.Condition()

    def write(self, reports: Sequence[Report]) -> None:
        if not self.up.is_set():
            raise Unreachable("Connection refused")
        with self.written:
            self.entries.extend(dict(report) for report in reports)
            self.batches += 1
            self.written.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, str]]:
        with self.written:
            assert self.written.wait_for(lambda: len(self.entries) >= count, timeout), self.entries
            return list(self.entries)


@pytest.fixture()
def stream() -> FakeStream:
    return FakeStream()


@pytest.fixture()
def buffer(stream: FakeStream) -> Iterator[ReportBuffer]:
    reports = ReportBuffer(stream.write, (Unreachable,), limit=5, retry_initial_seconds=0.01, retry_max_seconds=0.05)
    try:
        yield reports
    finally:
        reports.close()


def report(n: int, kind: str = "progress") -> dict[str, str]:
    return {"type": kind, "task_id": f"t{n}", "attempt": "1"}


def test_written_at_once_while_redis_answers(stream: FakeStream, buffer: ReportBuffer) -> None:
    buffer.send(report(1))
    assert stream.entries == [report(1)]
    assert buffer.pending == 0


def test_reports_buffered_in_order_and_written_when_redis_answers(
        stream: FakeStream, buffer: ReportBuffer, caplog: pytest.LogCaptureFixture) -> None:
    stream.up.clear()
    buffer.send(report(1))
    buffer.send(report(2, "succeeded"))
    assert buffer.pending == 2 and stream.entries == []

    stream.up.set()
    assert stream.wait_for(2) == [report(1), report(2, "succeeded")]
    assert buffer.flush(5)
    # A report sent after the backlog drained goes straight out, after the others.
    buffer.send(report(3))
    assert stream.entries == [report(1), report(2, "succeeded"), report(3)]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("keeping lifecycle reports in memory" in m for m in messages) == 1
    assert any("wrote 2 buffered report(s)" in m for m in messages)


def test_a_report_sent_while_a_backlog_exists_joins_its_end(stream: FakeStream, buffer: ReportBuffer) -> None:
    stream.up.clear()
    buffer.send(report(1))
    # Redis answers again for a direct write, but the backlog must go first.
    stream.up.set()
    buffer.send(report(2))
    assert stream.wait_for(2) == [report(1), report(2)]


def test_the_oldest_reports_are_dropped_when_the_buffer_is_full(
        stream: FakeStream, buffer: ReportBuffer, caplog: pytest.LogCaptureFixture) -> None:
    stream.up.clear()
    for n in range(8):
        buffer.send(report(n))
    assert buffer.pending == 5 and buffer.dropped == 3
    assert sum("report buffer full" in r.getMessage() for r in caplog.records) == 1

    stream.up.set()
    assert stream.wait_for(5) == [report(n) for n in range(3, 8)]
    assert buffer.flush(5)
    assert any("3 older report(s) were dropped" in r.getMessage() for r in caplog.records)


def test_flush_gives_up_after_its_timeout_while_redis_stays_down(stream: FakeStream, buffer: ReportBuffer) -> None:
    stream.up.clear()
    buffer.send(report(1))
    assert buffer.flush(0.1) is False
    assert buffer.pending == 1

