"""Dead letters: list, replay and purge them, and keep the queue within its length and TTL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from scheduler import crashpoints
from scheduler.core.model import TaskState
from scheduler.engine.shared import Shared
from scheduler.errors import FailedPrecondition, InvalidArgument, NotFound
from scheduler.state.records import TaskRecord

TRIM_INTERVAL_SECONDS = 5.0
MAX_LISTED = 1000
DEFAULT_LISTED = 100


class DeadLetters:
    """The dead-letter queue as operators use it."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def _known_queue(self, queue: str) -> None:
        if queue and self.shared.settings.queue(queue) is None:
            raise NotFound(f"queue {queue!r} does not exist")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TRIM_INTERVAL_SECONDS)
            await self.trim()

    async def trim(self) -> int:
        """Drop dead letters beyond the configured maximum or older than their TTL."""
        shared = self.shared
        letters = await shared.state.indexes.dead_letters()
        cutoff = shared.clock() - shared.settings.dead_letter_ttl_seconds
        doomed = [tid for i, (tid, at) in enumerate(letters)
                  if i >= shared.settings.dead_letter_max or at < cutoff]
        if not doomed:
            return 0
        for task_id in doomed:
            shared.dead.pop(task_id, None)
        return await shared.state.indexes.purge_dead_letters(doomed)

    async def list(self, queue: str, limit: int) -> tuple[list[tuple[TaskRecord, float]], int]:
        """Newest first, at most `limit` (default 100, at most 1000), and how many there are in all."""
        self._known_queue(queue)
        shared = self.shared
        limit = min(MAX_LISTED, limit or DEFAULT_LISTED)
        letters = [(tid, at) for tid, at in await shared.state.indexes.dead_letters()
                   if not queue or shared.dead.get(tid) == queue]
        records = {r.task_id: r for r in await shared.state.tasks.load([tid for tid, _at in letters[:limit]])}
        return [(records[tid], at) for tid, at in letters[:limit] if tid in records], len(letters)

    async def retry(self, task_id: str) -> TaskRecord:
        """Replay one dead letter: back to pending with a fresh retry budget."""
        shared = self.shared
        record = await shared.state.tasks.get(task_id) if task_id else None
        if record is None:
            raise NotFound(f"task {task_id!r} does not exist (or its dead letter expired)")
        if record.state is not TaskState.DEAD_LETTERED:
            raise FailedPrecondition(f"task {task_id} is {record.state}, not dead-lettered")
        crashpoints.reached("deadletter:replay:before")
        promoted = await shared.state.tasks.promote(task_id, TaskState.DEAD_LETTERED, "replayed from dead letters")
        crashpoints.reached("deadletter:replay:after")
        if promoted is None:
            raise FailedPrecondition(f"task {task_id} changed state; try again")
        shared.dead.pop(task_id, None)
        shared.back_to_pending(promoted)
        return promoted

    async def purge(self, task_ids: Sequence[str], queue: str, purge_all: bool) -> int:
        if not task_ids and not queue and not purge_all:
            raise InvalidArgument("say what to purge: task_ids, a queue, or all=true")
        self._known_queue(queue)
        shared = self.shared
        chosen = list(task_ids) or [tid for tid, q in shared.dead.items() if purge_all or q == queue]
        for task_id in chosen:
            shared.dead.pop(task_id, None)
        crashpoints.reached("deadletter:purge:before")
        return await shared.state.indexes.purge_dead_letters(chosen)
