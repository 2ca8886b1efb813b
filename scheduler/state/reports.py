"""Reading the lifecycle stream: the command, the entries as reports, and a read already sent.

Workers report (started, progress, succeeded, failed) by XADD to one stream, read by one
consumer group. `store.RedisEventLog` reads it on its own pipelined connection
(`Connection.stream_lane`: a blocking read must not hold up the hot path's scripts), and the
lifecycle's round sends its next read there right after the script that applies the reports it
has (`tasks.RedisTaskStore.apply_dispatch_and_read`): one write instead of two per round, and
the reports that come next are already on their way while the round's replies are followed.
"""

from __future__ import annotations

import math
from typing import Any

from redis import exceptions as redis_errors
from switchyard.wire import EVENTS_GROUP, Keys

from scheduler.state.connection import Connection, StorePart, guarded
from scheduler.state.interface import LifecycleEvent
from scheduler.state.lane import Sent

EVENTS_CONSUMER = "scheduler-1"
"""Consumer name within the events group (one leader reads at a time)."""

READ_COUNT = 500
"""Reports a read takes at most (`EventLog.read`'s default)."""
READ_BLOCK_MS = 500
"""How long a read of new reports waits for one (`EventLog.read`'s default)."""


def read_command(keys: Keys, *, backlog: bool, count: int, block_ms: int) -> tuple[Any, ...]:
    """The bare XREADGROUP: the entries delivered but never acknowledged (`backlog`), else new
    ones, waiting up to `block_ms` for some. Its reply is taken apart by `reports_of` (redis-py's
    xreadgroup builds a dict per entry, and its command path costs more than the read)."""
    block = () if backlog else ("BLOCK", block_ms)
    return ("XREADGROUP", "GROUP", EVENTS_GROUP, EVENTS_CONSUMER, "COUNT", count, *block,
            "STREAMS", keys.events, "0" if backlog else ">")


def reports_of(reply: Any) -> list[LifecycleEvent]:
    """The reports in an XREADGROUP reply."""
    streams = reply.items() if isinstance(reply, dict) else reply or []  # RESP3 answers a map
    return [
        # An entry deleted since it was delivered has no fields (a backlog read shows it).
        report_of(stream_id, dict(zip(flat[::2], flat[1::2], strict=True)))
        for _stream, entries in streams
        for stream_id, flat in entries
        if flat
    ]


def report_of(stream_id: Any, fields: dict[str, str]) -> LifecycleEvent:
    """A stream entry as a report. A malformed attempt reads as 0, which no dispatched task
    has, so the report is dropped as stale rather than breaking the reader."""
    return LifecycleEvent(
        stream_id=str(stream_id), kind=fields.get("type", ""), task_id=fields.get("task_id", ""),
        attempt=int_or_zero(fields.get("attempt")), worker_id=fields.get("worker_id", ""),
        ts=_time_or_zero(fields.get("ts")), fields=fields,
    )


def int_or_zero(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        return 0


def _time_or_zero(text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


async def ensure_group(connection: Connection) -> None:
    """Create the consumer group (and the stream) unless it exists."""
    try:
        await connection.redis.xgroup_create(connection.keys.events, EVENTS_GROUP, id="0", mkstream=True)
    except redis_errors.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def lost_group(exc: redis_errors.ResponseError) -> bool:
    """Whether a read failed because the group is gone (a Redis that came back empty): it must
    be created again, or every read after this fails the same way."""
    return "NOGROUP" in str(exc)


class RedisNextReports(StorePart):
    """A read of new reports already sent on the stream's connection (`NextReports`)."""

    def __init__(self, connection: Connection, sent: Sent) -> None:
        super().__init__(connection)
        self._sent = sent

    @guarded
    async def wait(self) -> list[LifecycleEvent]:
        """The reports it read ([] when none came within its wait, or the group had to be made again)."""
        try:
            return reports_of(await self._conn.stream_lane.reply(self._sent))
        except redis_errors.ResponseError as exc:
            if not lost_group(exc):
                raise
            await ensure_group(self._conn)
            return []

    def drop(self) -> None:
        """Give the read up: still waiting in Redis, its connection is closed (so it takes no
        entry for nobody); what it already took stays unacknowledged, read again as backlog."""
        self._conn.stream_lane.abandon(self._sent)
