"""Listing tasks (ListTasks, `switchyard tasks`, GET /api/v1/tasks): newest first, filtered by
state, queue, worker and task name, a page at a time; and the upkeep of the index it pages through.

Where a page comes from:

* only in-flight states asked for (dispatched and/or running: the "active tasks" view, like
  `celery inspect active`): the fleet's ledgers in memory, then one read of those tasks'
  records. No kept task is scanned, however many there are.
* only pending: `P:pending`, scored by submission sequence like the next one.
* anything else: `P:tasks`, every kept task by submission sequence (written by the submit
  script), read newest first in chunks, each chunk's records in one round trip, filtered here.
  One call examines at most `SCAN_BUDGET` entries: a filter that matches few of many kept tasks
  returns a short (even empty) page with a next-page token, and the caller reads on.

"Newest first" is submission order (the sequence every accepted task gets), and the page token
is the sequence of the last task examined, wrapped so callers treat it as opaque. Pages are not
a snapshot: a task that changes state between two pages may show up on both or on neither.

The `P:tasks` index outlives the task hashes it names: a finished task's hash expires after the
result TTL (dead letters after theirs), its entry does not (a purged dead letter's entry goes
with it). A listing skips such entries, and `sweep` (run by the engine) walks the index oldest
first, a chunk a second (ten a second while half a chunk or more turns out expired), and drops
them. It looks only at tasks submitted longer ago than the shorter of the two TTLs, since no
younger hash can have expired: a pass ends at the first younger entry (entries are in submission
order) and the next starts from the oldest after `SWEEP_IDLE_SECONDS`. So while every task is
younger than the retention the sweep reads one chunk per pass and drops nothing, and later it
reads little more than what has had time to expire; the index holds about what Redis still keeps
plus what expired since the sweep last passed. A TTL raised since tasks finished leaves their
entries (skipped by listings) until they are older than the new one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.core.model import IN_FLIGHT_STATES, TaskState
from scheduler.engine.shared import Shared
from scheduler.engine.views import TaskView
from scheduler.errors import InvalidArgument, NotFound
from scheduler.state.records import TaskRecord

log = logging.getLogger("switchyard.scheduler.engine.task_list")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
SCAN_BUDGET = 5_000
"""Index entries one ListTasks call examines at most (each costs a record read)."""
SCAN_CHUNK = 500
"""Index entries read (and records loaded) per round trip while filtering."""
SWEEP_BATCH = 1_000
"""Index entries the sweep examines per round."""
SWEEP_INTERVAL_SECONDS = 1.0
"""Pause between sweep rounds while a pass over the index is under way."""
SWEEP_BEHIND_SECONDS = 0.1
"""Pause instead when the last round dropped half a chunk or more: results expire faster than a
chunk a second (over 500 tasks a second finishing, a retention ago), and the sweep keeps up."""
SWEEP_IDLE_SECONDS = 30.0
"""Pause after a pass reached the newest entry, before the next pass starts from the oldest."""
_TOKEN_PREFIX = "sy1:"


@dataclass(frozen=True)
class TaskQuery:
    """What ListTasks asks for; every filter given must match (empty ones match everything)."""

    states: frozenset[TaskState] = frozenset()
    queue: str = ""
    worker_id: str = ""
    task_name: str = ""
    page_size: int = 0
    """0 for `DEFAULT_PAGE_SIZE`; at most `MAX_PAGE_SIZE`."""
    page_token: str = ""

    def matches(self, record: TaskRecord) -> bool:
        """Whether the record passes every filter."""
        return ((not self.states or record.state in self.states)
                and (not self.queue or record.queue == self.queue)
                and (not self.worker_id or record.worker_id == self.worker_id)
                and (not self.task_name or record.name == self.task_name))


@dataclass(frozen=True)
class TaskPage:
    """One page of tasks, newest first, and the token of the next ("" when none)."""

    tasks: list[TaskView]
    next_page_token: str


def page_token(seq: int) -> str:
    """The opaque token of the page that starts after the task with submission sequence `seq`."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{seq}".encode()).decode().rstrip("=")


def token_seq(token: str) -> int:
    """The submission sequence a page token continues below (0 for no token)."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        seq = int(text.removeprefix(_TOKEN_PREFIX)) if text.startswith(_TOKEN_PREFIX) else 0
    except (binascii.Error, UnicodeDecodeError, ValueError):
        seq = 0
    if seq <= 0:
        raise InvalidArgument(f"page_token {token[:40]!r} is not one ListTasks returned; "
                              "leave it empty to start from the newest task")
    return seq


class TaskList:
    """ListTasks, and the sweep that keeps its index free of expired tasks."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def _check(self, query: TaskQuery) -> int:
        """The page size to use, after checking the query; raises what a caller must fix."""
        if query.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size {query.page_size} is over the maximum of {MAX_PAGE_SIZE}; "
                                  "ask for fewer and follow next_page_token")
        if query.queue and self.shared.settings.queue(query.queue) is None:
            known = ", ".join(q.name for q in self.shared.settings.queues)
            raise NotFound(f"queue {query.queue!r} does not exist; known queues: {known}")
        return query.page_size or DEFAULT_PAGE_SIZE

    async def page(self, query: TaskQuery) -> TaskPage:
        """One page of tasks matching `query`, newest first (see the module docstring)."""
        size = self._check(query)
        before = token_seq(query.page_token)
        if query.states and query.states <= IN_FLIGHT_STATES:
            records, token = await self._in_flight(query, before, size)
        else:
            records, token = await self._scan(query, before, size, pending_only=query.states == {TaskState.PENDING})
        return TaskPage([self._view(record) for record in records], token)

    def _view(self, record: TaskRecord) -> TaskView:
        """A listed task: its stored reason (a live wait reason per task would cost a placement
        dry run each), and for a pending one its priority after aging."""
        if record.state is not TaskState.PENDING:
            return TaskView(record, record.priority)
        waited = self.shared.clock() - record.submitted_at
        return TaskView(record, self.shared.settings.aging.effective_priority(record.priority, waited))

    async def _in_flight(self, query: TaskQuery, before: int, size: int) -> tuple[list[TaskRecord], str]:
        """The page from the fleet's ledgers (every dispatched or running task is on one)."""
        fleet = self.shared.fleet
        if query.worker_id:
            owner = fleet.get(query.worker_id)
            workers = [owner] if owner is not None else []
        else:
            workers = list(fleet)
        ids = [task_id for worker in workers for task_id in worker.in_flight]
        records = sorted(
            (r for r in await self.shared.state.tasks.load(ids)
             if query.matches(r) and (not before or r.seq < before)),
            key=lambda r: r.seq, reverse=True,
        )
        page = records[:size]
        return page, page_token(page[-1].seq) if len(records) > size else ""

    async def _scan(self, query: TaskQuery, before: int, size: int, *, pending_only: bool) -> tuple[list[TaskRecord], str]:
        """The page from an index by submission sequence, newest first, within `SCAN_BUDGET`."""
        state = self.shared.state
        # With no filter beyond what the index already guarantees, every live entry matches:
        # read just a page's worth per round trip.
        unfiltered = not (query.queue or query.worker_id or query.task_name) and (
            not query.states or (pending_only and query.states == {TaskState.PENDING}))
        chunk = size if unfiltered else SCAN_CHUNK
        found: list[TaskRecord] = []
        examined, cursor = 0, before
        while examined < SCAN_BUDGET:
            wanted = min(chunk, SCAN_BUDGET - examined)
            rows = await state.indexes.newest_tasks(cursor, wanted, pending_only=pending_only)
            last_chunk = len(rows) < wanted
            records = {r.task_id: r for r in await state.tasks.load(task_id for task_id, _seq in rows)}
            for position, (task_id, seq) in enumerate(rows):
                examined, cursor = examined + 1, seq
                record = records.get(task_id)
                if record is None or not query.matches(record):
                    continue
                found.append(record)
                if len(found) == size:
                    at_end = last_chunk and position == len(rows) - 1
                    return found, "" if at_end else page_token(seq)
            if last_chunk:
                return found, ""
        return found, page_token(cursor)

    # --- index upkeep ---------------------------------------------------------------------

    async def run(self) -> None:
        """Sweep the index for ever (the engine runs this as one of its loops)."""
        after = 0
        while True:
            after, dropped = await self.sweep_once(after)
            if not after:
                await asyncio.sleep(SWEEP_IDLE_SECONDS)
            else:
                await asyncio.sleep(SWEEP_BEHIND_SECONDS if dropped * 2 >= SWEEP_BATCH else SWEEP_INTERVAL_SECONDS)

    async def sweep_once(self, after: int = 0) -> tuple[int, int]:
        """One round of the sweep from submission sequence `after`; where the next starts (0: a
        new pass from the oldest) and how many entries of gone tasks it dropped."""
        settings = self.shared.settings
        retention = min(settings.result_ttl_seconds, settings.dead_letter_ttl_seconds)
        after, dropped = await self.shared.state.indexes.sweep_task_index(
            after, SWEEP_BATCH, self.shared.clock() - retention)
        if dropped:
            log.debug("dropped %d index entries of tasks whose record expired", dropped)
        return after, dropped


def states_from_names(names: Iterable[str]) -> frozenset[TaskState]:
    """Task states by their names (`running`, as the API and the CLI spell them); InvalidArgument
    naming the valid ones for anything else."""
    states = set()
    for name in names:
        try:
            states.add(TaskState(name.strip().lower()))
        except ValueError:
            valid = ", ".join(s.value for s in TaskState)
            raise InvalidArgument(f"unknown task state {name!r}; valid states: {valid}") from None
    return frozenset(states)
