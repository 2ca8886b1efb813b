"""Admission: validate, classify and durably accept submissions (one task or an atomic batch).

Group commit: submissions that arrive while a commit is in flight wait and go together in the
next one (one script call, each submission still all-or-none on its own), so the commit rate
follows the load: one at a time when idle, hundreds per round trip under pressure.

Linger: gRPC hands the scheduler its calls one at a time, each costing more of the scheduler's
one core than a commit's round trip takes, so under a flood of SubmitTask calls a commit would
still carry about one call (and every call pay a whole script call, send and reply). So a commit
waits, at most `commit_linger_seconds`, until as many calls are waiting as were outstanding at
once lately (the most of the last `CONCURRENCY_WINDOW` commits): callers that are sending, not
waiting on an answer. A lone caller (one call outstanding at a time) never waits; two callers
wait only for each other; 32 calls in flight go up to 32 to a commit; and while submissions
arrive fewer than LINGER_MIN_ARRIVALS per linger on average (under 800/s with the default 5 ms),
no commit waits at all (an idle scheduler answers at once, whatever came before). The wait ends
on the arrival it waits for, or at the bound; nothing polls.

Sync match: when nothing is pending at all and no placement decision is in flight, the fresh
tasks are placed at once and handed out in the same round trip as their commit. With no
backlog there is nothing older to overtake, so the order stays exact.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator, Sequence

from scheduler import crashpoints
from scheduler.cooperative import YIELD_EVERY, breathe
from scheduler.core.classify import classify
from scheduler.core.model import Classification, PendingTask, TaskState
from scheduler.core.schedulable import KnownWorker, unschedulable_reason
from scheduler.core.validate import (
    SubmitLimits,
    TaskInput,
    batch_error,
    payload_digest,
    validate_input,
)
from scheduler.dispatch import msgpack_celery_body
from scheduler.engine.placement import Placement
from scheduler.engine.shared import Shared
from scheduler.engine.views import Accepted
from scheduler.errors import AlreadyExists, FailedPrecondition, InvalidArgument, SchedulerError
from scheduler.ids import random_hex
from scheduler.state.interface import IdempotencyConflict, NewTask, SubmitOutcome
from scheduler.state.records import TaskRecord

REGISTRATIONS_REFRESH_SECONDS = 30.0
"""Stored worker registrations are re-read at most this often for the unschedulable check (the
live fleet is read at every check; a registration only adds workers not connected now)."""

UNSCHEDULABLE = "no worker could ever run this task"
"""How a refusal of a task no known worker could run starts (after the item's index)."""

CONCURRENCY_WINDOW = 16
"""Commits over which the most submissions outstanding at once is remembered (what a commit
lingers for): a burst that ended stops making commits wait after this many."""

LINGER_TASKS_MAX = 256
"""A commit that already carries this many tasks does not linger."""

LINGER_MIN_ARRIVALS = 4
"""Commits linger only while submissions arrive at least this many per linger on average (with
the default 5 ms: 800 calls/s); below that a linger would add latency and save little."""

GAP_WEIGHT = 0.25
"""Weight of the newest gap between two submissions in their running average."""

IDLE_GAP_SECONDS = 1.0
"""A longer gap between two submissions counts as this long (as does the first submission's)."""

CLASSIFICATIONS_KEPT = 1024
"""Classifications remembered across calls, by everything classification reads; the memory is
dropped whole when full, so its size stays bounded whatever the submissions look like."""


class _KnownWorkers:
    """Every worker the scheduler knows, afresh at each iteration: the live fleet (workers that
    connected since this scheduler started, with their current labels and GPUs), then the stored
    registrations of the others."""

    def __init__(self, shared: Shared, registrations: Sequence[KnownWorker]) -> None:
        self.shared = shared
        self.registrations = registrations

    def __iter__(self) -> Iterator[KnownWorker]:
        fleet = self.shared.fleet
        for worker in fleet:
            if worker.last_heartbeat_wall:  # connected since this scheduler started: fresh facts
                yield KnownWorker(worker.worker_id, worker.worker_type,
                                  tuple(gpu.memory_total_mb for gpu in worker.gpus), worker.labels)
        for registration in self.registrations:
            live = fleet.get(registration.worker_id)
            if live is None or not live.last_heartbeat_wall:
                yield registration


def _judged_against_workers(item: TaskInput) -> bool:
    """Whether the unschedulable check needs the known workers for `item` (only a label or a
    GPU-memory request is judged against them)."""
    return bool(item.submission.labels or item.submission.gpu_memory_mb)


def submit_limits(shared: Shared) -> SubmitLimits:
    """What validation checks submissions against, from the settings."""
    settings = shared.settings
    return SubmitLimits(
        max_payload_bytes=settings.max_payload_bytes,
        queue_names=tuple(q.name for q in settings.queues),
        retry_policy_names=tuple(sorted(settings.retry_policies)),
    )


class _Submission:
    """One SubmitTask or SubmitBatch call waiting for its commit."""

    __slots__ = ("decisions", "done", "many", "new_tasks")

    def __init__(self, new_tasks: list[NewTask], decisions: list[Classification], many: bool) -> None:
        self.new_tasks = new_tasks
        self.decisions = decisions
        self.many = many
        self.done: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Admission:
    """Turns submissions into pending (or at once dispatched) tasks: all of a call, or none."""

    def __init__(self, shared: Shared, placement: Placement) -> None:
        self.shared = shared
        self.placement = placement
        self.rules = shared.settings.classification_rules()
        self.limits = submit_limits(shared)
        self._waiting: list[_Submission] = []
        self._waiting_tasks = 0
        self._committing = 0
        """Submissions in the commit in flight."""
        self._outstanding_peak = 0
        """The most submissions outstanding at once (waiting or being committed) since the last
        commit began; the last CONCURRENCY_WINDOW of them are `_recent_peaks`."""
        self._recent_peaks: collections.deque[int] = collections.deque(maxlen=CONCURRENCY_WINDOW)
        self._linger_seconds = shared.settings.commit_linger_seconds
        self._enough: asyncio.Future[None] | None = None
        """Set while a commit lingers: done once `_enough_at` submissions wait."""
        self._enough_at = 0
        self._arrived_at = float("-inf")
        self._mean_gap = IDLE_GAP_SECONDS
        """Running average of the seconds between submissions (GAP_WEIGHT)."""
        self._committer: asyncio.Task[None] | None = None
        self._registrations: list[KnownWorker] = []
        self._registrations_due = float("-inf")
        self._decisions: dict[tuple[object, ...], Classification] = {}

    async def submit(self, items: Sequence[TaskInput]) -> list[Accepted]:
        """Validate every item, then accept all atomically (or none)."""
        if not items:
            raise InvalidArgument("no tasks given")
        many = len(items) > 1
        problems: list[SchedulerError] = []
        decisions: list[Classification] = []
        valid_payloads: set[tuple[str, str]] = set()
        for index, item in enumerate(items):
            if index and not index % YIELD_EVERY:
                await breathe()
            try:
                validate_input(item, self.limits, index if many else None, valid_payloads)
            except SchedulerError as exc:
                problems.append(exc)
                continue
            decisions.append(self._classify(item, len(items) if many else 0))
        if problems:
            raise batch_error(problems)
        now = self.shared.clock()
        await self._refuse_unschedulable(items, decisions, many)
        new_tasks: list[NewTask] = []
        for index, (item, decision) in enumerate(zip(items, decisions, strict=True)):
            if index and not index % YIELD_EVERY:
                await breathe()
            try:
                new_tasks.append(self._new_task(item, decision, now, index if many else None))
            except SchedulerError as exc:
                problems.append(exc)
        if problems:
            raise batch_error(problems)
        submission = _Submission(new_tasks, decisions, many)
        waiting = self._waiting
        waiting.append(submission)
        self._waiting_tasks += len(new_tasks)
        arrived_at = asyncio.get_running_loop().time()
        gap, self._arrived_at = min(arrived_at - self._arrived_at, IDLE_GAP_SECONDS), arrived_at
        self._mean_gap += GAP_WEIGHT * (gap - self._mean_gap)
        outstanding = len(waiting) + self._committing
        if outstanding > self._outstanding_peak:
            self._outstanding_peak = outstanding
        if self._enough is not None and self._enough_waiting(self._enough_at):
            _set_done(self._enough)
        if self._committer is None or self._committer.done():
            # Its own task, so a caller that goes away mid-commit cannot strand the others.
            self._committer = asyncio.create_task(self._commit_waiting())
        return await submission.done

    async def _commit_waiting(self) -> None:
        while self._waiting:
            await self._linger()
            batch, self._waiting, self._waiting_tasks = self._waiting, [], 0
            self._recent_peaks.append(self._outstanding_peak)
            self._outstanding_peak = self._committing = len(batch)
            try:
                await self._commit(batch)
            except BaseException as exc:
                for submission in batch:
                    if not submission.done.done():
                        submission.done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._committing = 0

    async def _linger(self) -> None:
        """Wait, at most `commit_linger_seconds`, until as many submissions wait as were lately
        outstanding at once (see the module's docstring); at once when they already do, or
        when submissions come fewer than LINGER_MIN_ARRIVALS per linger on average (a linger of 0
        included: lingering is off)."""
        # The peak since the last commit began counts too: its callers, just answered, come back.
        expected = max(self._outstanding_peak, max(self._recent_peaks, default=1))
        if self._enough_waiting(expected) or self._mean_gap * LINGER_MIN_ARRIVALS >= self._linger_seconds:
            return
        loop = asyncio.get_running_loop()
        enough = self._enough = loop.create_future()
        self._enough_at = expected
        timer = loop.call_later(self._linger_seconds, _set_done, enough)
        try:
            await enough
        finally:
            timer.cancel()
            self._enough = None

    def _enough_waiting(self, expected: int) -> bool:
        """Whether a commit need wait for nobody more: `expected` submissions, or a big commit."""
        return len(self._waiting) >= expected or self._waiting_tasks >= LINGER_TASKS_MAX

    async def _commit(self, batch: list[_Submission]) -> None:
        shared = self.shared
        now = shared.clock()
        lock = self.placement.lock
        sync = not lock.locked() and not len(shared.pending)
        if sync:
            await lock.acquire()
        try:
            chosen = []
            if sync and self.placement.has_free_slot():
                # A task with an idempotency key may turn out to be a duplicate: its fresh id is then
                # never written, so the store refuses its hand-out and the re-read finds nothing.
                fresh = [shared.pending_task(n.record, seq=i) for i, n in enumerate(
                    n for s in batch for n in s.new_tasks if n.record.queue not in shared.paused)]
                # Highest priority first, then first come: the order every placement round uses.
                fresh.sort(key=lambda task: task.order_key)
                chosen = self.placement.decide(fresh, now)
            crashpoints.reached("submit:before")
            if chosen:
                crashpoints.reached("dispatch:before")
            results, handed = await shared.state.tasks.submit(
                [s.new_tasks for s in batch], int(shared.settings.idempotency_ttl_seconds),
                hand_outs=[request for _task, request in chosen], now=now,
            )
            crashpoints.reached("submit:after")
            if chosen:
                crashpoints.reached("dispatch:after")
            placed = {task.task_id for (task, _r), ok in zip(chosen, handed, strict=True) if ok}
            await self._answer(batch, results, placed)
            crashpoints.reached("submit:answered")
            if chosen:
                await self.placement.follow(chosen, handed, now)
        finally:
            if sync:
                lock.release()

    async def _answer(self, batch: list[_Submission], results: list[list[SubmitOutcome] | IdempotencyConflict],
                      placed: set[str]) -> None:
        """Each submission's answer (a conflict refuses only its own), after the pending index,
        the counters and a placement kick have taken in the whole commit."""
        shared = self.shared
        queued = False
        per_queue: dict[str, int] = {}
        done = 0
        answers: list[tuple[_Submission, list[Accepted]]] = []
        for submission, result in zip(batch, results, strict=True):
            if isinstance(result, IdempotencyConflict):
                where = f"tasks[{result.index}]: " if submission.many else ""
                owner = f" (task {result.existing_task_id})" if result.existing_task_id else ""
                submission.done.set_exception(AlreadyExists(
                    f"{where}idempotency_key is already used{owner} with a different task name or payload; "
                    "use a new key for a different task"
                ))
                continue
            accepted: list[Accepted] = []
            for new, decision, outcome in zip(submission.new_tasks, submission.decisions, result, strict=True):
                done += 1
                if not done % YIELD_EVERY:
                    await breathe()
                if outcome.deduplicated:
                    accepted.append(await self._original(outcome.task_id, decision))
                    continue
                if new.record.task_id not in placed:
                    # Built from what was just written: no read-back round trip on the hot path.
                    shared.pending.add(self._pending(new, outcome))
                    # A paused queue's tasks wait for its resume, which kicks placement itself.
                    queued = queued or decision.queue not in shared.paused
                accepted.append(Accepted(new.record.task_id, decision.queue, decision.priority,
                                         decision.task_class, False, decision.reason))
                per_queue[decision.queue] = per_queue.get(decision.queue, 0) + 1
            answers.append((submission, accepted))
        for queue, count in per_queue.items():
            shared.metrics.submitted.labels(queue).inc(count)
            shared.stats.submitted(queue, count)
        if queued:
            shared.kick.set()
        elif per_queue:
            shared.watchers.changes.bump()  # what a kick also tells readers of every task
        for submission, accepted in answers:  # counted before any caller hears back
            if not submission.done.done():
                submission.done.set_result(accepted)

    async def _refuse_unschedulable(self, items: Sequence[TaskInput], decisions: Sequence[Classification],
                                    many: bool) -> None:
        """Raise FailedPrecondition naming every item no known worker could ever run (unless it
        allows that); see scheduler/core/schedulable.py."""
        problems: list[SchedulerError] = []
        workers: _KnownWorkers | None = None
        for index, (item, decision) in enumerate(zip(items, decisions, strict=True)):
            if item.allow_unschedulable:
                continue
            if workers is None and _judged_against_workers(item):
                workers = await self._known_workers()
            reason = unschedulable_reason(item.submission, decision, self.rules, workers or ())
            if reason is not None:
                where = f"tasks[{index}]: " if many else ""
                problems.append(FailedPrecondition(f"{where}{UNSCHEDULABLE}: {reason}"))
        if problems:
            raise batch_error(problems)

    async def refusal(self, item: TaskInput, decision: Classification) -> str | None:
        """Why submitting `item` would be refused as unschedulable, or None: the check above for
        one item, for ExplainPlacement's dry run."""
        if item.allow_unschedulable:
            return None
        workers = await self._known_workers() if _judged_against_workers(item) else ()
        return unschedulable_reason(item.submission, decision, self.rules, workers)

    async def _known_workers(self) -> _KnownWorkers:
        """Every worker the scheduler knows (the stored registrations re-read now and then)."""
        shared = self.shared
        now = shared.monotonic()
        if now >= self._registrations_due:
            self._registrations = [
                KnownWorker(record.worker_id, record.worker_type, record.gpu_memory_mb, dict(record.labels))
                for record in (await shared.state.controls.known_workers()).values()
            ]
            self._registrations_due = now + REGISTRATIONS_REFRESH_SECONDS
        return _KnownWorkers(shared, self._registrations)

    def _pending(self, new: NewTask, outcome: SubmitOutcome) -> PendingTask:
        return self.shared.pending_task(new.record, seq=outcome.seq)

    def _classify(self, item: TaskInput, batch_size: int) -> Classification:
        """The classification of `item`, remembered: a pipeline submits the same few kinds of task
        over and over, and the rules are fixed for the engine's life (`CLASSIFICATIONS_KEPT`)."""
        sub = item.submission
        key = (sub.task_name, sub.content_type, sub.gpu, sub.gpu_memory_mb, sub.priority, sub.queue,
               tuple(sub.labels.items()), sub.user_initiated, sub.batch_size, sub.retry_policy,
               tuple(sub.preferred_labels.items()), batch_size)
        decisions = self._decisions
        decision = decisions.get(key)
        if decision is None:
            if len(decisions) >= CLASSIFICATIONS_KEPT:
                decisions.clear()  # many distinct kinds (generated names, say): start afresh
            decision = decisions[key] = classify(sub, self.rules, batch_size)
        return decision

    def _new_task(self, item: TaskInput, decision: Classification, now: float, index: int | None) -> NewTask:
        sub = item.submission
        settings = self.shared.settings
        spec = settings.queue(decision.queue)
        args_json, kwargs_json = item.args_json or "[]", item.kwargs_json or "{}"
        payload_bytes = len(args_json) + len(kwargs_json)
        serializer = item.serializer or (spec.serializer if spec else "json")
        celery_body = ""
        if serializer == "msgpack" and payload_bytes <= settings.inline_payload_bytes:
            # Built once here, where the arguments are parsed anyway; dispatch.lua only splices it
            # in (scheduler/dispatch.py says why). By-reference msgpack tasks need none.
            try:
                celery_body = msgpack_celery_body(args_json, kwargs_json)
            except ValueError as exc:
                where = f"tasks[{index}]: " if index is not None else ""
                raise InvalidArgument(f"{where}{exc}") from None
        record = TaskRecord(
            task_id=random_hex(),  # 128 random bits, as uuid4 (which costs 4x as much)
            name=sub.task_name,
            queue=decision.queue,
            state=TaskState.PENDING,
            priority=decision.priority,
            task_class=decision.task_class,
            gpu=decision.gpu,
            gpu_memory_mb=sub.gpu_memory_mb,
            labels=dict(sub.labels),
            preferred_labels=dict(decision.preferred_labels),
            content_type=sub.content_type,
            user_initiated=sub.user_initiated,
            submitted_at=now,
            reason=decision.reason,
            class_reason=decision.reason,
            payload_bytes=payload_bytes,
            # Only an idempotency key ever compares payloads (a task without one is never found by one).
            payload_digest=payload_digest(item) if item.idempotency_key else "",
            idempotency_key=item.idempotency_key,
            retry_policy=decision.retry_policy,
            soft_time_limit=item.soft_time_limit_seconds or (spec.soft_time_limit_seconds if spec else 0.0),
            hard_time_limit=item.hard_time_limit_seconds or (spec.hard_time_limit_seconds if spec else 0.0),
            serializer=serializer,
            body_ready=bool(celery_body),
        )
        return NewTask(record, args_json, kwargs_json, celery_body)

    async def _original(self, task_id: str, decision: Classification) -> Accepted:
        """The answer for a deduplicated submission: the task the key already names."""
        record = await self.shared.state.tasks.get(task_id)
        if record is None:
            return Accepted(task_id, decision.queue, decision.priority, decision.task_class, True, decision.reason)
        return Accepted(task_id, record.queue, record.priority, record.task_class, True, record.class_reason)
