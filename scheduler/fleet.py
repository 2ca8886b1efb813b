"""Live view of the workers, fed by agent streams: capabilities, load, liveness and in-flight work.

Pure bookkeeping in memory (no I/O); the engine owns the one Fleet and decides what follows
from a change (re-queueing a lost worker's tasks, for instance).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from scheduler.core.model import GpuView, WorkerType, WorkerView


class Liveness(StrEnum):
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"
    DRAINING = "draining"
    LOST = "lost"


@dataclass
class Gpu:
    index: int
    name: str
    uuid: str
    memory_total_mb: int
    memory_free_mb: int
    utilization_percent: int = 0


@dataclass
class InFlight:
    """One attempt dispatched to or running on a worker."""

    task_id: str
    attempt: int
    queue: str
    gpu_index: int | None = None
    gpu_memory_mb: int = 0
    served_queue: str = ""
    """Queue whose per-worker limit it counts against ("" = its own)."""
    started: bool = False
    """Known to have started (its claim succeeded); until then the start deadline applies."""
    waiting_since: float | None = None
    """Monotonic time from which its start deadline counts: when liveness first saw it, or last
    saw every slot of its worker busy with started work (its turn had not come)."""
    unreported_since: float | None = None
    """Monotonic time of the first heartbeat whose running attempts left this one out (None while
    its agent lists it, or does not say)."""


class Ledger(dict[str, InFlight]):
    """A worker's in-flight attempts by task id: a dict that counts its changes (`version`), so
    `Worker.view` can tell whether what it last built still holds without walking the entries.
    Every way a dict changes in place counts; entries must not change once added (their queue,
    GPU and memory are what the view sums; `started` and the liveness times are not)."""

    __slots__ = ("version",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = 0

    def __setitem__(self, key: str, value: InFlight) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.version += 1
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.version += 1
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, InFlight]:
        self.version += 1
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.version += 1
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        super().update(*args, **kwargs)

    def __ior__(self, other: Any) -> Ledger:  # type: ignore[override,misc]
        self.version += 1
        super().update(other)
        return self

    def clear(self) -> None:
        self.version += 1
        super().clear()


OPERATOR_STATES = ("ready", "draining", "drained", "quarantined", "lost")
"""A worker's state as operators see it (`Worker.operator_state`): ready for work; draining (no
new work, some still running); drained (no new work, idle); quarantined (too many distinct
tasks failed on it recently: no new work until the quarantine ends); lost (its agent is gone, or
disconnected and not back yet)."""


class OperatorStatus(NamedTuple):
    """A worker's state as operators see it, why, and since when (`Worker.operator_status`)."""

    state: str
    """One of OPERATOR_STATES."""
    reason: str
    """Why, in words; empty when ready."""
    since: float
    """Wall-clock time it entered the state: exact where the cause has a time (drain, quarantine,
    loss), else when the scheduler first saw the worker so."""


@dataclass
class Worker:
    """A worker as the scheduler knows it right now."""

    worker_id: str
    worker_type: WorkerType
    slots: int
    labels: dict[str, str] = field(default_factory=dict)
    refused_labels: str = ""
    """Why the last label change its heartbeats asked for was refused ("" when none was)."""
    gpus: list[Gpu] = field(default_factory=list)
    gpu_simulated: bool = False
    registered_tasks: frozenset[str] = frozenset()
    """Task names its Celery app registers, as its agent reported them; empty when not known."""
    agent_instance: str = ""
    """Id of the agent process that registered it last (empty: not known)."""
    capabilities: Any = None
    """The last WorkerCapabilities message (kept for ListWorkers)."""
    load: Any = None
    """The last WorkerLoad message."""
    connected: bool = False
    draining: bool = False
    lost: bool = False
    session: int = 0
    """Incremented on each hello; a stream that closes only affects its own session."""
    last_heartbeat: float = 0.0
    """Monotonic time of the last hello or heartbeat."""
    last_heartbeat_wall: float = 0.0
    disconnected_at: float | None = None
    """Monotonic time the stream dropped (or the scheduler restarted without it)."""
    lost_at: float | None = None
    """Monotonic time the worker was declared lost."""
    failures: list[float] = field(default_factory=list)
    """Wall-clock times of recent failed attempts on this worker."""
    failed_tasks: dict[str, float] = field(default_factory=dict)
    """Task id -> wall-clock time of its latest recent failure here (quarantine counts these)."""
    quarantined_until: float = 0.0
    """Wall-clock time until which the worker gets no new work."""
    in_flight: dict[str, InFlight] = field(default_factory=Ledger)
    """By task id; a `Ledger` (a plain dict given here works, only without `view`'s reuse)."""
    outbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    """Commands waiting to be written to the agent's stream."""
    drained_at: float = 0.0
    """Wall-clock time an operator drained it (0 while it is not draining)."""
    quarantined_at: float = 0.0
    """Wall-clock time its latest quarantine began."""
    quarantine_reason: str = ""
    """Why its latest quarantine began, in words."""
    lost_reason: str = ""
    """Why it was declared lost, in words (liveness says)."""
    lost_since: float = 0.0
    """Wall-clock time it was declared lost."""
    seen_state: str = field(default="", repr=False)
    """The operator state `operator_status` last returned, and since when it holds: states whose
    start has no recorded time (drained, ready) date from when they were first seen."""
    seen_since: float = field(default=0.0, repr=False)
    _view: tuple[tuple[Any, ...], WorkerView] | None = field(default=None, repr=False, compare=False)
    """The last view built and what it was built from (`view`)."""

    @property
    def liveness(self) -> Liveness:
        if self.lost:
            return Liveness.LOST
        if not self.connected:
            return Liveness.UNREACHABLE
        if self.draining:
            return Liveness.DRAINING
        return Liveness.CONNECTED

    def operator_state(self, now: float) -> str:
        """Where the worker stands for an operator (metrics, ListWorkers, `switchyard top`):
        one of OPERATOR_STATES. `now` is wall-clock time (quarantine is kept in it)."""
        return self.operator_status(now).state

    def operator_status(self, now: float) -> OperatorStatus:
        """The operator state with its reason and since when (`now`: wall-clock time).

        Draining, quarantined and lost date from their cause; drained and ready from when they
        were first seen here (the engine looks every second for its gauges, and at every
        ListWorkers), unless the change that caused them said when (`note_state`)."""
        exact: float | None = None
        if self.lost:
            state, reason, exact = "lost", self.lost_reason or "declared lost", self.lost_since or None
        elif not self.connected:
            state = "lost"
            if self.last_heartbeat_wall:
                reason, exact = "stream closed; waiting for the agent to reconnect", self.last_heartbeat_wall
            else:
                reason = "not connected since the scheduler started (known from its task ledger)"
        elif self.draining and self.in_flight:
            state, exact = "draining", self.drained_at or None
            reason = f"drained by operator; {len(self.in_flight)} task(s) still running"
        elif self.draining:
            state, reason = "drained", "drained by operator; idle"
        elif self.quarantined_until > now:
            state, reason, exact = "quarantined", self.quarantine_reason, self.quarantined_at or None
        else:
            state, reason = "ready", ""
            if self.seen_state == "quarantined" and self.quarantined_until:
                exact = self.quarantined_until  # the quarantine ran out
        if exact is not None:
            self.note_state(state, exact)
        elif state != self.seen_state:
            self.note_state(state, now)
        return OperatorStatus(state, reason, self.seen_since)

    def note_state(self, state: str, since: float) -> None:
        """Record that the worker is in operator state `state` since `since` (wall-clock)."""
        self.seen_state, self.seen_since = state, since

    def end_quarantine(self, now: float) -> bool:
        """End the quarantine now and forget recent failures (so the next failure does not
        quarantine it again at once); True when it was quarantined. `now`: wall-clock time."""
        was = self.quarantined_until > now
        self.quarantined_until = 0.0
        self.failures.clear()
        self.failed_tasks.clear()
        return was

    @property
    def accepting(self) -> bool:
        return self.connected and not self.draining and not self.lost

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - len(self.in_flight))

    def record_failure(self, now: float, window_seconds: float, quarantine_after: int,
                       quarantine_seconds: float, task_id: str = "") -> bool:
        """Count a failed attempt of `task_id`; True when it tips the worker into quarantine.

        Quarantine counts distinct tasks: one poison task retried by its policy fails the same
        way wherever it runs and says nothing about this worker, while many different tasks
        failing here do."""
        self.failures = [t for t in self.failures if now - t <= window_seconds]
        self.failures.append(now)
        self.failed_tasks = {tid: t for tid, t in self.failed_tasks.items() if now - t <= window_seconds}
        self.failed_tasks[task_id or f"anonymous-{len(self.failures)}-{now}"] = now
        if quarantine_after and len(self.failed_tasks) >= quarantine_after and now >= self.quarantined_until:
            self.quarantined_until = now + quarantine_seconds
            self.quarantined_at = now
            self.quarantine_reason = (f"{len(self.failed_tasks)} distinct tasks failed on it within "
                                      f"{window_seconds:g} s")
            return True
        return False

    def view(self, now: float = 0.0, window_seconds: float = 300.0) -> WorkerView:
        """The worker as the pure placement core sees it (GPU memory net of reservations).

        Placement asks for every worker's view in every round; most workers have not changed
        since the last one, so the last view is returned again while everything it shows is as
        it was: the ledger's version, slots, acceptance, GPUs, labels, registered tasks, and the
        two figures that move with time (failures within the window, quarantine). Views are
        immutable, so sharing one between rounds is safe."""
        in_flight = self.in_flight
        recent_failures = sum(1 for t in self.failures if now - t <= window_seconds) if self.failures else 0
        gpus = self.gpus
        key = (
            getattr(in_flight, "version", None), self.slots, self.accepting, recent_failures,
            now < self.quarantined_until, self.worker_type, self.registered_tasks,
            [(g.index, g.memory_total_mb, g.memory_free_mb, g.utilization_percent) for g in gpus] if gpus else None,
        )
        cached = self._view
        if cached is not None and key[0] is not None and cached[0] == key and cached[1].labels == self.labels:
            return cached[1]
        reserved: dict[int, int] = {}
        by_queue: dict[str, int] = {}
        for item in in_flight.values():
            if item.gpu_index is not None:
                reserved[item.gpu_index] = reserved.get(item.gpu_index, 0) + item.gpu_memory_mb
            queue = item.served_queue or item.queue
            by_queue[queue] = by_queue.get(queue, 0) + 1
        view = WorkerView(
            worker_id=self.worker_id,
            worker_type=self.worker_type,
            slots=self.slots,
            in_flight=len(in_flight),
            accepting=key[2],
            gpus=tuple(
                GpuView(
                    index=g.index,
                    memory_total_mb=g.memory_total_mb,
                    memory_free_mb=g.memory_free_mb,
                    reserved_mb=reserved.get(g.index, 0),
                    utilization_percent=g.utilization_percent,
                )
                for g in gpus
            ),
            labels=dict(self.labels),
            in_flight_by_queue=by_queue,
            recent_failures=recent_failures,
            quarantined=key[4],
            registered_tasks=self.registered_tasks,
        )
        self._view = (key, view)
        return view


class Fleet:
    """Every worker the scheduler knows, by id."""

    def __init__(self) -> None:
        self._workers: dict[str, Worker] = {}
        self._task_sets: dict[frozenset[str], frozenset[str]] = {}

    def task_set(self, names: Iterable[str]) -> frozenset[str]:
        """`names` as a set shared by every worker that registers the same names.

        Workers running one Celery app report the same list; sharing one object lets placement
        group them by it at the cost of an identity check rather than a comparison of names.
        """
        names = frozenset(names)
        return self._task_sets.setdefault(names, names)

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._workers.values()))

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def add(self, worker: Worker) -> None:
        self._workers[worker.worker_id] = worker

    def remove(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def views(self, now: float = 0.0, window_seconds: float = 300.0) -> list[WorkerView]:
        return [w.view(now, window_seconds) for w in self._workers.values() if not w.lost]

    def by_type(self) -> Mapping[WorkerType, list[Worker]]:
        grouped: dict[WorkerType, list[Worker]] = {t: [] for t in WorkerType}
        for worker in self._workers.values():
            grouped[worker.worker_type].append(worker)
        return grouped
