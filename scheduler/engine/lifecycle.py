"""Lifecycle: apply the workers' durable reports (started, progress, succeeded, failed) and bring
retries back when their backoff is over. Reports are fenced by attempt in the store, so a stale
attempt's report changes nothing; a failed report first asks the retry policy what it becomes."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from scheduler import crashpoints
from scheduler.core.model import TERMINAL_STATES, TaskState
from scheduler.core.retry import NOT_REGISTERED, RetryAction, decide_retry
from scheduler.engine.placement import Placement
from scheduler.engine.shared import Shared
from scheduler.fleet import InFlight
from scheduler.state.interface import (
    Applied,
    EventKind,
    FailureAction,
    FailureOutcome,
    LifecycleEvent,
    NextReports,
    Retention,
)
from scheduler.state.records import TaskRecord

log = logging.getLogger("switchyard.scheduler.engine.lifecycle")

RETRY_POLL_SECONDS = 0.2
"""How often due retries are looked for (their times are in Redis, not in Celery)."""

_ACTIONS = {RetryAction.RETRY: FailureAction.RETRY, RetryAction.DEAD_LETTER: FailureAction.DEAD_LETTER}


class Lifecycle:
    """Applies lifecycle reports and due retries."""

    def __init__(self, shared: Shared, placement: Placement, *, unit_random: random.Random | None = None) -> None:
        self.shared = shared
        self.placement = placement
        self.random = unit_random or random.Random()
        settings = shared.settings
        self.retention = Retention(settings.result_ttl_seconds, settings.dead_letter_ttl_seconds)

    async def run(self) -> None:
        """Read the stream: first what was delivered but never acknowledged, then new reports,
        each round's next read sent with the script that applies what the round read."""
        events_log = self.shared.state.events
        backlog = True
        next_reports: NextReports | None = None
        try:
            while True:
                if next_reports is not None:
                    events = await next_reports.wait()
                    next_reports = None
                else:
                    events = await events_log.read(backlog=backlog)
                if backlog and not events:
                    backlog = False
                    continue
                if events:
                    crashpoints.reached("report:read")
                    next_reports = await self.apply(events, read_on=not backlog)
        finally:
            if next_reports is not None:
                next_reports.drop()  # what it took is read again, as backlog, by the next run

    async def watch_starts(self) -> None:
        """Claims announced by workers: tell whoever watches those tasks that they run."""
        async for started in self.shared.state.events.started():
            await self.shared.notify_watchers((started.task_id,))

    async def apply(self, events: Sequence[LifecycleEvent], *, read_on: bool = False) -> NextReports | None:
        """Apply and acknowledge a batch of reports in one round trip, the retry policy consulted
        first for each failed report (its current attempt and failure count decide). With
        `read_on` (the loop's rounds), the next read of new reports goes out in that round trip
        too, and is returned."""
        if not events:
            return None
        failed = [e.task_id for e in events if e.kind == EventKind.FAILED]
        current = {r.task_id: r for r in await self.shared.state.tasks.load(failed)} if failed else {}
        outcomes = [self._failure_outcome(e, current.get(e.task_id)) if e.kind == EventKind.FAILED else None
                    for e in events]
        shared, placement = self.shared, self.placement
        next_reports: NextReports | None = None
        try:
            async with placement.lock:
                now = shared.clock()
                freed = self._free_slots(events)
                # Completion match: the slots these reports free are handed out again in the same
                # round trip that applies the reports.
                chosen = placement.take_round(now) if freed else []
                crashpoints.reached("apply:before")
                if chosen:
                    crashpoints.reached("dispatch:before")
                hand_outs = [request for _task, request in chosen]
                try:
                    if read_on:
                        applied, handed, next_reports = await shared.state.tasks.apply_dispatch_and_read(
                            events, outcomes, self.retention, hand_outs, now)
                    else:
                        applied, handed = await shared.state.tasks.apply_then_dispatch(
                            events, outcomes, self.retention, hand_outs, now)
                except BaseException:
                    for worker_id, item in freed:
                        worker = shared.fleet.get(worker_id)
                        if worker is not None:
                            worker.in_flight.setdefault(item.task_id, item)
                    placement.put_back(chosen)
                    raise
                crashpoints.reached("apply:after")
                if chosen:
                    crashpoints.reached("dispatch:after")
                for event, result in zip(events, applied, strict=True):
                    self._follow(event, result)
                crashpoints.reached("report:followed")
                if chosen:
                    await placement.follow(chosen, handed, now)
            await shared.notify_watchers(e.task_id for e, result in zip(events, applied, strict=True) if result)
        except BaseException:
            if next_reports is not None:
                next_reports.drop()  # the round did not finish: no read may be left behind
            raise
        return next_reports

    def _free_slots(self, events: Sequence[LifecycleEvent]) -> list[tuple[str, InFlight]]:
        """Take the attempts these reports end off their workers' ledgers now, where memory
        agrees with the report (so the store will apply it); what was taken, to restore on error."""
        freed = []
        for event in events:
            if event.kind not in (EventKind.SUCCEEDED, EventKind.FAILED):
                continue
            worker = self.shared.fleet.get(event.worker_id)
            item = worker.in_flight.get(event.task_id) if worker is not None else None
            if worker is not None and item is not None and item.attempt == event.attempt:
                del worker.in_flight[event.task_id]
                freed.append((worker.worker_id, item))
        return freed

    def _failure_outcome(self, event: LifecycleEvent, current: TaskRecord | None) -> FailureOutcome | None:
        """What the retry policy makes of this failed report (None when the report is stale)."""
        if current is None or current.attempt != event.attempt:
            return None
        if event.fields.get("error_type", "") == NOT_REGISTERED:
            return FailureOutcome(FailureAction.FAIL, 0.0, (
                f"task {current.name!r} is not registered on worker {event.worker_id} (its Celery app "
                "does not know the name); not retried, it would fail the same way again"))
        settings = self.shared.settings
        policy = settings.retry_policies.get(current.retry_policy) or settings.retry_policies.get(
            settings.default_retry_policy
        )
        if policy is None:
            return FailureOutcome(FailureAction.FAIL, 0.0, "failed (no retry policy)")
        decision = decide_retry(policy, current.failures + 1, event.fields.get("error_type", ""),
                                self.random.random(), qualified_type=event.fields.get("error_qualname", ""))
        if decision.action is RetryAction.RETRY:
            return FailureOutcome(FailureAction.RETRY, self.shared.clock() + decision.delay_seconds, decision.reason)
        return FailureOutcome(_ACTIONS.get(decision.action, FailureAction.FAIL), 0.0, decision.reason)

    def _follow(self, event: LifecycleEvent, applied: Applied | None) -> None:
        """Memory follows the store: ledgers, retry and dead-letter indexes, failures."""
        shared = self.shared
        if applied is None:
            if event.kind != EventKind.PROGRESS:
                shared.metrics.stale_reports.inc()
                log.info("dropped stale %s report of %s attempt %s from %s",
                         event.kind, event.task_id, event.attempt, event.worker_id)
            return
        if event.kind not in (EventKind.SUCCEEDED, EventKind.FAILED):
            return
        worker = shared.fleet.get(applied.worker_id)
        if worker is not None and worker.in_flight.pop(event.task_id, None) is not None:
            shared.kick.set()
        if applied.state is TaskState.RETRYING:
            shared.retrying[event.task_id] = applied.queue
        elif applied.state is TaskState.DEAD_LETTERED:
            shared.dead[event.task_id] = applied.queue
        shared.stats.ended(applied)
        shared.metrics.attempt_ended(applied.queue, applied.state.value, applied.waited_seconds, applied.ran_seconds)
        if applied.state in TERMINAL_STATES:
            shared.outcomes[applied.queue].append(applied.state is not TaskState.SUCCEEDED)
        if event.kind == EventKind.FAILED and worker is not None:
            self._count_failure(worker.worker_id, event.task_id)

    def _count_failure(self, worker_id: str, task_id: str) -> None:
        shared = self.shared
        worker = shared.fleet.get(worker_id)
        policy = shared.settings.placement
        if worker is not None and worker.record_failure(
            shared.clock(), policy.failure_window_seconds, policy.quarantine_failures, policy.quarantine_seconds,
            task_id,
        ):
            log.warning("worker %s quarantined for %gs after %d tasks failed on it within %gs",
                        worker.worker_id, policy.quarantine_seconds, policy.quarantine_failures,
                        policy.failure_window_seconds)
            asyncio.get_running_loop().call_later(policy.quarantine_seconds, shared.kick.set)

    async def run_retries(self) -> None:
        """Retrying tasks whose backoff is over become pending again (held here, not in Celery)."""
        while True:
            await asyncio.sleep(RETRY_POLL_SECONDS)
            await self.promote_due_retries()

    async def promote_due_retries(self) -> int:
        shared = self.shared
        due = await shared.state.indexes.due_retries(shared.clock())
        promoted = 0
        for task_id in due:
            crashpoints.reached("retry:promote:before")
            record = await shared.state.tasks.promote(task_id, TaskState.RETRYING, "retry due")
            crashpoints.reached("retry:promote:after")
            shared.retrying.pop(task_id, None)
            if record is not None:
                shared.back_to_pending(record)
                promoted += 1
        return promoted
