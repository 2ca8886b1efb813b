"""The pending index: every pending task in memory, in exact effective-priority order.

Redis (`P:pending` and the task hashes) is the truth; this index follows every transition the
engine makes and is rebuilt from Redis at start-up (engine/recovery.py).
"""

from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from collections.abc import Iterator, Sequence

from scheduler.core.model import PendingTask
from scheduler.core.ordering import AgingPolicy


def _seq(task: PendingTask) -> int:
    return task.seq


class PendingIndex:
    """Pending tasks in memory: one list per (queue, base priority), oldest first.

    Within one such list, aging raises the older tasks at least as much as the newer ones, so
    each list is also in effective-priority order; merging the lists by (effective priority,
    submission order) gives the exact global order at any moment.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, PendingTask] = {}
        # The lists hold the tasks themselves, ordered by seq: no per-task tuple or key object
        # (memory per pending task matters at a million of them).
        self._lists: dict[tuple[str, int], list[PendingTask]] = defaultdict(list)
        self._depth: dict[str, int] = defaultdict(int)

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __iter__(self) -> Iterator[PendingTask]:
        """Every pending task, in no particular order (take a list before awaiting anything)."""
        return iter(self._tasks.values())

    def get(self, task_id: str) -> PendingTask | None:
        return self._tasks.get(task_id)

    def add(self, task: PendingTask) -> None:
        if task.task_id in self._tasks:
            self.remove(task.task_id)
        self._tasks[task.task_id] = task
        entries = self._lists[(task.queue, task.priority)]
        if not entries or entries[-1].seq < task.seq:
            entries.append(task)  # the usual case: newest last
        else:
            bisect.insort(entries, task, key=_seq)
        self._depth[task.queue] += 1

    def remove(self, task_id: str) -> None:
        task = self._tasks.pop(task_id, None)
        if task is None:
            return
        entries = self._lists[(task.queue, task.priority)]
        pos = bisect.bisect_left(entries, task.seq, key=_seq)
        while pos < len(entries) and entries[pos].seq == task.seq:
            if entries[pos] is task:
                del entries[pos]
                break
            pos += 1
        self._depth[task.queue] -= 1

    def depth(self, queue: str) -> int:
        return self._depth.get(queue, 0)

    def ahead_of(self, task: PendingTask, aging: AgingPolicy, now: float) -> int:
        """How many tasks of the same queue would be placed before this one."""
        mine = (-aging.effective_priority(task.priority, now - task.submitted_at), task.seq)
        count = 0
        for (queue, _level), entries in self._lists.items():
            if queue != task.queue:
                continue
            for other in entries:
                key = (-aging.effective_priority(other.priority, now - other.submitted_at), other.seq)
                if key < mine:
                    count += 1
                else:
                    break
        return count

    def in_order(self, queues: Sequence[str], aging: AgingPolicy, now: float) -> Iterator[PendingTask]:
        """Pending tasks of the given queues in one effective-priority order."""
        wanted = set(queues)

        def order(task: PendingTask) -> tuple[int, int]:
            return (-aging.effective_priority(task.priority, now - task.submitted_at), task.seq)

        lists = [entries for (queue, _level), entries in self._lists.items() if queue in wanted and entries]
        yield from heapq.merge(*lists, key=order)
