"""The fleet as one placement round books it, and each worker's own part of its score.

The shape index (shapes.py) keeps workers in heaps by their part of the score: what sets workers
of one shape apart (free-slot share, failures, idle GPU share, and, for a task asking GPU
memory, the room left on the device it would go to). `Bookings` holds every worker's state by
worker number (its place in the fleet given to `plan`), works that part out as exact fixed-point
units (scoring.py, the same helpers `evaluate` uses), and books what the round hands out: a
slot, a count of the served queue, GPU memory on one device. Every booking bumps the worker's
version, which is how heap entries from before it are known to be stale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from scheduler.core.model import GpuView, WorkerType, WorkerView
from scheduler.core.placement.policy import PlacementContext, Strategy
from scheduler.core.placement.scoring import (
    failures_value,
    gpu_idle_value,
    headroom_share,
    headroom_value,
    load_value,
    pick_device,
    term_units,
)

Entry = tuple[int, str, int, int]
"""A heap entry: (minus the worker's part of the score, worker id, worker number, its version).
Version -1 marks a bound (see `Bookings.bounds`)."""


class Bookings:
    """Every worker's state as the round books it, by worker number (its place in the input)."""

    def __init__(self, workers: Sequence[WorkerView], ctx: PlacementContext) -> None:
        self.views = list(workers)
        self.ctx = ctx
        policy = ctx.policy
        self.binpack = policy.strategy is Strategy.BINPACK
        weights = policy.weights
        falling = not self.binpack and weights.load >= 0 and weights.memory_headroom >= 0
        self.bounded = falling
        """Whether heaps for GPU-memory tasks start from bounds (see `bounds`)."""
        self._most_headroom: int | None = None
        self.rises = [not falling] * len(workers)
        """Whether a booking may raise the worker's score. Under spread, with no negative weight on
        what bookings change, it can only fall: fewer free slots, and less room on the roomiest
        device, unless that device's room runs out and one of another size, with a larger share
        left, becomes the roomiest."""
        mixed_sizes = falling and weights.memory_headroom > 0
        self.limits = tuple((q, spec.max_tasks_per_worker) for q, spec in ctx.queues.items()
                            if spec.max_tasks_per_worker)
        """Queues with a per-worker limit; which of them a worker has reached is part of its shape."""
        prefetch = ctx.prefetch
        self.live = [i for i, w in enumerate(workers) if w.accepting and w.slots + prefetch - w.in_flight > 0]
        """Workers that had a free slot when the round began (no other one gets one during it)."""
        n = len(workers)
        # Per worker, by number; only live workers' entries are filled in and read.
        self.open = [False] * n
        self.open_count = len(self.live)
        self.ids = [""] * n
        self.in_flight = [0] * n
        self.gpus: list[tuple[GpuView, ...]] = [()] * n
        self.by_queue: list[Mapping[str, int]] = [{}] * n
        self.version = [0] * n
        self.base = [0] * n
        """The worker's part of the score without idle GPU and memory headroom: load less failures."""
        self.gpu_idle: list[int | None] = [None] * n
        """Idle-GPU units, worked out when first needed."""
        self.room: list[tuple[int, int] | None] = [None] * n
        """Spread: (available, total) MiB of the roomiest device, the one a task's memory would go
        to whatever its size (if it fits there at all); worked out when first needed, forgotten when
        memory is booked."""
        self.blocked: list[tuple[str, ...]] = [()] * n
        self.booked: set[int] = set()
        self._units: dict[tuple[int, int, int], int] = {}
        self.traits: dict[int, tuple[WorkerType, bool, bool, frozenset[str]]] = {}
        """The live workers' shape, labels aside: type, whether it has a GPU, quarantined, the task
        names it registers (workers of one Celery app share the set: the fleet interns it)."""
        for i in self.live:
            w = workers[i]
            self.traits[i] = (w.worker_type, w.has_gpu, w.quarantined, w.registered_tasks)
            self.open[i] = True
            self.ids[i], self.in_flight[i], self.gpus[i], self.by_queue[i] = (
                w.worker_id, w.in_flight, w.gpus, w.in_flight_by_queue)
            if mixed_sizes and len(w.gpus) > 1 and len({g.memory_total_mb for g in w.gpus}) > 1:
                self.rises[i] = True
            self.base[i] = self._base(w.slots, w.in_flight, w.recent_failures)
            if self.limits:
                self.blocked[i] = self._reached(i)

    def _base(self, slots: int, in_flight: int, failures: int) -> int:
        key = (slots, in_flight, failures)
        units = self._units.get(key)
        if units is None:
            policy = self.ctx.policy
            units = self._units[key] = (
                term_units("load", load_value(slots, in_flight, self.binpack), policy.weights.load)
                + term_units("failures", failures_value(failures, policy), policy.weights.failures))
        return units

    def _reached(self, i: int) -> tuple[str, ...]:
        counts = self.by_queue[i]
        return tuple(q for q, limit in self.limits if counts.get(q, 0) >= limit)

    def device(self, i: int, memory: int) -> GpuView | None:
        """Device worker `i` would reserve `memory` on (as `pick_gpu` chooses), None when none fits."""
        return pick_device(memory, self.gpus[i], self.ctx.policy.strategy)

    def _room(self, i: int) -> tuple[int, int]:
        roomiest = pick_device(0, self.gpus[i], self.ctx.policy.strategy)  # spread: the roomiest
        room = self.room[i] = (-1, 0) if roomiest is None else (roomiest.available_mb, roomiest.memory_total_mb)
        return room

    def headroom(self, i: int, memory: int) -> int | None:
        """Memory-headroom units of `memory` on worker `i` now; None when it fits on no device."""
        if self.binpack:
            device = self.device(i, memory)
            if device is None:
                return None
            share = headroom_value(device, memory, True)
        else:
            available, total = self.room[i] or self._room(i)
            if available < memory:
                return None  # bookings only take memory: it will not fit later in the round either
            share = headroom_share(available, total, memory, False)
        return term_units("memory_headroom", share, self.ctx.policy.weights.memory_headroom)

    def entries(self, members: Sequence[int], gpu: bool, memory: int, blocked: tuple[str, ...]) -> list[Entry]:
        """Heap entries of the members that are open, in the group (`blocked`) and fit `memory`."""
        is_open, now_blocked, base, ids, version = self.open, self.blocked, self.base, self.ids, self.version
        members = [i for i in members if is_open[i] and now_blocked[i] == blocked]
        if gpu:
            idle = self.gpu_idle
            for i in members:
                if idle[i] is None:
                    idle[i] = term_units("gpu_utilization", gpu_idle_value(self.views[i]),
                                         self.ctx.policy.weights.gpu_utilization)
        if not memory:
            if not gpu:
                return [(-base[i], ids[i], i, version[i]) for i in members]
            return [(-base[i] - idle[i], ids[i], i, version[i]) for i in members]  # type: ignore[operator]
        found = []
        if self.binpack:
            for i in members:
                headroom = self.headroom(i, memory)
                if headroom is not None:
                    part = base[i] + idle[i] + headroom if gpu else base[i] + headroom  # type: ignore[operator]
                    found.append((-part, ids[i], i, version[i]))
            return found
        # Spread, written out: the one loop that runs per worker for GPU-memory tasks.
        room, weight = self.room, self.ctx.policy.weights.memory_headroom
        for i in members:
            available, total = room[i] or self._room(i)
            if available >= memory:
                part = term_units("memory_headroom", headroom_share(available, total, memory, False), weight)
                part += base[i] + idle[i] if gpu else base[i]  # type: ignore[operator]
                found.append((-part, ids[i], i, version[i]))
        return found

    def bounds(self, members: Sequence[int], gpu: bool, blocked: tuple[str, ...]) -> list[Entry]:
        """Heap entries that overstate what GPU-memory tasks score: the most headroom anyone has.

        Working out where a task's memory would go is most of the cost of a heap for such tasks;
        with bounds, only the workers whose bound reaches the top are worked out exactly (an entry
        with version -1 is recomputed when it surfaces), and a bound never understates, so the
        first exact entry on top is the best. Only when scores never rise (`bounded`).
        """
        most = self._most_headroom
        if most is None:
            # At most the largest share of a device still available (1 unless a report is odd).
            share = max((g.available_mb / g.memory_total_mb for i in self.live for g in self.gpus[i]
                         if g.memory_total_mb), default=0.0)
            most = self._most_headroom = term_units("memory_headroom", round(max(1.0, share), 4),
                                                    self.ctx.policy.weights.memory_headroom)
        return [(entry[0] - most, entry[1], entry[2], -1) for entry in self.entries(members, gpu, 0, blocked)]

    def entry(self, i: int, gpu: bool, memory: int, blocked: tuple[str, ...]) -> Entry | None:
        """`entries` for one worker."""
        if not self.open[i] or self.blocked[i] != blocked:
            return None  # full, or moved on to another group
        part = self.base[i]
        if gpu:
            idle = self.gpu_idle[i]
            if idle is None:
                idle = self.gpu_idle[i] = term_units("gpu_utilization", gpu_idle_value(self.views[i]),
                                                     self.ctx.policy.weights.gpu_utilization)
            part += idle
        if memory:
            headroom = self.headroom(i, memory)
            if headroom is None:
                return None
            part += headroom
        return (-part, self.ids[i], i, self.version[i])

    def book(self, i: int, served_queue: str, gpu_index: int | None, memory: int) -> bool:
        """Book one task on worker `i`; whether its reached per-queue limits changed."""
        view = self.views[i]
        self.in_flight[i] += 1
        self.version[i] += 1
        self.booked.add(i)
        if gpu_index is not None and memory:
            self.gpus[i] = tuple(replace(g, reserved_mb=g.reserved_mb + memory) if g.index == gpu_index else g
                                 for g in self.gpus[i])
            self.room[i] = None
        counts = dict(self.by_queue[i])
        counts[served_queue] = counts.get(served_queue, 0) + 1
        self.by_queue[i] = counts
        if view.slots + self.ctx.prefetch - self.in_flight[i] <= 0:
            self.open[i] = False
            self.open_count -= 1
            return False
        self.base[i] = self._base(view.slots, self.in_flight[i], view.recent_failures)
        if not self.limits:
            return False
        reached = self._reached(i)
        moved = reached != self.blocked[i]
        self.blocked[i] = reached
        return moved

    def current(self) -> list[WorkerView]:
        """Every worker as the round's bookings left it."""
        views = list(self.views)
        for i in self.booked:
            views[i] = replace(views[i], in_flight=self.in_flight[i], gpus=self.gpus[i],
                               in_flight_by_queue=self.by_queue[i])
        return views
