"""The fleet simulator's priority check: counts hand-outs that overtook a higher-priority task.

With one queue, equal workers and aging off, "could run on the same worker" always holds and the
effective priority is the base priority. Two things can be observed exactly:

* Known pending. Task B was certainly pending from `acked_at` on, the moment the submitter had
  the scheduler's reply (the scheduler indexes a task before it answers). Task A was handed out
  by the round whose clock read is A's `dispatched_at` (a round reads the clock, then plans
  without yielding). So B of higher priority, acknowledged before A's `dispatched_at` and handed
  out by a later round (or never), was skipped by the round that took A.
* Same submission. Tasks of one SubmitBatch call are accepted atomically, so they are pending
  from the same moment: if A is handed out before B (an earlier `dispatched_at`: e.g. a hand-out
  made in the submit round itself) while B of the same call has a higher priority, A overtook B.

Hand-outs of one round share their `dispatched_at` and are never counted against each other.
Pending tasks that are neither acknowledged nor of the same call are not counted, so the count
errs low, never high. All times are `time.time()` of one machine. A hand-out that overtook an
older task of its own priority (lower submission sequence) under the same rules is a FIFO
inversion. Each hand-out is counted at most once per kind.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

_REMOVE, _QUERY, _ADD = 0, 1, 2
"""Event order at equal times: a task handed out at t is gone for a query at t; one acknowledged at
t is not yet known pending at t (both conditions are strict)."""


@dataclass(frozen=True)
class HandOutRecord:
    """One task as the check needs it."""

    task_id: str
    priority: int
    seq: int
    acked_at: float
    dispatched_at: float
    """0.0 (or less) when the task was never handed out."""
    call: int = -1
    """The SubmitBatch call it was accepted in (-1: unknown)."""

    @property
    def handed(self) -> float:
        return self.dispatched_at if self.dispatched_at > 0 else math.inf


@dataclass(frozen=True)
class OrderReport:
    """What the check found."""

    checked: int
    priority_inversions: int
    """Hand-outs that overtook a higher-priority task known pending or of the same call."""
    fifo_inversions: int
    """Hand-outs that overtook an older task of the same priority, under the same rules."""
    same_call_inversions: int
    """Of `priority_inversions`, those found by the same-submission rule."""
    examples: tuple[str, ...]
    """A few inversions in words."""


def count_inversions(tasks: Sequence[HandOutRecord], example_limit: int = 3) -> OrderReport:
    """Both rules over every hand-out."""
    known_prio, known_fifo, examples = _known_pending(tasks, example_limit)
    call_prio, call_fifo = _same_call(tasks)
    for index in sorted(call_prio - known_prio)[:max(0, example_limit - len(examples))]:
        task = tasks[index]
        examples.append(f"task {task.task_id} (priority {task.priority}) handed out at {task.dispatched_at:.6f} "
                        f"before a higher-priority task of the same SubmitBatch call {task.call}")
    return OrderReport(len(tasks), len(known_prio | call_prio), len(known_fifo | call_fifo),
                       len(call_prio), tuple(examples))


def _known_pending(tasks: Sequence[HandOutRecord], example_limit: int) -> tuple[set[int], set[int], list[str]]:
    """Sweep hand-outs in time order, keeping the acknowledged, not yet handed-out tasks of each
    priority."""
    events: list[tuple[float, int, int]] = []
    for index, task in enumerate(tasks):
        if task.acked_at < task.handed:
            events.append((task.acked_at, _ADD, index))
        if task.handed < math.inf:
            events.append((task.handed, _REMOVE, index))
            events.append((task.handed, _QUERY, index))
    events.sort()
    levels = sorted({t.priority for t in tasks})
    known: dict[int, int] = dict.fromkeys(levels, 0)
    oldest: dict[int, list[tuple[int, int]]] = {level: [] for level in levels}
    gone: set[int] = set()
    prio: set[int] = set()
    fifo: set[int] = set()
    examples: list[str] = []
    for _time, kind, index in events:
        task = tasks[index]
        if kind == _ADD:
            known[task.priority] += 1
            heapq.heappush(oldest[task.priority], (task.seq, index))
        elif kind == _REMOVE:
            if task.acked_at < task.handed:
                known[task.priority] -= 1
                gone.add(index)
        else:
            higher = [level for level in levels if level > task.priority and known[level] > 0]
            if higher:
                prio.add(index)
                if len(examples) < example_limit:
                    examples.append(f"task {task.task_id} (priority {task.priority}) handed out at "
                                    f"{task.dispatched_at:.6f} while {known[higher[-1]]} acknowledged task(s) "
                                    f"of priority {higher[-1]} were pending")
            heap = oldest[task.priority]
            while heap and heap[0][1] in gone:
                heapq.heappop(heap)
            if heap and heap[0][0] < task.seq:
                fifo.add(index)
    return prio, fifo, examples


def _same_call(tasks: Sequence[HandOutRecord]) -> tuple[set[int], set[int]]:
    """Within each SubmitBatch call: hand-outs made before a higher-priority (or an older,
    equal-priority) task of the same call."""
    calls: dict[int, list[int]] = defaultdict(list)
    for index, task in enumerate(tasks):
        if task.call >= 0:
            calls[task.call].append(index)
    prio: set[int] = set()
    fifo: set[int] = set()
    for members in calls.values():
        members.sort(key=lambda i: tasks[i].handed, reverse=True)
        best_later = 0
        oldest_later: dict[int, int] = {}
        position = 0
        while position < len(members):
            # One round at a time (equal times), latest first: compare with strictly later ones.
            end = position
            while end < len(members) and tasks[members[end]].handed == tasks[members[position]].handed:
                end += 1
            group = members[position:end]
            for index in group:
                task = tasks[index]
                if task.handed < math.inf and best_later > task.priority:
                    prio.add(index)
                if task.handed < math.inf and oldest_later.get(task.priority, math.inf) < task.seq:
                    fifo.add(index)
            for index in group:
                task = tasks[index]
                best_later = max(best_later, task.priority)
                oldest_later[task.priority] = min(oldest_later.get(task.priority, task.seq), task.seq)
            position = end
    return prio, fifo
