"""Agents: what the engine does when an agent says hello, heartbeats, reports its Celery worker
gone, or its stream closes. Losing a worker is liveness's call (engine/liveness.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from switchyard.wire import worker_id_problem, worker_labels_problem

from scheduler.core.model import WorkerType
from scheduler.engine.liveness import Liveness
from scheduler.engine.shared import Shared
from scheduler.engine.views import Welcome, WorkerRegistration
from scheduler.errors import InvalidArgument
from scheduler.fleet import Gpu, Worker
from scheduler.state.records import WorkerRecord

log = logging.getLogger("switchyard.scheduler.engine.agents")


class RegistrationWriter:
    """Writes worker registrations through one writer, so a burst of hellos (a fleet reconnecting
    after a scheduler restart) costs one Redis connection instead of one per stream.

    Each caller waits until its own registration is durable. Registrations that arrive while a
    write is under way are collected and go out together in the next one; a worker registering
    twice meanwhile is written once, with its latest registration.
    """

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._unwritten: dict[str, WorkerRecord] = {}
        self._next_written: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def remember(self, record: WorkerRecord) -> None:
        """Return once `record` is stored; raises what the store raised for its write."""
        self._unwritten[record.worker_id] = record
        if self._next_written is None:
            self._next_written = asyncio.get_running_loop().create_future()
            # Retrieved here so a write failure whose waiters all left is not logged as unhandled.
            self._next_written.add_done_callback(lambda f: f.cancelled() or f.exception())
        written = self._next_written
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="switchyard-worker-registrations")
        # Shielded: a hello that gives up must not cancel the write other hellos wait for.
        await asyncio.shield(written)

    async def _write_all(self) -> None:
        while self._unwritten:
            batch, self._unwritten = self._unwritten, {}
            written, self._next_written = self._next_written, None
            assert written is not None
            try:
                for record in batch.values():
                    await self.shared.state.controls.remember_worker(record)
            except Exception as exc:
                written.set_exception(exc)
            else:
                written.set_result(None)


class Agents:
    """The engine side of the AgentGateway stream."""

    def __init__(self, shared: Shared, liveness: Liveness) -> None:
        self.shared = shared
        self.liveness = liveness
        self.registrations = RegistrationWriter(shared)

    async def hello(self, hello: WorkerRegistration) -> tuple[Worker, Welcome]:
        """Register (or re-register) a worker; its stream's session number fences older streams."""
        problem = worker_id_problem(hello.worker_id)
        if problem is not None:
            raise InvalidArgument(problem)
        if hello.slots < 1:
            raise InvalidArgument("slots must be at least 1 (the Celery worker's --concurrency)")
        problem = worker_labels_problem(hello.labels)
        if problem is not None:
            raise InvalidArgument(f"worker {hello.worker_id} labels: {problem}")
        shared = self.shared
        worker_type = hello.worker_type or (WorkerType.GPU if hello.gpus else WorkerType.CPU)
        existing = shared.fleet.get(hello.worker_id)
        if (existing is not None and not existing.lost and existing.agent_instance and hello.agent_instance
                and existing.agent_instance != hello.agent_instance):
            # Same worker id, new agent process: the old one died with whatever ran on it. Move
            # that back to pending now; its late claims and reports are fenced by attempt.
            await self.liveness.declare_lost(existing, "its agent restarted (a new agent process said hello)")
        rejoined = existing is not None and existing.lost
        if existing is None or existing.lost:
            worker = Worker(hello.worker_id, worker_type, hello.slots)
            shared.fleet.add(worker)
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
        worker.registered_tasks = shared.fleet.task_set(hello.registered_tasks)
        worker.agent_instance = hello.agent_instance
        worker.connected = True
        worker.disconnected_at = None
        worker.session += 1
        worker.last_heartbeat = shared.monotonic()
        worker.last_heartbeat_wall = shared.clock()
        await self.registrations.remember(
            WorkerRecord(worker.worker_id, worker_type, hello.slots, dict(hello.labels),
                         tuple(gpu.memory_total_mb for gpu in hello.gpus), hello.agent_instance)
        )
        log.info("worker %s connected (%s, %d slot(s), %d GPU(s)%s, %s)%s", worker.worker_id,
                 worker_type.value, hello.slots, len(hello.gpus),
                 ", simulated" if hello.gpu_simulated else "",
                 f"{len(worker.registered_tasks)} registered task name(s)" if worker.registered_tasks
                 else "registered task names not reported",
                 " after being lost" if rejoined else "")
        shared.kick.set()
        settings = shared.settings
        return worker, Welcome(
            session=worker.session,
            heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
            state_redis_url=settings.worker_state_redis_url,
            key_prefix=settings.key_prefix,
            rejoined_after_loss=rejoined,
        )

    def heartbeat(
        self, worker_id: str, session: int, load: Any, gpus: Sequence[Gpu],
        labels: Mapping[str, str], labels_replaced: bool,
        running: AbstractSet[tuple[str, int]] | None = None,
    ) -> None:
        """Fresh load, GPU use and labels; a worker declared lost that heartbeats again rejoins empty.

        `running`, the (task id, attempt) pairs the agent says execute now (None: not said),
        dates each attempt it leaves out; liveness takes back a running one left out too long."""
        shared = self.shared
        worker = shared.fleet.get(worker_id)
        if worker is None or worker.session != session:
            return
        if worker.lost:
            # A frozen worker came back after its work moved on: it rejoins empty-handed, and
            # whatever still sits in its queue is fenced off.
            log.warning("worker %s is back after being declared lost; it rejoins with no tasks", worker_id)
            worker.lost = False
            worker.draining = False
            worker.in_flight.clear()
            shared.kick.set()
        worker.connected = True
        worker.disconnected_at = None
        worker.last_heartbeat = shared.monotonic()
        worker.last_heartbeat_wall = shared.clock()
        worker.load = load
        if running is not None:
            self._note_unreported(worker, running)
        by_index = {g.index: g for g in gpus}
        for gpu in worker.gpus:
            fresh = by_index.get(gpu.index)
            if fresh is not None:
                gpu.memory_free_mb = fresh.memory_free_mb
                gpu.utilization_percent = fresh.utilization_percent
        if labels_replaced or labels:
            wanted = dict(labels) if labels_replaced else {**worker.labels, **labels}
            problem = worker_labels_problem(wanted)
            if problem is None:
                worker.labels = wanted
                shared.kick.set()
            elif problem != worker.refused_labels:  # said once, not at every heartbeat
                log.warning("worker %s: label change refused, its labels stay as they were: %s", worker_id, problem)
            worker.refused_labels = problem or ""

    def _note_unreported(self, worker: Worker, running: AbstractSet[tuple[str, int]]) -> None:
        now = worker.last_heartbeat
        for item in worker.in_flight.values():
            if (item.task_id, item.attempt) in running:
                item.unreported_since = None
            elif item.unreported_since is None:
                item.unreported_since = now

    async def worker_exited(self, worker_id: str, session: int, exit_code: int, reason: str) -> None:
        """The agent says its Celery worker is gone: the worker is lost at once."""
        worker = self.shared.fleet.get(worker_id)
        if worker is None or worker.session != session or worker.lost:
            return
        await self.liveness.declare_lost(worker, f"its Celery worker exited ({exit_code}: {reason})")

    async def credentials_revoked(self, worker_id: str, session: int) -> None:
        """The agent's stream was ended because its token was revoked: it cannot reconnect, so the
        worker is lost at once and its work fails over (no grace period to wait out)."""
        worker = self.shared.fleet.get(worker_id)
        if worker is None or worker.session != session or worker.lost:
            return
        await self.liveness.declare_lost(worker, "its agent's token was revoked")

    def stream_closed(self, worker_id: str, session: int) -> None:
        """The stream dropped: the worker has the grace period to reconnect before it is lost."""
        worker = self.shared.fleet.get(worker_id)
        if worker is None or worker.session != session or worker.lost or not worker.connected:
            return
        worker.connected = False
        worker.disconnected_at = self.shared.monotonic()
        log.warning("worker %s stream closed; declaring it lost in %.1fs unless it reconnects",
                    worker_id, self.shared.settings.lost_grace_seconds)
