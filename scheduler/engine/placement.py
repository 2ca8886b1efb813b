"""The placement loop: late binding. Whenever a slot may be free or work arrives, plan one round
in exact priority order, commit its hand-outs in one round trip, then publish them to Celery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from scheduler.core.placement import plan
from scheduler.core.ratelimit import Bucket, refill
from scheduler.dispatch import HandOut
from scheduler.engine.shared import Shared, in_flight_of
from scheduler.state.interface import DispatchOutcome, HandOutRequest
from scheduler.state.records import TaskRecord

log = logging.getLogger("switchyard.scheduler.engine.placement")

RATE_LIMIT_RECHECK_SECONDS = 0.5
"""How soon a round held back by a rate limit looks again (nothing else wakes it)."""


def hand_out_of(record: TaskRecord, args_json: str | None, kwargs_json: str | None) -> HandOut:
    """The Celery publication of a committed attempt."""
    return HandOut(
        record.task_id, record.attempt, record.worker_id, record.name, args_json, kwargs_json,
        soft_time_limit=record.soft_time_limit or None,
        hard_time_limit=record.hard_time_limit or None,
    )


class Placement:
    """Plans rounds, commits hand-outs and publishes them."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._buckets: dict[str, Bucket] = {}

    async def run(self) -> None:
        """Place whenever kicked (a submission, a freed slot, a new worker, a resumed queue...)."""
        shared = self.shared
        while True:
            await shared.kick.wait()
            shared.kick.clear()
            await self.round()

    def _rate_tokens(self, now: float) -> dict[str, int]:
        tokens: dict[str, int] = {}
        for limit in self.shared.settings.rate_limits:
            bucket = refill(limit, self._buckets.get(limit.pattern), now)
            self._buckets[limit.pattern] = bucket
            tokens[limit.pattern] = int(bucket.tokens)
        return tokens

    def _spend_token(self, task_name: str) -> None:
        for limit in self.shared.settings.rate_limits:
            if limit.matches(task_name):
                bucket = self._buckets[limit.pattern]
                self._buckets[limit.pattern] = Bucket(bucket.tokens - 1, bucket.updated_at)
                return

    async def round(self) -> int:
        """One placement round: plan, commit each hand-out, publish. Returns hand-outs made."""
        shared = self.shared
        settings = shared.settings
        now = shared.clock()
        views = shared.worker_views(now)
        prefetch = settings.dispatch_prefetch
        if not len(shared.pending) or not any(v.accepting and v.slots + prefetch > v.in_flight for v in views):
            return 0
        shared.metrics.placement_rounds.inc()
        queues = [q.name for q in settings.queues if q.name not in shared.paused]
        decision = plan(shared.pending.in_order(queues, settings.aging, now), views,
                        ctx=shared.placement_context(now), rate_tokens=self._rate_tokens(now))
        if decision.more:
            shared.kick.set()  # budget reached: let other coroutines run, then place the rest
        shared.rate_limited = {t: r for t, r in decision.waiting.items() if r.startswith("rate limited")}
        if shared.rate_limited:
            asyncio.get_running_loop().call_later(RATE_LIMIT_RECHECK_SECONDS, shared.kick.set)
        requests: list[HandOutRequest] = []
        for assignment in decision.assignments:
            task = shared.pending.get(assignment.task_id)
            if task is not None and settings.rate_limits:
                self._spend_token(task.task_name)
            shared.pending.remove(assignment.task_id)
            reason = f"placed on {assignment.reason}; {task.class_reason if task else ''}".rstrip("; ")
            requests.append(HandOutRequest(assignment.task_id, assignment.worker_id, assignment.gpu_index,
                                           assignment.served_queue, reason))
        # One round trip for the round; each hand-out is still its own atomic script.
        outcomes = await shared.state.tasks.dispatch(requests, now, settings.inline_payload_bytes)
        hand_outs = [h for request, outcome in zip(requests, outcomes, strict=True)
                     if (h := await self._follow(request, outcome)) is not None]
        if hand_outs:
            await self.publish(hand_outs)
        return len(hand_outs)

    async def _follow(self, request: HandOutRequest, outcome: DispatchOutcome | None) -> HandOut | None:
        """Memory follows one committed hand-out; the publication to make, if any."""
        shared = self.shared
        worker = shared.fleet.get(request.worker_id)
        if outcome is None or worker is None:
            return None
        record = outcome.task
        if worker.lost:
            # Lost while we were committing: move it straight back.
            back = await shared.state.tasks.requeue(record.task_id, worker.worker_id, "re-queued: worker lost")
            if back is not None:
                shared.back_to_pending(back)
            return None
        worker.in_flight[record.task_id] = in_flight_of(record)
        waited = record.dispatched_at - record.submitted_at
        shared.metrics.submit_to_dispatch.labels(record.queue).observe(max(0.0, waited))
        shared.watchers.notify(record)
        return hand_out_of(record, outcome.args_json, outcome.kwargs_json)

    async def publish(self, hand_outs: Sequence[HandOut]) -> None:
        """Publish to the workers' Celery queues, then record which made it."""
        published = await self.shared.dispatcher.publish(hand_outs)
        await self.shared.state.tasks.mark_published(published)
