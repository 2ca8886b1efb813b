"""The placement loop: late binding. Whenever a slot may be free or work arrives, plan one round
in exact priority order and hand its tasks out with one atomic script (commit + Celery message).

A round and a sync match (admission handing a fresh task out in its own submit round trip) both
hold `lock`, so two placement decisions are never in flight at once and a slot is never booked
twice. The store refuses a hand-out whose task is no longer pending at the expected attempt; the
engine then re-reads that task and lets memory follow what Redis says, which also heals a round
whose reply was lost to an outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from scheduler import crashpoints
from scheduler.core.model import IN_FLIGHT_STATES, Assignment, PendingTask, TaskState
from scheduler.core.placement import ShapeVerdicts, plan
from scheduler.core.ratelimit import Bucket, refill
from scheduler.dispatch import HandOut
from scheduler.engine.shared import Shared, in_flight_of
from scheduler.fleet import InFlight
from scheduler.state.interface import HandOutRequest

log = logging.getLogger("switchyard.scheduler.engine.placement")

RATE_LIMIT_RECHECK_SECONDS = 0.5
"""How soon a round held back by a rate limit looks again (nothing else wakes it)."""


class Placement:
    """Plans rounds and hands their tasks out."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.lock = asyncio.Lock()
        self._buckets: dict[str, Bucket] = {}
        self._verdicts = ShapeVerdicts()
        """What kinds of task make of shapes of worker, kept from round to round."""

    async def run(self) -> None:
        """Place whenever kicked (a submission, a freed slot, a new worker, a resumed queue...)."""
        shared = self.shared
        while True:
            await shared.kick.wait()
            shared.kick.clear()
            async with self.lock:
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

    def has_free_slot(self) -> bool:
        """Whether some accepting worker has room (read off the fleet: no views are built)."""
        prefetch = self.shared.settings.dispatch_prefetch
        return any(w.accepting and w.slots + prefetch > len(w.in_flight) for w in self.shared.fleet)

    def decide(self, tasks_in_order: Iterable[PendingTask], now: float) -> list[tuple[PendingTask, HandOutRequest]]:
        """Plan `tasks_in_order` onto the fleet as it is now; the hand-outs to make, in order.
        Caller holds `lock`."""
        shared = self.shared
        settings = shared.settings
        tasks = {}

        def remembered(stream: Iterable[PendingTask]) -> Iterable[PendingTask]:
            for task in stream:
                tasks[task.task_id] = task
                yield task

        decision = plan(remembered(tasks_in_order), shared.worker_views(now),
                        ctx=shared.placement_context(now), rate_tokens=self._rate_tokens(now),
                        verdicts=self._verdicts)
        if decision.more:
            shared.kick.set()  # budget reached: let other coroutines run, then place the rest
        shared.rate_limited = {t: r for t, r in decision.waiting.items() if r.startswith("rate limited")}
        if shared.rate_limited:
            asyncio.get_running_loop().call_later(RATE_LIMIT_RECHECK_SECONDS, shared.kick.set)
        chosen = []
        for assignment in decision.assignments:
            task = tasks[assignment.task_id]
            if settings.rate_limits:
                self._spend_token(task.task_name)
            chosen.append((task, self._request(task, assignment)))
        return chosen

    def _request(self, task: PendingTask, assignment: Assignment) -> HandOutRequest:
        soft, hard = task.time_limits or (0.0, 0.0)
        attempt = task.attempt + 1
        envelope = self.shared.messages.envelope(HandOut(
            task.task_id, attempt, assignment.worker_id, task.task_name, task.by_reference,
            soft_time_limit=soft or None, hard_time_limit=hard or None, serializer=task.serializer,
        ))
        reason = f"placed on {assignment.reason}; {task.class_reason}".rstrip("; ")
        return HandOutRequest(task.task_id, assignment.worker_id, attempt, task.by_reference,
                              assignment.gpu_index, assignment.served_queue, reason, envelope)

    def take_round(self, now: float) -> list[tuple[PendingTask, HandOutRequest]]:
        """Plan a round over the pending index and take its tasks out of it (they go back with
        `put_back` if the hand-out cannot be made). Caller holds `lock`."""
        shared = self.shared
        pending = shared.pending
        # Only queues that are not paused and hold pending work: a backlog that is all paused
        # (an intake while consumers are held back) costs no round at all.
        queues = [q.name for q in shared.settings.queues if q.name not in shared.paused and pending.depth(q.name)]
        if not queues or not self.has_free_slot():
            return []
        shared.metrics.placement_rounds.inc()
        chosen = self.decide(pending.in_order(queues, shared.settings.aging, now), now)
        for task, _request in chosen:
            shared.pending.remove(task.task_id)
        return chosen

    def put_back(self, chosen: Sequence[tuple[PendingTask, HandOutRequest]]) -> None:
        """A round whose script may not have run: its tasks wait again, and a hand-out the store
        then refuses is re-read (see `follow`)."""
        for task, _request in chosen:
            self.shared.pending.add(task)

    async def round(self) -> int:
        """One placement round: plan, then hand out in one script. Returns hand-outs made.
        Caller holds `lock`."""
        shared = self.shared
        now = shared.clock()
        chosen = self.take_round(now)
        if not chosen:
            return 0
        crashpoints.reached("dispatch:before")
        try:
            handed = await shared.state.tasks.dispatch([request for _task, request in chosen], now)
        except BaseException:
            self.put_back(chosen)
            raise
        crashpoints.reached("dispatch:after")
        return await self.follow(chosen, handed, now)

    async def follow(self, chosen: Sequence[tuple[PendingTask, HandOutRequest]], handed: Sequence[bool],
                     now: float) -> int:
        """Memory follows the hand-outs the store made (and re-reads the ones it refused)."""
        shared = self.shared
        made: list[str] = []
        refused: list[str] = []
        for (task, request), ok in zip(chosen, handed, strict=True):
            if not ok:
                refused.append(task.task_id)
                continue
            worker = shared.fleet.get(request.worker_id)
            if worker is None or worker.lost:
                # Lost while we were handing out: move it straight back.
                back = await shared.state.tasks.requeue(task.task_id, request.worker_id, "re-queued: worker lost")
                if back is not None:
                    shared.back_to_pending(back)
                continue
            worker.in_flight[task.task_id] = InFlight(
                task.task_id, request.attempt, task.queue, request.gpu_index,
                task.gpu_memory_mb if request.gpu_index is not None else 0, request.served_queue,
            )
            shared.metrics.of_queue(task.queue).to_dispatch.observe(max(0.0, now - task.submitted_at))
            made.append(task.task_id)
        if refused:
            await self._resync(refused)
        crashpoints.reached("handout:followed")
        await shared.notify_watchers(made)
        return len(made)

    async def _resync(self, task_ids: list[str]) -> None:
        """Tasks the store would not hand out: believe Redis (pending at another attempt, or
        already in flight after a round whose reply was lost)."""
        shared = self.shared
        for record in await shared.state.tasks.load(task_ids):
            if record.state is TaskState.PENDING:
                shared.pending.add(shared.pending_task(record))
                shared.kick.set()
            elif record.state in IN_FLIGHT_STATES:
                worker = shared.fleet.get(record.worker_id)
                if worker is not None and not worker.lost:
                    worker.in_flight[record.task_id] = in_flight_of(record)
        log.info("re-read %d task(s) whose hand-out the store refused", len(task_ids))
