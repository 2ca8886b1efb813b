"""Task records and their transitions in Redis (`TaskStore`): each transition one Lua script.

Reads fetch the record's fields by name (HMGET of `records.RECORD_FIELDS`), never the whole
hash: the task's payload lives in the same hash and can be megabytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import orjson
from redis import exceptions as redis_errors
from switchyard.wire import EVENTS_GROUP, FENCE_CANCELLED, FENCE_REQUEUED, PAYLOAD_FIELDS

from scheduler.cooperative import YIELD_EVERY, breathe
from scheduler.core.model import TaskState
from scheduler.dispatch import BODY_EMBED, EMPTY_MSGPACK_BODY, payload_mode
from scheduler.state import records
from scheduler.state.connection import StorePart, guarded, pair_call, queue_script
from scheduler.state.interface import (
    Applied,
    CancelOutcome,
    CancelStatus,
    EventKind,
    FailureAction,
    FailureOutcome,
    HandOutRequest,
    IdempotencyConflict,
    LifecycleEvent,
    NextReports,
    Reclaim,
    Retention,
    SubmitGroup,
    SubmitOutcome,
)
from scheduler.state.records import TaskRecord
from scheduler.state.reports import READ_BLOCK_MS, READ_COUNT, RedisNextReports, read_command


def _submit_outcomes(reply: Sequence[Any]) -> list[SubmitOutcome] | IdempotencyConflict:
    if reply[0] == "conflict":
        return IdempotencyConflict(int(reply[1]), str(reply[2]))
    return [
        SubmitOutcome(str(reply[i]), reply[i + 1] == "-1", max(0, int(reply[i + 1])))
        for i in range(1, len(reply), 2)
    ]


def _applied(reply: Sequence[Any]) -> list[Applied | None]:
    return [
        Applied(TaskState(row[0]), str(row[1]), str(row[2]), *(float(x) for x in row[3:5])) if row else None
        for row in reply
    ]


def _lifecycle_outcome(reply: Any, *, handed_out: bool) -> tuple[list[Applied | None], list[bool]]:
    """The reply of `_lifecycle_call`'s script: what each report did, and which hand-outs were made."""
    if not handed_out:
        return _applied(reply), []
    applied, handed = reply
    return _applied(applied), [bool(flag) for flag in handed]


def _report_values(event: LifecycleEvent, outcome: FailureOutcome | None) -> list[str]:
    """The 11 values of one report for scripts/apply.lua (all text)."""
    fields = event.fields
    if event.kind == EventKind.SUCCEEDED:
        first, second = fields.get("result_json", "null"), ""
    elif event.kind == EventKind.FAILED:
        first, second = fields.get("error", ""), fields.get("traceback", "")
    elif event.kind == EventKind.PROGRESS:
        first, second = fields.get("progress", "0"), fields.get("message", "")
    else:
        first, second = "", ""
    outcome = outcome or FailureOutcome(FailureAction.FAIL, 0.0, "")
    # The script compares attempts as text: the decimal the dispatch script stored.
    return [event.stream_id, event.task_id, event.kind, str(event.attempt), repr(event.ts), first, second,
            fields.get("error_type", ""), outcome.action.value, repr(outcome.next_attempt_at), outcome.reason]


TRIM_INTERVAL_SECONDS = 1.0
"""How often applying reports also trims the stream behind them (a trim per batch is waste)."""


class RedisTaskStore(StorePart):
    """Task records and their transitions (`TaskStore`)."""

    _next_trim = 0.0

    def _record_read(self, pipe: Any, task_id: str) -> None:
        pipe.hmget(self._keys.task(task_id), records.RECORD_FIELDS)

    async def _submit_args(self, groups: Sequence[SubmitGroup], ttl: int) -> list[Any]:
        keys = self._keys
        args: list[Any] = [keys.task(""), keys.idempotency(""), ttl]
        for group in groups:
            items = []
            for index, task in enumerate(group):
                if index and not index % YIELD_EVERY:
                    await breathe()
                record = task.record
                fields = records.encode_submitted(record)
                fields += (PAYLOAD_FIELDS[0], task.args_json, PAYLOAD_FIELDS[1], task.kwargs_json)
                if task.celery_body:
                    fields += (records.CELERY_BODY_FIELD, task.celery_body)
                items.append([record.task_id, record.idempotency_key, record.payload_digest, fields])
            # One argument per group, encoded and decoded in C (orjson here, cjson in the script).
            args.append(orjson.dumps(items))
        return args

    def _dispatch_args(self, requests: Sequence[HandOutRequest], now: float) -> list[Any]:
        keys = self._keys
        rows = [[r.task_id, r.worker_id, str(r.attempt), payload_mode(r.by_reference, r.envelope.serializer),
                 "" if r.gpu_index is None else str(r.gpu_index), r.served_queue, r.reason,
                 r.envelope.queue, *r.envelope.pieces] for r in requests]
        return [keys.task(""), keys.inflight(""), repr(now), BODY_EMBED, EMPTY_MSGPACK_BODY, orjson.dumps(rows)]

    @guarded
    async def submit(
        self, groups: Sequence[SubmitGroup], idempotency_ttl_seconds: int,
        hand_outs: Sequence[HandOutRequest] = (), now: float = 0.0,
    ) -> tuple[list[list[SubmitOutcome] | IdempotencyConflict], list[bool]]:
        """Write each group atomically, then hand out `hand_outs` (at `now`), in one round trip
        (which ends with the replica wait, when one is configured: `ReplicaWait`)."""
        keys = self._keys
        submit_args = await self._submit_args(groups, idempotency_ttl_seconds)
        dispatch_args = self._dispatch_args(hand_outs, now) if hand_outs else []
        replica_wait = self._conn.replica_wait

        submit_keys = [keys.seq, keys.pending, keys.tasks]
        script, script_keys, script_args = (
            (self._scripts.submit_dispatch, *pair_call(submit_keys, submit_args, [keys.pending], dispatch_args))
            if hand_outs else (self._scripts.submit, submit_keys, submit_args))
        if replica_wait.replicas:

            def build(pipe: Any) -> None:
                queue_script(pipe, script, script_keys, script_args)
                # Still the same round trip: WAIT answers once replicas have this connection's writes.
                replica_wait.queue(pipe)

            reply, acknowledged = await self._pipelined(build)
            replica_wait.reached(int(acknowledged), self._conn.location)
        else:
            reply = await script(script_keys, script_args)  # a pipeline of one would cost more
        submitted, handed = reply if hand_outs else (reply, [])
        return [_submit_outcomes(one) for one in submitted], [bool(flag) for flag in handed]

    @guarded
    async def get(self, task_id: str) -> TaskRecord | None:
        """The task's record, or None when it does not exist (or has expired)."""
        values = await self._redis.hmget(self._keys.task(task_id), records.RECORD_FIELDS)
        return records.decode_fields(cast(list[str | None], values))

    @guarded
    async def load(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        """Records of many ids in one round trip (missing ones are skipped)."""
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            self._record_read(pipe, task_id)
        return [r for values in await pipe.execute() if (r := records.decode_fields(values)) is not None]

    @guarded
    async def watch(self, task_id: str) -> None:
        """Mark the task watched: from now on its claims announce the start (see watch.lua)."""
        await self._scripts.watch(keys=[self._keys.task(task_id)], args=[])

    @guarded
    async def dispatch(self, requests: Sequence[HandOutRequest], now: float) -> list[bool]:
        """Commit the round's hand-outs and queue their Celery messages, in one script."""
        if not requests:
            return []
        reply = await self._scripts.dispatch(keys=[self._keys.pending], args=self._dispatch_args(requests, now))
        return [bool(flag) for flag in reply]

    @guarded
    async def apply(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention
    ) -> list[Applied | None]:
        """Apply and acknowledge a batch of reports in one script, each fenced by attempt."""
        if not events:
            return []
        script, script_keys, script_args = self._lifecycle_call(events, outcomes, retention, (), 0.0)
        return _applied(await script(script_keys, script_args))

    def _lifecycle_call(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention,
        hand_outs: Sequence[HandOutRequest], now: float,
    ) -> tuple[Any, list[Any], list[Any]]:
        """The script, keys and arguments that apply the reports and then, where there are any,
        hand out `hand_outs` (the slots those reports free): its reply reads with `_lifecycle_outcome`."""
        keys = self._keys
        apply_keys = [keys.events, keys.retry, keys.dead_letters]
        apply_args = self._apply_args(events, outcomes, retention)
        if not hand_outs:
            return self._scripts.apply, apply_keys, apply_args
        script_keys, script_args = pair_call(apply_keys, apply_args, [keys.pending], self._dispatch_args(hand_outs, now))
        return self._scripts.apply_dispatch, script_keys, script_args

    def _apply_args(self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None],
                    retention: Retention) -> list[Any]:
        keys = self._keys
        trim = time.monotonic() >= self._next_trim
        if trim:
            self._next_trim = time.monotonic() + TRIM_INTERVAL_SECONDS
        rows = [_report_values(event, outcome) for event, outcome in zip(events, outcomes, strict=True)]
        return [keys.task(""), keys.inflight(""), "1" if trim else "0", EVENTS_GROUP,
                max(1, int(retention.result_ttl_seconds)), max(1, int(retention.dead_letter_ttl_seconds)),
                orjson.dumps(rows)]

    @guarded
    async def apply_then_dispatch(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention,
        hand_outs: Sequence[HandOutRequest], now: float,
    ) -> tuple[list[Applied | None], list[bool]]:
        """`apply`, then `dispatch` the hand-outs (the slots those reports free), in one script call."""
        if not hand_outs:
            return await self.apply(events, outcomes, retention), []
        script, script_keys, script_args = self._lifecycle_call(events, outcomes, retention, hand_outs, now)
        return _lifecycle_outcome(await script(script_keys, script_args), handed_out=True)

    @guarded
    async def apply_dispatch_and_read(
        self, events: Sequence[LifecycleEvent], outcomes: Sequence[FailureOutcome | None], retention: Retention,
        hand_outs: Sequence[HandOutRequest], now: float,
    ) -> tuple[list[Applied | None], list[bool], NextReports]:
        """`apply_then_dispatch` on the stream's connection, the next blocking read written with
        it (reports.py): one write, and Redis starts the read as soon as the script is done."""
        keys = self._keys
        lane = self._conn.stream_lane
        read_next = read_command(keys, backlog=False, count=READ_COUNT, block_ms=READ_BLOCK_MS)
        if not events and not hand_outs:
            (read,) = await lane.send(read_next)
            return [], [], RedisNextReports(self._conn, read)
        script, script_keys, script_args = self._lifecycle_call(events, outcomes, retention, hand_outs, now)
        ran, read = await lane.send(script.command(script_keys, script_args), read_next)
        try:
            try:
                reply = await lane.reply(ran)
            except redis_errors.NoScriptError:  # Redis restarted: the script again, where it loads it
                reply = await script(script_keys, script_args)
        except BaseException:
            lane.abandon(read)
            raise
        applied, handed = _lifecycle_outcome(reply, handed_out=bool(hand_outs))
        return applied, handed, RedisNextReports(self._conn, read)

    async def _then_record(self, script: Any, keys: list[str], args: list[Any], task_id: str) -> tuple[Any, TaskRecord | None]:
        """Run a transition and read the record after it, in one round trip."""

        def build(pipe: Any) -> None:
            queue_script(pipe, script, keys, args)
            self._record_read(pipe, task_id)

        reply, values = await self._pipelined(build)
        return reply, records.decode_fields(values)

    @guarded
    async def requeue(self, task_id: str, worker_id: str, reason: str) -> TaskRecord | None:
        """A lost worker's attempt back to pending, its fence moved on; None if not in flight there."""
        return await self._requeue(task_id, worker_id, [reason, FENCE_REQUEUED])

    @guarded
    async def reclaim_unstarted(self, reclaim: Reclaim, result_ttl_seconds: float) -> TaskRecord | None:
        """A hand-out that never started back to pending (or ended failed); see `TaskStore`."""
        fail_at = reclaim.fail_at
        args: list[Any] = [reclaim.reason, FENCE_REQUEUED, str(reclaim.attempt)]
        if fail_at is not None:
            args += ["fail", repr(fail_at), max(1, int(result_ttl_seconds)), reclaim.error_type]
        return await self._requeue(reclaim.task_id, reclaim.worker_id, args)

    @guarded
    async def reclaim_unreported(self, task_id: str, worker_id: str, attempt: int, reason: str) -> TaskRecord | None:
        """A running attempt its worker no longer reports back to pending; see `TaskStore`."""
        return await self._requeue(task_id, worker_id, [reason, FENCE_REQUEUED, str(attempt), "unreported"])

    async def _requeue(self, task_id: str, worker_id: str, args: list[Any]) -> TaskRecord | None:
        """requeue.lua on one attempt (its mode in `args`), then the record, in one round trip."""
        keys = self._keys
        reply, record = await self._then_record(
            self._scripts.requeue, [keys.task(task_id), keys.inflight(worker_id), keys.pending],
            [task_id, worker_id, *args], task_id,
        )
        return record if reply else None

    @guarded
    async def cancel(self, task_id: str, now: float, reason: str, result_ttl_seconds: float) -> CancelOutcome:
        """Cancel a task that has not finished (a finished one comes back as TERMINAL, unchanged)."""
        keys = self._keys
        reply, record = await self._then_record(
            self._scripts.cancel, [keys.task(task_id), keys.pending, keys.retry],
            [keys.inflight(""), keys.stats(""), task_id, repr(now), reason, FENCE_CANCELLED,
             max(1, int(result_ttl_seconds))], task_id,
        )
        status = CancelStatus(reply[0])
        if status is CancelStatus.MISSING:
            return CancelOutcome(status, None, None)
        return CancelOutcome(status, TaskState(reply[1]), record)

    @guarded
    async def promote(self, task_id: str, from_state: TaskState, reason: str) -> TaskRecord | None:
        """A due retry or a replayed dead letter back to pending; None if not in `from_state`."""
        keys = self._keys
        index = keys.retry if from_state == TaskState.RETRYING else keys.dead_letters
        reply, record = await self._then_record(
            self._scripts.promote, [keys.task(task_id), keys.pending, index],
            [task_id, from_state.value, reason], task_id,
        )
        return record if reply else None
