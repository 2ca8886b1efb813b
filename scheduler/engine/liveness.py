"""Liveness: declare a worker lost when its heartbeats stop or its stream stays down past the
grace period, and move its dispatched and running work back to pending under a new attempt;
and take back a hand-out that does not start in time on a worker that looks alive.

A running attempt can also end on its worker without its outcome ever reaching the scheduler
(the report lost in a Redis failover): agents list the attempts they run in every heartbeat, and
one known to run that they leave out for `unreported_running_seconds` goes back to pending.

A worker can be alive to every check (its agent heartbeats) and still never start what it is
handed: a frozen or wedged Celery worker, one that consumes another broker. So each tick also
enforces the start deadline: an attempt still `dispatched` `start_deadline_seconds` after a slot
was free for it goes back to pending under a new attempt (the old one fenced off, as for a lost
worker), and after `start_deadline_returns` returns the next miss ends the task failed. Starts
are recorded by the workers' claims in Redis, so a late-looking attempt is read from there
before anything is taken back, and the taking back itself is refused if the claim won the race.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from scheduler import crashpoints
from scheduler.core.model import TaskState
from scheduler.core.retry import NOT_STARTED
from scheduler.engine.shared import Shared
from scheduler.fleet import InFlight, Worker
from scheduler.state.interface import Reclaim
from scheduler.state.records import TaskRecord

log = logging.getLogger("switchyard.scheduler.engine.liveness")

LOST_WORKER_RETENTION_SECONDS = 600.0
"""A lost worker stays listed (as lost) this long, then is forgotten."""

START_DEADLINE_CHECK_SECONDS = 1.0
"""At most how often hand-outs are looked over for the start deadline (every tick when the
deadline is short: a quarter of it)."""


class Liveness:
    """Watches heartbeats, reconnection grace, start deadlines and running attempts whose worker no
    longer lists them; owns declaring a worker lost."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._next_deadline_check = float("-inf")

    async def run(self) -> None:
        settings = self.shared.settings
        tick = min(0.25, settings.heartbeat_interval_seconds / 2)
        while True:
            await asyncio.sleep(tick)
            await self.check()

    async def check(self) -> None:
        """One pass over the fleet."""
        shared = self.shared
        settings = shared.settings
        now = shared.monotonic()
        for worker in shared.fleet:
            if worker.lost:
                if now - (worker.lost_at or now) > LOST_WORKER_RETENTION_SECONDS:
                    shared.fleet.remove(worker.worker_id)
                continue
            if worker.connected and now - worker.last_heartbeat > settings.heartbeat_timeout_seconds:
                await self.declare_lost(worker, f"no heartbeat for {settings.heartbeat_timeout_seconds:g}s")
            elif (
                not worker.connected
                and worker.disconnected_at is not None
                and now - worker.disconnected_at > settings.lost_grace_seconds
            ):
                await self.declare_lost(worker, f"not reconnected within {settings.lost_grace_seconds:g}s")
        if now >= self._next_deadline_check:
            self._next_deadline_check = now + min(START_DEADLINE_CHECK_SECONDS, settings.start_deadline_seconds / 4,
                                                  settings.unreported_running_seconds / 4)
            await self.check_start_deadlines(now)
            await self.check_unreported()

    async def declare_lost(self, worker: Worker, reason: str) -> None:
        """Mark the worker lost, re-queue its attempts (fenced) and purge its Celery queue."""
        shared = self.shared
        worker.lost = True
        worker.lost_reason, worker.lost_since = reason, shared.clock()
        worker.connected = False
        moved = list(worker.in_flight.values())
        worker.in_flight.clear()
        worker.outbox.put_nowait(None)  # ends the stream writer, if any
        shared.metrics.workers_lost.inc()
        log.warning("worker %s lost: %s; moving %d task(s)", worker.worker_id, reason, len(moved))
        crashpoints.reached("lost:marked")
        for item in moved:
            record = await shared.state.tasks.requeue(
                item.task_id, worker.worker_id, f"re-queued: worker {worker.worker_id} was lost ({reason})"
            )
            crashpoints.reached("lost:requeued")
            if record is not None:
                shared.metrics.requeued.inc()
                shared.back_to_pending(record)
        crashpoints.reached("lost:purge:before")
        await shared.state.controls.purge_worker_queue(worker.worker_id)
        crashpoints.reached("lost:purge:after")
        worker.lost_at = shared.monotonic()
        shared.kick.set()

    async def check_start_deadlines(self, now: float) -> None:
        """Take back the hand-outs that did not start within the deadline though a slot was free.

        An attempt's deadline counts from when this loop first saw it, or last saw every slot of
        its worker busy with started work (a hand-out made ahead of a free slot, with
        `dispatch_prefetch`, waits its turn without being late). Which attempts started is
        learnt from Redis, only for those that look late.
        """
        deadline = self.shared.settings.start_deadline_seconds
        late: list[tuple[Worker, InFlight]] = []
        for worker in self.shared.fleet:
            if worker.lost:
                continue
            unstarted = [item for item in worker.in_flight.values() if not item.started]
            if not unstarted:
                continue
            busy = len(worker.in_flight) - len(unstarted) >= worker.slots
            for item in unstarted:
                if busy or item.waiting_since is None:
                    item.waiting_since = now
                elif now - item.waiting_since >= deadline:
                    late.append((worker, item))
        if late:
            await self._take_back_late(late, now)

    async def _take_back_late(self, late: list[tuple[Worker, InFlight]], now: float) -> None:
        shared = self.shared
        records = {r.task_id: r for r in await shared.state.tasks.load([item.task_id for _w, item in late])}
        overdue: dict[str, list[tuple[InFlight, TaskRecord]]] = defaultdict(list)
        workers: dict[str, Worker] = {}
        for worker, item in late:
            record = records.get(item.task_id)
            if worker.in_flight.get(item.task_id) is not item:
                continue  # ended or moved on while Redis was read
            if record is not None and (record.worker_id, record.attempt) == (worker.worker_id, item.attempt):
                if record.state is TaskState.RUNNING:
                    # Known to run from now: heartbeats that left it out before its start do not count.
                    item.started, item.unreported_since = True, None
                    continue
                if record.state is TaskState.DISPATCHED:
                    overdue[worker.worker_id].append((item, record))
                    workers[worker.worker_id] = worker
                    continue
            # Ended, or moved on, and its report not applied yet: look again a deadline later.
            item.waiting_since = now
        for worker_id, items in overdue.items():
            worker = workers[worker_id]
            # Only as many as the worker had free slots for were due to start (oldest first).
            free = worker.slots - sum(1 for item in worker.in_flight.values() if item.started)
            items.sort(key=lambda pair: (pair[0].waiting_since or now, pair[1].dispatched_at))
            for item, record in items[:max(0, free)]:
                await self._take_back(worker, item, record)
            for item, _record in items[max(0, free):]:
                item.waiting_since = now

    async def _take_back(self, worker: Worker, item: InFlight, record: TaskRecord) -> None:
        """Return one late hand-out to pending, or end its task failed when its returns are used up."""
        shared = self.shared
        settings = shared.settings
        deadline, allowed = settings.start_deadline_seconds, settings.start_deadline_returns
        misses = record.start_returns + 1
        if record.start_returns >= allowed:
            reason = (f"not started within {deadline:g}s in {misses} hand-out(s), the last on worker "
                      f"{worker.worker_id}")
            reclaim = Reclaim(item.task_id, worker.worker_id, item.attempt, reason, shared.clock(), NOT_STARTED)
        else:
            reason = (f"re-queued: not started within {deadline:g}s on worker {worker.worker_id} "
                      f"(return {misses} of {allowed})")
            reclaim = Reclaim(item.task_id, worker.worker_id, item.attempt, reason)
        back = await shared.state.tasks.reclaim_unstarted(reclaim, settings.result_ttl_seconds)
        if back is None:
            # Its claim won the race (or it moved on): the next look finds it running.
            item.waiting_since = shared.monotonic()
            return
        if worker.in_flight.get(item.task_id) is item:
            del worker.in_flight[item.task_id]
        self._count_miss(worker, item.task_id)
        if back.state is TaskState.PENDING:
            log.warning("task %s (%s) not started within %gs on worker %s: back to pending, return %d of %d",
                        back.task_id, back.name, deadline, worker.worker_id, misses, allowed)
            shared.metrics.requeued.inc()
            shared.back_to_pending(back)
            return
        log.warning("task %s (%s) not started within %gs on worker %s: failed after %d hand-out(s) missed "
                    "the deadline", back.task_id, back.name, deadline, worker.worker_id, misses)
        shared.stats.failed_unstarted(back.queue)
        shared.outcomes[back.queue].append(True)
        shared.metrics.finished.labels(back.queue, back.state.value).inc()
        shared.watchers.notify(back)
        shared.kick.set()

    async def check_unreported(self) -> None:
        """Take back the running attempts whose outcome never arrived.

        Each heartbeat lists the attempts its worker executes (`Agents.heartbeat` dates each one it
        leaves out). An attempt left out of every heartbeat for `unreported_running_seconds` is
        looked up: one still dispatched waits its turn (the start deadline is for that); one
        running is from then on known to run, and counted again from scratch. One known to run and
        then left out for as long ended on the worker without its outcome reaching the scheduler:
        the report was lost (a Redis failover within the replication lag) and without this it would
        stay running for ever. It goes back to pending under a new attempt (at least once: it may
        have finished); the store refuses when its outcome arrived after all, and a late one is
        then stale.
        """
        shared = self.shared
        grace = shared.settings.unreported_running_seconds
        suspects: list[tuple[Worker, InFlight]] = []
        for worker in shared.fleet:
            if worker.lost or not worker.connected:
                continue
            for item in worker.in_flight.values():
                since = item.unreported_since
                if since is not None and worker.last_heartbeat - since >= grace:
                    suspects.append((worker, item))
        if not suspects:
            return
        records = {r.task_id: r for r in await shared.state.tasks.load([item.task_id for _w, item in suspects])}
        for worker, item in suspects:
            record = records.get(item.task_id)
            if worker.in_flight.get(item.task_id) is not item:
                continue  # ended or moved on while Redis was read
            running = (record is not None and record.state is TaskState.RUNNING
                       and (record.worker_id, record.attempt) == (worker.worker_id, item.attempt))
            if not running or not item.started:
                # Not started yet, or its outcome is on its way; or it runs but was not known to
                # (its heartbeats so far may predate its start): count again from now.
                item.started = item.started or running
                item.unreported_since = None
                continue
            reason = (f"re-queued: attempt {item.attempt} ended on worker {worker.worker_id} "
                      f"(not among its running tasks for {grace:g}s) and its outcome never arrived")
            back = await shared.state.tasks.reclaim_unreported(item.task_id, worker.worker_id, item.attempt, reason)
            if back is None:
                item.unreported_since = None
                continue
            if worker.in_flight.get(item.task_id) is item:
                del worker.in_flight[item.task_id]
            log.warning("task %s (%s) attempt %d: worker %s has not listed it as running for %gs and its outcome "
                        "never arrived (lost in a Redis failover?); back to pending to run again",
                        back.task_id, back.name, item.attempt, worker.worker_id, grace)
            shared.metrics.requeued.inc()
            shared.back_to_pending(back)

    def _count_miss(self, worker: Worker, task_id: str) -> None:
        """A missed start counts as a failure on the worker: placement prefers others, and a
        worker that keeps missing is quarantined like one that keeps failing tasks."""
        shared = self.shared
        policy = shared.settings.placement
        if worker.record_failure(shared.clock(), policy.failure_window_seconds, policy.quarantine_failures,
                                 policy.quarantine_seconds, task_id):
            log.warning("worker %s quarantined for %gs after %d failures within %gs (hand-outs it did not start)",
                        worker.worker_id, policy.quarantine_seconds, policy.quarantine_failures,
                        policy.failure_window_seconds)
            asyncio.get_running_loop().call_later(policy.quarantine_seconds, shared.kick.set)
