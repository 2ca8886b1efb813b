"""The shape index: placement's picker, which finds the best worker without scoring every one.

Workers of one *shape* (type, whether they have a GPU, quarantine, the task names their Celery
app registers, the labels a task asks about, and which per-queue limits they have reached) get
the same verdict from every filter except the capacity ones (free slots, GPU memory;
filters.py), so a task's kind is judged once per shape, not once per worker. Within a shape,
what sets workers apart in the score is their own part of it (load, idle GPU share, memory
headroom, failures): a heap per shape keeps them in that order, so the best worker of a shape
is the top of its heap, and a task's best worker is the best of the few shape tops that passed.
Scores are integers of fixed-point units (scoring.py), so a shape's part plus a worker's part is
exactly the total `evaluate` gives.

The pieces:

* a *partition* per set of label keys that tasks ask about (by `labels` or `preferred_labels`):
  workers are grouped by their shape, with their values of those keys only, so labels no task
  reads (a host name, say) never split a group;
* a *group* per shape within a partition, with a heap per (does the score count the idle GPU
  share, GPU memory asked) of its workers by their part of the score;
* a *task kind* per memo key and preferred labels: the groups that passed the non-capacity
  filters, each with the queue the task would be served under and the kind's part of the score.
  What a kind makes of a shape does not change from round to round while the policy, queues
  and chains stay, so the engine keeps those verdicts (`ShapeVerdicts`) and a round mostly
  looks them up.

Booking a worker changes its part of the score and maybe its group (a per-queue limit reached),
and bumps its version, which marks its heap entries stale. Usually (spread, no negative weight)
a booking can only lower a worker's part, so a stale entry overstates it and the heap still
puts nobody better below it: the entry is worked out again only when it surfaces. Where a
booking may raise it (binpack, negative weights, GPUs of different sizes on one worker), and
when a worker changes group, the worker is logged to its group, whose heaps take it in again
with its new part the next time they are read. Heaps for tasks asking GPU memory start from
bounds in the same way (`Bookings.bounds`). Eligibility only ever shrinks during a round (slots,
GPU memory and queue counts are only taken), so a worker that no longer fits a heap never has
to come back to it.

Ties go to the smaller worker id, as in the worker-by-worker scan (reference.py), which the
shape index is property-tested against (tests/unit/test_core_placement_exact.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from dataclasses import replace

from scheduler.core.model import PendingTask, WorkerType, WorkerView
from scheduler.core.placement.booking import Bookings, Entry
from scheduler.core.placement.filters import Trial, judge_shape
from scheduler.core.placement.policy import PlacementContext
from scheduler.core.placement.rounds import Choice
from scheduler.core.placement.scoring import (
    GPU_CLASSES,
    SCORE_SCALE,
    affinity_value,
    fit_value,
    term_units,
)
from scheduler.core.placement.verdicts import rejected_by_shape, wait_sentence

Shape = tuple[WorkerType, bool, bool, frozenset[str], tuple[str | None, ...]]
"""(type, has a GPU, quarantined, registered task names, its values of the partition's label keys)."""


class _Heap:
    """One group's workers for one (idle GPU counted, GPU memory asked), best first."""

    __slots__ = ("entries", "gpu", "memory", "seen")

    def __init__(self, gpu: bool, memory: int, entries: list[Entry], seen: int) -> None:
        self.gpu, self.memory, self.entries = gpu, memory, entries
        self.seen = seen
        """How much of the group's log is already in `entries`."""


class _Group:
    """Workers of one shape in one partition; `log` lists those booked into it since it was made."""

    __slots__ = ("blocked", "has_gpu", "heaps", "key", "log", "members", "rep")

    def __init__(self, rep: int, key: tuple[Shape, tuple[str, ...]]) -> None:
        self.rep, self.key = rep, key
        self.has_gpu, self.blocked = key[0][1], key[1]
        self.members = [rep]
        self.log: list[int] = []
        self.heaps: dict[tuple[bool, int], _Heap] = {}


class _Partition:
    """The workers grouped by shape, reading only the label keys `keys`."""

    __slots__ = ("at", "groups", "keys", "order", "shape_of")

    def __init__(self, keys: tuple[str, ...], workers: Bookings) -> None:
        self.keys = keys
        self.groups: dict[tuple[Shape, tuple[str, ...]], _Group] = {}
        self.order: list[_Group] = []
        """Groups in the order they were made (task kinds judge new ones as they appear)."""
        self.shape_of: dict[int, Shape] = {}
        self.at: dict[int, _Group] = {}
        groups, shape_of, at, blocked, views = self.groups, self.shape_of, self.at, workers.blocked, workers.views
        for i, traits in workers.traits.items():
            if keys:
                labels = views[i].labels
                shape = shape_of[i] = (*traits, tuple([labels.get(k) for k in keys]))
            else:
                shape = shape_of[i] = (*traits, ())
            group = groups.get((shape, blocked[i]))
            if group is None:
                self.place(i, blocked[i])
            else:
                group.members.append(i)
                at[i] = group

    def place(self, i: int, blocked: tuple[str, ...]) -> _Group:
        """Put worker `i` in the group of its shape with these limits reached; returns the group."""
        key = (self.shape_of[i], blocked)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(i, key)
            self.order.append(group)
        else:
            group.members.append(i)
        self.at[i] = group
        return group


class _Kind:
    """A kind of task (memo key and preferred labels): the groups whose shape passed its filters."""

    __slots__ = ("candidates", "key", "partition", "seen", "task")

    def __init__(self, task: PendingTask, key: Hashable, partition: _Partition) -> None:
        self.task, self.key, self.partition = task, key, partition
        self.seen = 0
        """How many of the partition's groups were judged."""
        self.candidates: list[tuple[_Group, _Heap, int, str]] = []
        """(group, heap, the kind's part of the score there, queue served under there)."""


ShapeVerdict = tuple[int, str, bool, int] | None
"""What a task kind's filters make of a shape: None when it fails them, else (the kind's part of
the score there, the queue it is served under there, whether the idle GPU share counts, GPU
memory asked there), which is all `_judge` needs to make the group a candidate."""


class ShapeVerdicts:
    """Verdicts of kinds on shapes, kept from one round to the next by the caller of `plan`.

    A verdict follows from the kind (memo key and preferred labels: everything of the task that
    a filter or the kind's part of the score reads, the time-dependent facts included), the shape
    and what the round's context says beyond its time: the policy, the queues and the fallback
    chains. Those are the engine's for its whole life, so a round mostly finds its verdicts here
    instead of judging again; a context with any of them changed starts afresh.
    """

    __slots__ = ("_kept", "_made_for")

    KEPT = 4096
    """Verdicts kept at most (many task kinds or shapes: start afresh)."""

    def __init__(self) -> None:
        self._made_for: tuple[object, object, object] = (None, None, None)
        self._kept: dict[tuple[Hashable, Hashable], ShapeVerdict] = {}

    def for_round(self, ctx: PlacementContext) -> dict[tuple[Hashable, Hashable], ShapeVerdict]:
        """The verdicts that hold in `ctx`, to read and add to."""
        made_for = (ctx.policy, ctx.queues, ctx.chains)
        if len(self._kept) >= self.KEPT or any(a is not b for a, b in zip(made_for, self._made_for, strict=True)):
            self._kept = {}
            self._made_for = made_for
        return self._kept


class ShapeIndex:
    """The picker `plan` uses (see the module docstring and rounds.Picker)."""

    def __init__(self, workers: Sequence[WorkerView], ctx: PlacementContext,
                 verdicts: dict[tuple[Hashable, Hashable], ShapeVerdict] | None = None) -> None:
        self.ctx = ctx
        self.verdicts: dict[tuple[Hashable, Hashable], ShapeVerdict] = {} if verdicts is None else verdicts
        """Kind and shape -> verdict: this round's, or those kept from earlier rounds (`ShapeVerdicts`)."""
        self.workers = Bookings(workers, ctx)
        self.number = {self.workers.ids[i]: i for i in self.workers.live}
        self.partitions: dict[tuple[str, ...], _Partition] = {}
        self.kinds: dict[Hashable, _Kind] = {}

    def has_open(self) -> bool:
        """Whether some accepting worker still has a free slot."""
        return self.workers.open_count > 0

    def best(self, task: PendingTask, key: tuple[Hashable, ...], turn: int) -> Choice | None:
        """The best worker of the whole fleet for the task: the best of its groups' heap tops."""
        kind = self._kind(task, key)
        workers = self.workers
        version, rises = workers.version, workers.rises
        best_total = 0
        best: tuple[Entry, _Group, str] | None = None
        for group, heap, units, served in kind.candidates:
            if heap.seen < len(group.log):
                self._catch_up(group, heap)
            entries = heap.entries
            while entries and entries[0][3] != version[entries[0][2]]:
                # A bound, or a stale entry: its worker was booked since. A score that can only
                # have gone down is worked out again only now that it surfaced; one that may have
                # risen is already in the heap again (`_catch_up`).
                stale = entries[0][2]
                fresh = None if rises[stale] and entries[0][3] >= 0 else workers.entry(
                    stale, heap.gpu, heap.memory, group.blocked)
                if fresh is None:
                    heapq.heappop(entries)
                else:
                    heapq.heapreplace(entries, fresh)
            if not entries:
                continue
            top = entries[0]
            total = units - top[0]
            if best is None or total > best_total or (total == best_total and top[1] < best[0][1]):
                best_total, best = total, (top, group, served)
        if best is None:
            return None
        (_, worker_id, i, _), group, served = best
        memory = task.gpu_memory_mb if group.has_gpu else 0
        device = workers.device(i, memory) if memory else None
        return Choice(worker_id, workers.views[i].worker_type, best_total / SCORE_SCALE, served,
                      device.index if device is not None else None)

    def book(self, task: PendingTask, choice: Choice) -> None:
        """Book the choice, and log the worker to its group in every partition."""
        i = self.number[choice.worker_id]
        workers = self.workers
        moved = workers.book(i, choice.served_queue, choice.gpu_index, task.gpu_memory_mb)
        if not workers.open[i] or not (moved or workers.rises[i]):
            return  # its heap entries are stale now: dropped, or worked out again, when they surface
        for partition in self.partitions.values():
            group = partition.place(i, workers.blocked[i]) if moved else partition.at[i]
            group.log.append(i)

    def wait_reason(self, task: PendingTask) -> str:
        """`wait_reason` over the fleet as booked so far, judging each kind of worker once."""
        return wait_sentence(task, self.workers.current(), self.ctx, rejected_by_shape(task, self.ctx))

    def _kind(self, task: PendingTask, key: tuple[Hashable, ...]) -> _Kind:
        kind_key = (key, task.preferred_labels)
        kind = self.kinds.get(kind_key)
        if kind is None:
            keys = tuple(sorted({k for k, _ in task.labels} | {k for k, _ in task.preferred_labels}))
            partition = self.partitions.get(keys)
            if partition is None:
                partition = self.partitions[keys] = _Partition(keys, self.workers)
            kind = self.kinds[kind_key] = _Kind(task, kind_key, partition)
        order = kind.partition.order
        while kind.seen < len(order):
            self._judge(kind, order[kind.seen])
            kind.seen += 1
        return kind

    def _judge(self, kind: _Kind, group: _Group) -> None:
        """Judge the kind against the group's shape; a group that passes becomes a candidate."""
        key = (kind.key, group.key)
        verdicts = self.verdicts
        if key in verdicts:
            verdict = verdicts[key]
        else:
            verdict = verdicts[key] = self._verdict(kind.task, group)
        if verdict is not None:
            units, served, gpu, memory = verdict
            kind.candidates.append((group, self._heap(group, gpu, memory), units, served))

    def _verdict(self, task: PendingTask, group: _Group) -> ShapeVerdict:
        """The kind of `task` judged against the group's shape (see `ShapeVerdict`)."""
        ctx, workers = self.ctx, self.workers
        view = workers.views[group.rep]
        if workers.limits:
            # The shape's reached limits, as the queue_limit filter reads them.
            view = replace(view, in_flight_by_queue={q: n for q, n in workers.limits if q in group.blocked})
        trial = Trial(task, view, ctx)
        if judge_shape(trial) is not None:
            return None
        served = trial.queues[0]
        task_class = ctx.class_in(served, task)
        weights = ctx.policy.weights
        units = (term_units("capability", fit_value(task_class, view.worker_type, group.has_gpu), weights.capability)
                 + term_units("affinity", affinity_value(task.preferred_labels, view.labels), weights.affinity))
        return (units, served, group.has_gpu and task_class in GPU_CLASSES,
                task.gpu_memory_mb if group.has_gpu else 0)

    def _heap(self, group: _Group, gpu: bool, memory: int) -> _Heap:
        heap = group.heaps.get((gpu, memory))
        if heap is None:
            workers = self.workers
            if memory and workers.bounded:
                entries = workers.bounds(group.members, gpu, group.blocked)
            else:
                entries = workers.entries(group.members, gpu, memory, group.blocked)
            heapq.heapify(entries)
            heap = group.heaps[(gpu, memory)] = _Heap(gpu, memory, entries, len(group.log))
        return heap

    def _catch_up(self, group: _Group, heap: _Heap) -> None:
        """Take in the workers booked into the group since the heap last looked."""
        log, workers = group.log, self.workers
        for i in log[heap.seen:]:
            entry = workers.entry(i, heap.gpu, heap.memory, group.blocked)
            if entry is not None:
                heapq.heappush(heap.entries, entry)
        heap.seen = len(log)
