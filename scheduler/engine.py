"""The engine: ties core decisions to the store, the fleet and the dispatcher.

One asyncio task runs each loop: placement (late binding: a task is published only when a
worker has a free slot), lifecycle reports (the durable stream from workers), liveness
(declaring workers lost and moving their work), and metrics. All state changes go through
the store's atomic scripts first; memory (pending index, fleet ledgers) follows.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import heapq
import json
import logging
import random
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis.exceptions import RedisError

from scheduler.config import Settings
from scheduler.core.classify import classify
from scheduler.core.model import (
    IN_FLIGHT_STATES,
    MAX_PRIORITY,
    TERMINAL_STATES,
    GpuNeed,
    PendingTask,
    QueueSpec,
    Submission,
    TaskClass,
    TaskState,
    WorkerType,
)
from scheduler.core.placement import PlacementContext, Verdict, evaluate, explain, plan, wait_reason
from scheduler.core.policy import AgingPolicy, Bucket, RetryAction, decide_retry, refill
from scheduler.dispatch import Dispatcher, HandOut, worker_queue_name
from scheduler.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    SchedulerError,
)
from scheduler.fleet import Fleet, Gpu, InFlight, Worker
from scheduler.metrics import Metrics
from scheduler.store import FailureOutcome, IdempotencyConflict, LifecycleEvent, NewTask, Store

log = logging.getLogger(__name__)

_TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
_WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LOST_WORKER_RETENTION_SECONDS = 600.0
ERROR_RATE_WINDOW = 100
"""Finished tasks per queue over which the error rate is computed."""


@dataclass(frozen=True)
class TaskInput:
    """One submission as the API layer hands it over (already plain data, not yet validated)."""

    submission: Submission
    args_json: str
    kwargs_json: str
    idempotency_key: str = ""
    soft_time_limit_seconds: float = 0.0
    hard_time_limit_seconds: float = 0.0


@dataclass(frozen=True)
class Accepted:
    """The scheduler's answer to one submission."""

    task_id: str
    queue: str
    priority: int
    task_class: TaskClass
    deduplicated: bool
    reason: str


@dataclass(frozen=True)
class WorkerRegistration:
    """An agent's hello, as plain data."""

    worker_id: str
    worker_type: WorkerType | None
    slots: int
    labels: Mapping[str, str]
    gpus: Sequence[Gpu]
    gpu_simulated: bool
    capabilities: Any = None


@dataclass(frozen=True)
class Welcome:
    session: int
    heartbeat_interval_seconds: float
    state_redis_url: str
    key_prefix: str
    rejoined_after_loss: bool


@dataclass(frozen=True)
class QueueView:
    spec: QueueSpec
    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    paused: bool
    mean_wait_seconds: float
    mean_run_seconds: float
    workers: int
    retrying: int = 0
    dead_lettered: int = 0
    error_rate: float = 0.0
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Explanation:
    """The answer of ExplainPlacement."""

    task_class: TaskClass
    queue: str
    priority: int
    effective_priority: int
    classification_reason: str
    verdicts: list[Verdict]
    chosen: Verdict | None
    summary: str


@dataclass
class _Watchers:
    by_task: dict[str, set[asyncio.Queue[dict[str, str]]]] = field(default_factory=lambda: defaultdict(set))

    def notify(self, task: dict[str, str]) -> None:
        for queue in self.by_task.get(task.get("id", ""), ()):
            queue.put_nowait(task)


def validate_input(item: TaskInput, settings: Settings, index: int | None = None) -> None:
    """Raise InvalidArgument / PayloadTooLarge with a message a person can act on."""
    where = f"tasks[{index}]: " if index is not None else ""
    sub = item.submission
    if not _TASK_NAME.match(sub.task_name):
        raise InvalidArgument(
            f"{where}task_name {sub.task_name!r} is not a Celery task name "
            "(letters, digits, '_', '.', ':', '-'; 1-200 characters)"
        )
    size = len(item.args_json.encode()) + len(item.kwargs_json.encode())
    if size > settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"{where}args_json + kwargs_json is {size} bytes; the limit is {settings.max_payload_bytes} "
            "(SWITCHYARD_MAX_PAYLOAD_BYTES). Store large data elsewhere and pass a reference."
        )
    for name, raw, kind in (("args_json", item.args_json, list), ("kwargs_json", item.kwargs_json, dict)):
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument(f"{where}{name} is not valid JSON: {exc}") from None
        if not isinstance(value, kind):
            wanted = "a JSON array" if kind is list else "a JSON object"
            raise InvalidArgument(f"{where}{name} must be {wanted}, got {type(value).__name__}")
    if not 0 <= sub.priority <= MAX_PRIORITY:
        raise InvalidArgument(f"{where}priority {sub.priority} is outside 0-10 (0 lets the scheduler decide)")
    if sub.queue and sub.queue not in {q.name for q in settings.queues}:
        known = ", ".join(q.name for q in settings.queues)
        raise InvalidArgument(f"{where}queue {sub.queue!r} does not exist; known queues: {known}")
    if sub.gpu_memory_mb > 10_000_000:
        raise InvalidArgument(f"{where}gpu_memory_mb {sub.gpu_memory_mb} is not a plausible amount of MiB")
    if sub.gpu is GpuNeed.NONE and sub.gpu_memory_mb:
        raise InvalidArgument(f"{where}gpu=none contradicts gpu_memory_mb={sub.gpu_memory_mb}")
    if sub.retry_policy and sub.retry_policy not in settings.retry_policies:
        known_policies = ", ".join(sorted(settings.retry_policies))
        raise InvalidArgument(f"{where}retry_policy {sub.retry_policy!r} does not exist; known: {known_policies}")
    if item.soft_time_limit_seconds < 0 or item.hard_time_limit_seconds < 0:
        raise InvalidArgument(f"{where}time limits must not be negative")
    if item.hard_time_limit_seconds and item.soft_time_limit_seconds > item.hard_time_limit_seconds:
        raise InvalidArgument(f"{where}soft_time_limit_seconds must not exceed hard_time_limit_seconds")
    if len(item.idempotency_key) > 256:
        raise InvalidArgument(f"{where}idempotency_key is longer than 256 characters")
    for key, value in sub.labels.items():
        if not key or len(key) > 128 or len(value) > 256:
            raise InvalidArgument(f"{where}label {key!r}: keys must be 1-128 and values 0-256 characters")


def _batch_error(problems: Sequence[SchedulerError], shown: int = 20) -> SchedulerError:
    """One error naming every invalid item (by index); nothing of the batch was accepted."""
    if len(problems) == 1:
        return problems[0]
    kind = InvalidArgument if any(isinstance(p, InvalidArgument) for p in problems) else type(problems[0])
    lines = [str(p) for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"... and {len(problems) - shown} more invalid item(s)")
    return kind(f"{len(problems)} invalid item(s), nothing accepted: " + "; ".join(lines))


def _digest(item: TaskInput) -> str:
    h = hashlib.sha256()
    for part in (item.submission.task_name, item.args_json or "[]", item.kwargs_json or "{}"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def pending_from_record(task: Mapping[str, str]) -> PendingTask:
    """Rebuild the core's view of a pending task from its stored record."""
    labels = json.loads(task.get("labels") or "{}")
    return PendingTask(
        task_id=task["id"],
        queue=task["queue"],
        priority=int(task["priority"]),
        seq=int(task["seq"]),
        task_class=TaskClass(task["class"]),
        gpu=GpuNeed(task["gpu"]),
        gpu_memory_mb=int(task.get("gpu_mem") or 0),
        labels=tuple(sorted(labels.items())),
        submitted_at=float(task.get("submitted_at") or 0),
        class_reason=task.get("class_reason", ""),
        preferred_labels=tuple(sorted(json.loads(task.get("preferred_labels") or "{}").items())),
        task_name=task.get("name", ""),
    )


class PendingIndex:
    """Pending tasks in memory: one list per (queue, base priority), oldest first.

    Within one such list, aging raises the older tasks at least as much as the newer ones, so
    each list is also in effective-priority order; merging the lists by (effective priority,
    submission order) gives the exact global order at any moment.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, PendingTask] = {}
        self._lists: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
        self._depth: dict[str, int] = defaultdict(int)

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def get(self, task_id: str) -> PendingTask | None:
        return self._tasks.get(task_id)

    def add(self, task: PendingTask) -> None:
        if task.task_id in self._tasks:
            self.remove(task.task_id)
        self._tasks[task.task_id] = task
        bisect.insort(self._lists[(task.queue, task.priority)], (task.seq, task.task_id))
        self._depth[task.queue] += 1

    def remove(self, task_id: str) -> None:
        task = self._tasks.pop(task_id, None)
        if task is None:
            return
        entries = self._lists[(task.queue, task.priority)]
        key = (task.seq, task.task_id)
        pos = bisect.bisect_left(entries, key)
        if pos < len(entries) and entries[pos] == key:
            del entries[pos]
        self._depth[task.queue] -= 1

    def depth(self, queue: str) -> int:
        return self._depth.get(queue, 0)

    def tasks(self) -> Iterator[PendingTask]:
        return iter(list(self._tasks.values()))

    def ahead_of(self, task: PendingTask, aging: AgingPolicy, now: float) -> int:
        """How many tasks of the same queue would be placed before this one."""
        mine = (-aging.effective_priority(task.priority, now - task.submitted_at), task.seq)
        count = 0
        for (queue, _level), entries in self._lists.items():
            if queue != task.queue:
                continue
            for seq, task_id in entries:
                other = self._tasks[task_id]
                key = (-aging.effective_priority(other.priority, now - other.submitted_at), seq)
                if key < mine:
                    count += 1
                else:
                    break
        return count

    def in_order(self, queues: Sequence[str], aging: AgingPolicy, now: float) -> Iterator[PendingTask]:
        """Pending tasks of the given queues in one effective-priority order."""
        wanted = set(queues)
        tasks = self._tasks

        def order(entry: tuple[int, str]) -> tuple[int, int]:
            task = tasks[entry[1]]
            return (-aging.effective_priority(task.priority, now - task.submitted_at), entry[0])

        lists = [entries for (queue, _level), entries in self._lists.items() if queue in wanted and entries]
        for _seq, task_id in heapq.merge(*lists, key=order):
            yield tasks[task_id]


class Engine:
    """The scheduler's behaviour; the gRPC servicers call into it."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        dispatcher: Dispatcher,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.monotonic = monotonic
        self.rules = settings.classification_rules()
        self.fleet = Fleet()
        self.pending = PendingIndex()
        self.paused: set[str] = set()
        self._watchers = _Watchers()
        self._kick = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._running = False
        self._buckets: dict[str, Bucket] = {}
        self._outcomes: dict[str, deque[bool]] = defaultdict(lambda: deque(maxlen=ERROR_RATE_WINDOW))
        """Per queue: recent finished tasks, True for a failure (error rate)."""
        self._retrying: dict[str, str] = {}
        """Retrying task id -> queue."""
        self._dead: dict[str, str] = {}
        """Dead-lettered task id -> queue."""
        self._random = random.Random()
        self._rate_limited: dict[str, str] = {}
        """Task id -> reason, for tasks the last placement round held back for a rate limit."""

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load durable state and start the loops."""
        await self.store.ensure_events_group()
        await self._recover()
        self._running = True
        for loop in (self._dispatch_loop, self._events_loop, self._liveness_loop, self._metrics_loop,
                     self._retry_loop, self._dead_letter_loop):
            self._loops.append(asyncio.create_task(self._guard(loop), name=loop.__name__))
        self._kick.set()

    async def stop(self) -> None:
        self._running = False
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()

    async def _guard(self, loop: Callable[[], Any]) -> None:
        """Keep a loop alive through Redis outages: log, back off, go on."""
        delay = 0.2
        while self._running:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("%s: state store unavailable (%s); retrying in %.1fs", loop.__name__, exc, delay)
            except Exception:
                log.exception("%s crashed; restarting it in %.1fs", loop.__name__, delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
            self._kick.set()

    async def _recover(self) -> None:
        """Rebuild memory from Redis after a (re)start: pending tasks, paused queues, ledgers."""
        configured = {q.name for q in self.settings.queues if q.paused}
        stored = await self.store.paused_queues()
        self.paused = stored | configured
        for queue in configured - stored:
            await self.store.set_paused(queue, True)
        for record in await self.store.load_tasks(await self.store.pending_ids()):
            if record.get("state") == TaskState.PENDING:
                self.pending.add(pending_from_record(record))
        retry_ids = [task_id for task_id in await self.store.due_retries(float("inf"), limit=1_000_000)]
        for record in await self.store.load_tasks(retry_ids):
            if record.get("state") == TaskState.RETRYING:
                self._retrying[record["id"]] = record.get("queue", "")
        dead_ids = [task_id for task_id, _at in await self.store.dead_letters()]
        for record in await self.store.load_tasks(dead_ids):
            self._dead[record["id"]] = record.get("queue", "")
        known = await self.store.known_workers()
        republish: list[dict[str, str]] = []
        for worker_id, task_ids in (await self.store.in_flight_ledgers()).items():
            info = known.get(worker_id, {})
            worker = Worker(
                worker_id=worker_id,
                worker_type=WorkerType(info.get("worker_type", "cpu")),
                slots=int(info.get("slots", 1)),
                labels=dict(info.get("labels", {})),
                disconnected_at=self.monotonic(),
            )
            for record in await self.store.load_tasks(task_ids):
                if record.get("state") not in IN_FLIGHT_STATES or record.get("worker") != worker_id:
                    continue
                worker.in_flight[record["id"]] = self._in_flight_from(record)
                if record["state"] == TaskState.DISPATCHED and record.get("published") != "1":
                    republish.append(record)
            self.fleet.add(worker)
        if republish:
            await self._republish(republish)
        log.info(
            "recovered %d pending task(s), %d worker ledger(s), re-published %d hand-out(s)",
            len(self.pending), len(self.fleet), len(republish),
        )

    @staticmethod
    def _in_flight_from(record: Mapping[str, str]) -> InFlight:
        gpu_index = record.get("gpu_index") or ""
        return InFlight(
            task_id=record["id"],
            attempt=int(record.get("attempt") or 0),
            queue=record.get("queue", ""),
            gpu_index=int(gpu_index) if gpu_index else None,
            gpu_memory_mb=int(record.get("gpu_mem") or 0) if gpu_index else 0,
            served_queue=record.get("served_queue", ""),
        )

    async def _republish(self, records: Sequence[dict[str, str]]) -> None:
        """Publish committed hand-outs that were never confirmed published (crash in between)."""
        hand_outs = []
        for record in records:
            args_json: str | None = None
            kwargs_json: str | None = None
            if int(record.get("payload_bytes") or 0) <= self.settings.inline_payload_bytes:
                args_json, kwargs_json = await self.store.get_payload(record["id"])
            hand_outs.append(self._hand_out(record, args_json, kwargs_json))
        await self._publish(hand_outs)

    def _hand_out(self, record: Mapping[str, str], args_json: str | None, kwargs_json: str | None) -> HandOut:
        return HandOut(
            record["id"], int(record["attempt"]), record["worker"], record["name"], args_json, kwargs_json,
            soft_time_limit=float(record.get("soft_limit") or 0) or None,
            hard_time_limit=float(record.get("hard_limit") or 0) or None,
        )

    # --- submissions --------------------------------------------------------------------

    async def submit(self, items: Sequence[TaskInput]) -> list[Accepted]:
        """Validate every item, then accept all atomically (or none)."""
        if not items:
            raise InvalidArgument("no tasks given")
        many = len(items) > 1
        problems: list[SchedulerError] = []
        for index, item in enumerate(items):
            try:
                validate_input(item, self.settings, index if many else None)
            except SchedulerError as exc:
                problems.append(exc)
        if problems:
            raise _batch_error(problems)
        now = self.clock()
        new_tasks: list[NewTask] = []
        decisions = []
        for item in items:
            submission = item.submission
            if many and submission.batch_size < len(items):
                submission = replace(submission, batch_size=len(items))
            decision = classify(submission, self.rules)
            spec = self.settings.queue(decision.queue)
            soft = item.soft_time_limit_seconds or (spec.soft_time_limit_seconds if spec else 0.0)
            hard = item.hard_time_limit_seconds or (spec.hard_time_limit_seconds if spec else 0.0)
            decisions.append(decision)
            sub = item.submission
            args_json, kwargs_json = item.args_json or "[]", item.kwargs_json or "{}"
            task_id = uuid.uuid4().hex
            digest = _digest(item)
            new_tasks.append(NewTask(
                task_id=task_id,
                fields={
                    "id": task_id, "name": sub.task_name, "queue": decision.queue,
                    "priority": str(decision.priority), "class": decision.task_class.value,
                    "gpu": decision.gpu.value, "gpu_mem": str(sub.gpu_memory_mb),
                    "labels": json.dumps(dict(sub.labels), sort_keys=True),
                    "content_type": sub.content_type, "user_initiated": "1" if sub.user_initiated else "0",
                    "submitted_at": repr(now), "reason": decision.reason,
                    "class_reason": decision.reason, "worker": "",
                    "payload_bytes": str(len(args_json) + len(kwargs_json)),
                    "payload_digest": digest, "idem": item.idempotency_key,
                    "retry_policy": decision.retry_policy, "failures": "0",
                    "preferred_labels": json.dumps(dict(decision.preferred_labels), sort_keys=True),
                    "soft_limit": repr(soft) if soft else "", "hard_limit": repr(hard) if hard else "",
                },
                args_json=args_json, kwargs_json=kwargs_json,
                idempotency_key=item.idempotency_key, payload_digest=digest,
            ))
        try:
            outcomes = await self.store.submit(new_tasks, int(self.settings.idempotency_ttl_seconds))
        except IdempotencyConflict as exc:
            where = f"tasks[{exc.index}]: " if many else ""
            owner = f" (task {exc.existing_task_id})" if exc.existing_task_id else ""
            raise AlreadyExists(
                f"{where}idempotency_key is already used{owner} with a different task name or payload; "
                "use a new key for a different task"
            ) from None
        accepted: list[Accepted] = []
        fresh: list[PendingTask] = []
        for new, decision, outcome in zip(new_tasks, decisions, outcomes, strict=True):
            if outcome.deduplicated:
                record = await self.store.get_task(outcome.task_id) or {}
                accepted.append(Accepted(
                    outcome.task_id, record.get("queue", decision.queue),
                    int(record.get("priority") or decision.priority),
                    TaskClass(record.get("class", decision.task_class.value)), True,
                    record.get("class_reason", decision.reason),
                ))
                continue
            # Built from what was just written: no read-back round trip on the hot path.
            fresh.append(pending_from_record({**new.fields, "seq": str(outcome.seq)}))
            accepted.append(Accepted(new.task_id, decision.queue, decision.priority,
                                     decision.task_class, False, decision.reason))
            self.metrics.submitted.labels(decision.queue).inc()
        if fresh:
            for task in fresh:
                self.pending.add(task)
            self._kick.set()
        return accepted

    # --- reads --------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> dict[str, str]:
        record = await self.store.get_task(task_id) if task_id else None
        if record is None:
            raise NotFound(f"task {task_id!r} does not exist (or its result expired)")
        return self._with_wait_reason(record)

    def _context(self, now: float) -> PlacementContext:
        return PlacementContext(
            policy=self.settings.placement,
            prefetch=self.settings.dispatch_prefetch,
            now=now,
            queues={q.name: q for q in self.settings.queues},
            chains=self.settings.fallback_chains,
            rate_limits=self.settings.rate_limits,
        )

    def _views(self, now: float) -> list[Any]:
        return self.fleet.views(now, self.settings.placement.failure_window_seconds)

    def _with_wait_reason(self, record: dict[str, str]) -> dict[str, str]:
        if record.get("state") != TaskState.PENDING:
            return record
        task = self.pending.get(record["id"])
        if task is None:
            return record
        now = self.clock()
        effective = self.settings.aging.effective_priority(task.priority, now - task.submitted_at)
        if task.queue in self.paused:
            reason = f"queue {task.queue} is paused"
        elif task.task_id in self._rate_limited:
            reason = f"waiting: {self._rate_limited[task.task_id]}"
        else:
            reason = wait_reason(task, self._views(now), ctx=self._context(now))
            ahead = self.pending.ahead_of(task, self.settings.aging, now)
            if ahead:
                reason += f" ({ahead} task(s) ahead in {task.queue})"
        if effective > task.priority:
            reason += f"; aged from priority {task.priority} to {effective}"
        return {**record, "reason": reason, "effective_priority": str(effective)}

    async def watch(self, task_id: str) -> AsyncIterator[dict[str, str]]:
        """The task now, then at every change, ending with its terminal state."""
        updates: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._watchers.by_task[task_id].add(updates)
        try:
            current = await self.get_task(task_id)
            yield current
            last = _change_key(current)
            while current.get("state") not in TERMINAL_STATES:
                current = self._with_wait_reason(await updates.get())
                if _change_key(current) == last:
                    continue
                last = _change_key(current)
                yield current
        finally:
            watchers = self._watchers.by_task.get(task_id)
            if watchers is not None:
                watchers.discard(updates)
                if not watchers:
                    del self._watchers.by_task[task_id]

    async def list_queues(self) -> list[QueueView]:
        names = [q.name for q in self.settings.queues]
        stats = await self.store.queue_stats(names)
        processing: dict[str, int] = defaultdict(int)
        for worker in self.fleet:
            for item in worker.in_flight.values():
                processing[item.queue] += 1
        views = []
        for spec in self.settings.queues:
            row = stats.get(spec.name, {})
            wait_n, run_n = row.get("wait_count", 0), row.get("run_count", 0)
            outcomes = self._outcomes.get(spec.name)
            error_rate = sum(outcomes) / len(outcomes) if outcomes else 0.0
            depth = self.pending.depth(spec.name)
            warnings: list[str] = []
            if spec.max_depth and depth > spec.max_depth:
                warnings.append(f"depth {depth} exceeds threshold {spec.max_depth}")
            if spec.max_error_rate and outcomes and error_rate > spec.max_error_rate:
                warnings.append(
                    f"error rate {error_rate:.0%} over the last {len(outcomes)} task(s) exceeds "
                    f"threshold {spec.max_error_rate:.0%}"
                )
            workers = self._workers_for(spec)
            if depth and not workers:
                warnings.append("tasks are pending and no connected worker can serve this queue")
            views.append(QueueView(
                spec=spec, pending=depth, processing=processing[spec.name],
                completed=int(row.get("completed", 0)), failed=int(row.get("failed", 0)),
                cancelled=int(row.get("cancelled", 0)), paused=spec.name in self.paused,
                mean_wait_seconds=row.get("wait_sum", 0) / wait_n if wait_n else 0.0,
                mean_run_seconds=row.get("run_sum", 0) / run_n if run_n else 0.0,
                workers=workers,
                retrying=sum(1 for q in self._retrying.values() if q == spec.name),
                dead_lettered=sum(1 for q in self._dead.values() if q == spec.name),
                error_rate=error_rate,
                warnings=tuple(warnings),
            ))
        return views

    def _workers_for(self, spec: QueueSpec) -> int:
        probe = PendingTask("", spec.name, spec.default_priority, 0, spec.task_class,
                            GpuNeed.REQUIRED if spec.task_class is TaskClass.GPU_INTENSIVE else GpuNeed.NONE)
        ctx = PlacementContext(policy=self.settings.placement, queues={spec.name: spec})
        count = 0
        for worker in self.fleet:
            if not worker.accepting:
                continue
            # Capability only: a busy worker still serves the queue.
            idle = replace(worker.view(), in_flight=0, in_flight_by_queue={}, quarantined=False)
            count += evaluate(probe, idle, ctx).eligible
        return count

    async def queue_view(self, name: str) -> QueueView:
        for view in await self.list_queues():
            if view.spec.name == name:
                return view
        known = ", ".join(q.name for q in self.settings.queues)
        raise NotFound(f"queue {name!r} does not exist; known queues: {known}")

    # --- operator controls --------------------------------------------------------------

    async def set_paused(self, name: str, paused: bool) -> QueueView:
        await self.queue_view(name)
        await self.store.set_paused(name, paused)
        if paused:
            self.paused.add(name)
        else:
            self.paused.discard(name)
            self._kick.set()
        log.info("queue %s %s", name, "paused" if paused else "resumed")
        return await self.queue_view(name)

    def worker(self, worker_id: str) -> Worker:
        worker = self.fleet.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id!r} is not known to the scheduler")
        return worker

    async def drain(self, worker_id: str) -> Worker:
        worker = self.worker(worker_id)
        if worker.lost:
            raise FailedPrecondition(f"worker {worker_id} is lost; there is nothing to drain")
        worker.draining = True
        worker.outbox.put_nowait(("drain", "drained by operator"))
        log.info("worker %s draining with %d task(s) in flight", worker_id, len(worker.in_flight))
        return worker

    async def cancel(self, task_id: str) -> tuple[dict[str, str], str]:
        """Cancel a task; returns it and the state it was in."""
        if not task_id:
            raise InvalidArgument("task_id is empty")
        outcome = await self.store.cancel(task_id, self.clock(), "cancelled by client",
                                          self.settings.result_ttl_seconds)
        if outcome.status == "missing":
            raise NotFound(f"task {task_id!r} does not exist (or its result expired)")
        if outcome.status == "terminal":
            raise FailedPrecondition(
                f"task {task_id} already ended as {outcome.previous_state}; there is nothing to cancel"
            )
        previous = outcome.previous_state
        self.pending.remove(task_id)
        self._retrying.pop(task_id, None)
        if previous in IN_FLIGHT_STATES:
            owner = self.fleet.get(outcome.task.get("worker", ""))
            item = owner.in_flight.pop(task_id, None) if owner else None
            if owner is not None and item is not None:
                owner.outbox.put_nowait(("cancel", task_id, item.attempt))
            self._kick.set()
        self._watchers.notify(outcome.task)
        return outcome.task, previous

    # --- agents -------------------------------------------------------------------------

    async def agent_hello(self, hello: WorkerRegistration) -> tuple[Worker, Welcome]:
        if not _WORKER_ID.match(hello.worker_id):
            raise InvalidArgument(
                f"worker_id {hello.worker_id!r}: use 1-128 letters, digits, '_', '.', '-' (starting alphanumeric)"
            )
        if hello.slots < 1:
            raise InvalidArgument("slots must be at least 1 (the Celery worker's --concurrency)")
        worker_type = hello.worker_type or (WorkerType.GPU if hello.gpus else WorkerType.CPU)
        existing = self.fleet.get(hello.worker_id)
        rejoined = existing is not None and existing.lost
        if existing is None or existing.lost:
            worker = Worker(hello.worker_id, worker_type, hello.slots)
            self.fleet.add(worker)
        else:
            worker = existing
            worker.worker_type = worker_type
            worker.slots = hello.slots
            # A fresh stream gets a fresh outbox; commands for the old one are moot.
            worker.outbox = asyncio.Queue()
            if worker.draining:
                worker.outbox.put_nowait(("drain", "still draining"))
        worker.labels = dict(hello.labels)
        worker.gpus = list(hello.gpus)
        worker.gpu_simulated = hello.gpu_simulated
        worker.capabilities = hello.capabilities
        worker.connected = True
        worker.disconnected_at = None
        worker.session += 1
        worker.last_heartbeat = self.monotonic()
        worker.last_heartbeat_wall = self.clock()
        await self.store.remember_worker(worker.worker_id, {
            "worker_type": worker_type.value, "slots": hello.slots, "labels": dict(hello.labels),
        })
        log.info("worker %s connected (%s, %d slot(s), %d GPU(s)%s)%s", worker.worker_id,
                 worker_type.value, hello.slots, len(hello.gpus),
                 ", simulated" if hello.gpu_simulated else "", " after being lost" if rejoined else "")
        self._kick.set()
        return worker, Welcome(
            session=worker.session,
            heartbeat_interval_seconds=self.settings.heartbeat_interval_seconds,
            state_redis_url=self.settings.worker_state_redis_url,
            key_prefix=self.settings.key_prefix,
            rejoined_after_loss=rejoined,
        )

    def agent_heartbeat(
        self, worker_id: str, session: int, load: Any, gpus: Sequence[Gpu],
        labels: Mapping[str, str], labels_replaced: bool,
    ) -> None:
        worker = self.fleet.get(worker_id)
        if worker is None or worker.session != session:
            return
        if worker.lost:
            # A frozen worker came back after its work moved on: it rejoins empty-handed, and
            # whatever still sits in its queue is fenced off.
            log.warning("worker %s is back after being declared lost; it rejoins with no tasks", worker_id)
            worker.lost = False
            worker.draining = False
            worker.in_flight.clear()
            self._kick.set()
        worker.connected = True
        worker.disconnected_at = None
        worker.last_heartbeat = self.monotonic()
        worker.last_heartbeat_wall = self.clock()
        worker.load = load
        by_index = {g.index: g for g in gpus}
        for gpu in worker.gpus:
            fresh = by_index.get(gpu.index)
            if fresh is not None:
                gpu.memory_free_mb = fresh.memory_free_mb
                gpu.utilization_percent = fresh.utilization_percent
        if labels_replaced:
            worker.labels = dict(labels)
            self._kick.set()
        elif labels:
            worker.labels.update(labels)
            self._kick.set()

    async def agent_worker_exited(self, worker_id: str, session: int, exit_code: int, reason: str) -> None:
        worker = self.fleet.get(worker_id)
        if worker is None or worker.session != session or worker.lost:
            return
        await self._declare_lost(worker, f"its Celery worker exited ({exit_code}: {reason})")

    def agent_stream_closed(self, worker_id: str, session: int) -> None:
        worker = self.fleet.get(worker_id)
        if worker is None or worker.session != session or worker.lost or not worker.connected:
            return
        worker.connected = False
        worker.disconnected_at = self.monotonic()
        log.warning("worker %s stream closed; declaring it lost in %.1fs unless it reconnects",
                    worker_id, self.settings.lost_grace_seconds)

    async def _declare_lost(self, worker: Worker, reason: str) -> None:
        worker.lost = True
        worker.connected = False
        moved = list(worker.in_flight.values())
        worker.in_flight.clear()
        worker.outbox.put_nowait(None)  # ends the stream writer, if any
        self.metrics.workers_lost.inc()
        log.warning("worker %s lost: %s; moving %d task(s)", worker.worker_id, reason, len(moved))
        for item in moved:
            record = await self.store.requeue(
                item.task_id, worker.worker_id, f"re-queued: worker {worker.worker_id} was lost ({reason})"
            )
            if record is not None:
                self.metrics.requeued.inc()
                self.pending.add(pending_from_record(record))
                self._watchers.notify(record)
        await asyncio.get_running_loop().run_in_executor(
            self.dispatcher.executor, self.dispatcher.purge_worker_queue, worker.worker_id
        )
        worker.lost_at = self.monotonic()
        self._kick.set()

    # --- loops --------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while self._running:
            await self._kick.wait()
            self._kick.clear()
            await self.dispatch_round()

    async def dispatch_round(self) -> int:
        """One placement round: plan, commit each hand-out, publish. Returns hand-outs made."""
        now = self.clock()
        views = self._views(now)
        prefetch = self.settings.dispatch_prefetch
        if not any(v.accepting and v.slots + prefetch > v.in_flight for v in views) or not len(self.pending):
            return 0
        queues = [q.name for q in self.settings.queues if q.name not in self.paused]
        tokens: dict[str, int] = {}
        for limit in self.settings.rate_limits:
            bucket = refill(limit, self._buckets.get(limit.pattern), now)
            self._buckets[limit.pattern] = bucket
            tokens[limit.pattern] = int(bucket.tokens)
        decision = plan(self.pending.in_order(queues, self.settings.aging, now), views,
                        ctx=self._context(now), rate_tokens=tokens)
        for assignment in decision.assignments:
            task = self.pending.get(assignment.task_id)
            for limit in self.settings.rate_limits:
                if task is not None and limit.matches(task.task_name):
                    bucket = self._buckets[limit.pattern]
                    self._buckets[limit.pattern] = Bucket(bucket.tokens - 1, bucket.updated_at)
                    break
        if decision.more:
            self._kick.set()  # budget reached: let other coroutines run, then place the rest
        self._rate_limited = {t: r for t, r in decision.waiting.items() if r.startswith("rate limited")}
        if self._rate_limited:
            # Nothing else will wake the loop when the bucket refills.
            asyncio.get_running_loop().call_later(0.5, self._kick.set)
        hand_outs: list[HandOut] = []
        requests = []
        for assignment in decision.assignments:
            task = self.pending.get(assignment.task_id)
            self.pending.remove(assignment.task_id)
            reason = f"placed on {assignment.reason}; {task.class_reason if task else ''}".rstrip("; ")
            requests.append((assignment.task_id, assignment.worker_id, assignment.gpu_index, reason))
        # One round trip for the round; each hand-out is still its own atomic script.
        outcomes = await self.store.dispatch_many(requests, self.clock(), self.settings.inline_payload_bytes)
        for assignment, outcome in zip(decision.assignments, outcomes, strict=True):
            worker = self.fleet.get(assignment.worker_id)
            if outcome is None or worker is None:
                continue
            record = outcome.task
            item = self._in_flight_from(record)
            item.served_queue = assignment.served_queue
            worker.in_flight[assignment.task_id] = item
            if worker.lost:
                # Lost while we were committing: move it straight back.
                worker.in_flight.pop(assignment.task_id, None)
                back = await self.store.requeue(assignment.task_id, worker.worker_id, "re-queued: worker lost")
                if back is not None:
                    self.pending.add(pending_from_record(back))
                continue
            waited = float(record["dispatched_at"]) - float(record["submitted_at"])
            self.metrics.submit_to_dispatch.labels(record["queue"]).observe(max(0.0, waited))
            hand_outs.append(self._hand_out(record, outcome.args_json, outcome.kwargs_json))
            self._watchers.notify(record)
        if hand_outs:
            await self._publish(hand_outs)
        return len(hand_outs)

    async def _publish(self, hand_outs: list[HandOut]) -> None:
        published = await asyncio.get_running_loop().run_in_executor(
            self.dispatcher.executor, self.dispatcher.publish, hand_outs
        )
        await self.store.mark_published(published)

    async def _events_loop(self) -> None:
        backlog = True
        while self._running:
            events = await self.store.read_events(backlog=backlog)
            if backlog and not events:
                backlog = False
                continue
            await self._apply_all(events)
            await self.store.ack_events([e.stream_id for e in events])

    async def _apply_all(self, events: Sequence[LifecycleEvent]) -> None:
        """Apply reports in stream order; runs without a `failed` report share one round trip."""
        run: list[LifecycleEvent] = []
        for event in [*events, None]:
            if event is not None and event.kind != "failed":
                run.append(event)
                continue
            if run:
                records = await self.store.apply_events(
                    run, result_ttl_seconds=self.settings.result_ttl_seconds,
                    dead_letter_ttl_seconds=self.settings.dead_letter_ttl_seconds,
                )
                for applied, record in zip(run, records, strict=True):
                    self._after_apply(applied, record)
                run = []
            if event is not None:
                await self._apply(event)

    async def _failure_outcome(self, event: LifecycleEvent) -> FailureOutcome | None:
        """Ask the retry policy what this failed report turns into (None when the report is stale)."""
        current = await self.store.get_task(event.task_id)
        if current is None or current.get("attempt") != event.attempt:
            return None
        policy = self.settings.retry_policies.get(current.get("retry_policy") or "", None)
        if policy is None:
            policy = self.settings.retry_policies.get(self.settings.default_retry_policy)
        if policy is None:
            return FailureOutcome("fail", 0.0, "failed (no retry policy)")
        failures = int(current.get("failures") or 0) + 1
        decision = decide_retry(policy, failures, event.fields.get("error_type", ""), self._random.random(),
                                qualified_type=event.fields.get("error_qualname", ""))
        now = self.clock()
        if decision.action is RetryAction.RETRY:
            return FailureOutcome("retry", now + decision.delay_seconds, decision.reason)
        action = "dead_letter" if decision.action is RetryAction.DEAD_LETTER else "fail"
        return FailureOutcome(action, 0.0, decision.reason)

    async def _apply(self, event: LifecycleEvent) -> None:
        outcome = await self._failure_outcome(event) if event.kind == "failed" else None
        record = await self.store.apply_event(
            event, outcome=outcome, result_ttl_seconds=self.settings.result_ttl_seconds,
            dead_letter_ttl_seconds=self.settings.dead_letter_ttl_seconds,
        )
        self._after_apply(event, record)

    def _after_apply(self, event: LifecycleEvent, record: dict[str, str] | None) -> None:
        """Memory follows the store: ledgers, retry and dead-letter indexes, failures, watchers."""
        if record is None:
            if event.kind != "progress":
                self.metrics.stale_reports.inc()
                log.info("dropped stale %s report of %s attempt %s from %s",
                         event.kind, event.task_id, event.attempt, event.worker_id)
            return
        state = record.get("state")
        if event.kind in ("succeeded", "failed"):
            worker = self.fleet.get(event.worker_id)
            if worker is not None and worker.in_flight.pop(event.task_id, None) is not None:
                self._kick.set()
            queue = record.get("queue", "")
            if state == TaskState.RETRYING:
                self._retrying[event.task_id] = queue
            elif state == TaskState.DEAD_LETTERED:
                self._dead[event.task_id] = queue
            if state in TERMINAL_STATES:
                self._outcomes[queue].append(state != TaskState.SUCCEEDED)
            if event.kind == "failed" and worker is not None:
                policy = self.settings.placement
                if worker.record_failure(self.clock(), policy.failure_window_seconds,
                                         policy.quarantine_failures, policy.quarantine_seconds):
                    log.warning("worker %s quarantined for %gs after %d failures within %gs",
                                worker.worker_id, policy.quarantine_seconds, policy.quarantine_failures,
                                policy.failure_window_seconds)
                    asyncio.get_running_loop().call_later(policy.quarantine_seconds, self._kick.set)
        self._watchers.notify(record)

    async def _liveness_loop(self) -> None:
        tick = min(0.25, self.settings.heartbeat_interval_seconds / 2)
        while self._running:
            await asyncio.sleep(tick)
            now = self.monotonic()
            for worker in self.fleet:
                if worker.lost:
                    if now - (worker.lost_at or now) > LOST_WORKER_RETENTION_SECONDS:
                        self.fleet.remove(worker.worker_id)
                    continue
                if worker.connected and now - worker.last_heartbeat > self.settings.heartbeat_timeout_seconds:
                    await self._declare_lost(
                        worker, f"no heartbeat for {self.settings.heartbeat_timeout_seconds:g}s"
                    )
                elif (
                    not worker.connected
                    and worker.disconnected_at is not None
                    and now - worker.disconnected_at > self.settings.lost_grace_seconds
                ):
                    await self._declare_lost(
                        worker, f"not reconnected within {self.settings.lost_grace_seconds:g}s"
                    )

    async def _retry_loop(self) -> None:
        """Retrying tasks whose backoff is over become pending again (held here, not in Celery)."""
        while self._running:
            await asyncio.sleep(0.2)
            due = await self.store.due_retries(self.clock())
            for task_id in due:
                record = await self.store.promote(task_id, TaskState.RETRYING, "retry due")
                self._retrying.pop(task_id, None)
                if record is not None:
                    self.pending.add(pending_from_record(record))
                    self._watchers.notify(record)
            if due:
                self._kick.set()

    async def _dead_letter_loop(self) -> None:
        """Keep the dead-letter queue within its maximum length and TTL."""
        while self._running:
            await asyncio.sleep(5.0)
            await self.trim_dead_letters()

    async def trim_dead_letters(self) -> int:
        letters = await self.store.dead_letters(newest_first=True)
        cutoff = self.clock() - self.settings.dead_letter_ttl_seconds
        doomed = [tid for i, (tid, at) in enumerate(letters) if i >= self.settings.dead_letter_max or at < cutoff]
        if not doomed:
            return 0
        for task_id in doomed:
            self._dead.pop(task_id, None)
        return await self.store.purge_dead_letters(doomed)

    async def list_dead_letters(self, queue: str, limit: int) -> tuple[list[tuple[dict[str, str], float]], int]:
        if queue and self.settings.queue(queue) is None:
            raise NotFound(f"queue {queue!r} does not exist")
        limit = min(1000, limit or 100)
        ids = [(tid, at) for tid, at in await self.store.dead_letters(newest_first=True)
               if not queue or self._dead.get(tid) == queue]
        records = {r["id"]: r for r in await self.store.load_tasks([tid for tid, _at in ids[:limit]])}
        return [(records[tid], at) for tid, at in ids[:limit] if tid in records], len(ids)

    async def retry_dead_letter(self, task_id: str) -> dict[str, str]:
        record = await self.store.get_task(task_id) if task_id else None
        if record is None:
            raise NotFound(f"task {task_id!r} does not exist (or its dead letter expired)")
        if record.get("state") != TaskState.DEAD_LETTERED:
            raise FailedPrecondition(f"task {task_id} is {record.get('state')}, not dead-lettered")
        promoted = await self.store.promote(task_id, TaskState.DEAD_LETTERED, "replayed from dead letters")
        if promoted is None:
            raise FailedPrecondition(f"task {task_id} changed state; try again")
        self._dead.pop(task_id, None)
        self.pending.add(pending_from_record(promoted))
        self._watchers.notify(promoted)
        self._kick.set()
        return promoted

    async def purge_dead_letters(self, task_ids: Sequence[str], queue: str, purge_all: bool) -> int:
        if not task_ids and not queue and not purge_all:
            raise InvalidArgument("say what to purge: task_ids, a queue, or all=true")
        if queue and self.settings.queue(queue) is None:
            raise NotFound(f"queue {queue!r} does not exist")
        if task_ids:
            chosen = list(task_ids)
        else:
            chosen = [tid for tid, q in self._dead.items() if purge_all or q == queue]
        for task_id in chosen:
            self._dead.pop(task_id, None)
        return await self.store.purge_dead_letters(chosen)

    async def explain(self, item: TaskInput | None, task_id: str) -> Explanation:
        """Dry run of classification and placement; changes nothing."""
        now = self.clock()
        if task_id:
            record = await self.get_task(task_id)
            task = self.pending.get(task_id) or pending_from_record(record)
            queue_name, base = task.queue, task.priority
            reason = record.get("class_reason", "")
            task_class = task.task_class
        else:
            if item is None:
                raise InvalidArgument("give a task or a task_id to explain")
            validate_input(item, self.settings)
            decision = classify(item.submission, self.rules)
            task = PendingTask(
                "(dry run)", decision.queue, decision.priority, 0, decision.task_class, decision.gpu,
                item.submission.gpu_memory_mb, tuple(sorted(item.submission.labels.items())), now,
                decision.reason, tuple(sorted(decision.preferred_labels.items())), item.submission.task_name,
            )
            queue_name, base, reason, task_class = decision.queue, decision.priority, decision.reason, decision.task_class
        effective = self.settings.aging.effective_priority(base, now - task.submitted_at)
        verdicts, chosen = explain(task, self._views(now), self._context(now))
        if queue_name in self.paused:
            chosen = None
            summary = f"queue {queue_name} is paused: the task waits until it is resumed"
        elif chosen is not None:
            summary = f"{chosen.worker_id} would take it now (score {chosen.score:.2f})"
        else:
            summary = wait_reason(task, self._views(now), ctx=self._context(now))
        return Explanation(task_class, queue_name, base, effective, reason, verdicts, chosen, summary)

    async def _metrics_loop(self) -> None:
        while self._running:
            await self.refresh_metrics()
            await asyncio.sleep(1.0)

    async def refresh_metrics(self) -> None:
        m = self.metrics
        processing: dict[str, int] = defaultdict(int)
        for worker in self.fleet:
            for item in worker.in_flight.values():
                processing[item.queue] += 1
        for spec in self.settings.queues:
            m.queue_depth.labels(spec.name).set(self.pending.depth(spec.name))
            m.queue_processing.labels(spec.name).set(processing[spec.name])
            m.queue_paused.labels(spec.name).set(1 if spec.name in self.paused else 0)
        counts = await self.store.counts()
        for state in TaskState:
            m.tasks.labels(state.value).set(counts.get(state.value, 0))
        for worker_type, workers in self.fleet.by_type().items():
            live = [w for w in workers if w.connected and not w.lost]
            m.workers_connected.labels(worker_type.value).set(len(live))
            m.free_slots.labels(worker_type.value).set(sum(w.free_slots for w in live if w.accepting))
        m.worker_free_slots.clear()
        m.gpu_memory_free.clear()
        m.gpu_utilization.clear()
        for worker in self.fleet:
            if worker.lost:
                continue
            m.worker_free_slots.labels(worker.worker_id).set(worker.free_slots)
            for gpu in worker.gpus:
                m.gpu_memory_free.labels(worker.worker_id, str(gpu.index)).set(gpu.memory_free_mb)
                m.gpu_utilization.labels(worker.worker_id, str(gpu.index)).set(gpu.utilization_percent)

    def celery_queue(self, worker_id: str) -> str:
        return worker_queue_name(worker_id)


def _change_key(record: Mapping[str, str]) -> tuple[str, ...]:
    return (record.get("state", ""), record.get("attempt", ""), record.get("progress", ""),
            record.get("progress_msg", ""), record.get("worker", ""))
