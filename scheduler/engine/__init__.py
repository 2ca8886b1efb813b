"""The engine: ties the pure core to durable state, the fleet and the dispatcher.

One part per concern, each over the `State` interface (scheduler/state/interface.py) and the
memory they share (`shared.py`):

    admission     validate, classify, accept (engine/admission.py)
    placement     late-binding rounds: plan, commit, publish (engine/placement.py)
    lifecycle     worker reports and due retries (engine/lifecycle.py)
    dead_letters  list, replay, purge, trim (engine/dead_letters.py)
    liveness      heartbeats, grace, losing a worker (engine/liveness.py)
    agents        hello, heartbeat, worker exit, stream close (engine/agents.py)
    controls      cancel, pause/resume, drain (engine/controls.py)
    queries       tasks, watch, queues, workers, explain (engine/queries.py)
    task_list     ListTasks, and the sweep of its index (engine/task_list.py)
    autoscale     worker pools' demand, for the KEDA scaler (engine/autoscale.py)
    health        the health summary of GET /api/v1/health (engine/health.py)
    recovery      rebuild memory at start (engine/recovery.py)
    gauges        Prometheus gauges (engine/gauges.py)
    stats         queue counters, written about once a second (engine/stats.py)

`Engine` builds the parts and runs their loops; the gRPC servicers call the parts directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from scheduler.dispatch import CeleryMessages
from scheduler.engine.admission import Admission
from scheduler.engine.agents import Agents
from scheduler.engine.autoscale import Autoscale
from scheduler.engine.controls import Controls
from scheduler.engine.dead_letters import DeadLetters
from scheduler.engine.gauges import Gauges
from scheduler.engine.health import Health
from scheduler.engine.lifecycle import Lifecycle
from scheduler.engine.liveness import Liveness
from scheduler.engine.placement import Placement
from scheduler.engine.queries import Queries
from scheduler.engine.recovery import recover
from scheduler.engine.shared import Shared
from scheduler.engine.task_list import TaskList
from scheduler.errors import StateUnavailable
from scheduler.metrics import Metrics
from scheduler.settings import Settings
from scheduler.state.interface import State

log = logging.getLogger("switchyard.scheduler.engine")

MAX_RESTART_DELAY_SECONDS = 5.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until every one has ended. A cancellation can be lost on Python
    3.11 (one that lands as an inner timeout fires, as inside redis-py's reads and pool), which
    left a loop running and the stop waiting for ever: cancel again until they end."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.2)
        if pending:
            log.debug("cancelling again: %s", ", ".join(sorted(task.get_name() for task in pending)))


class Engine:
    """The scheduler's behaviour, one attribute per part; `start` recovers and runs the loops."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        messages: CeleryMessages,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = Shared(settings, state, messages, metrics or Metrics(), clock, monotonic)
        self.placement = Placement(self.shared)
        self.admission = Admission(self.shared, self.placement)
        self.lifecycle = Lifecycle(self.shared, self.placement)
        self.dead_letters = DeadLetters(self.shared)
        self.liveness = Liveness(self.shared)
        self.agents = Agents(self.shared, self.liveness)
        self.queries = Queries(self.shared, self.admission)
        self.controls = Controls(self.shared, self.queries)
        self.gauges = Gauges(self.shared, self.queries)
        self.task_list = TaskList(self.shared)
        self.autoscale = Autoscale(self.shared)
        self.health = Health(self.shared, self.queries)
        self._loops: list[asyncio.Task[None]] = []
        self.stopped = asyncio.Event()
        """Set once `stop` is called: agent streams of this engine end (leadership moved)."""

    async def start(self) -> None:
        """Recover durable state, then start every loop."""
        await self.shared.state.events.ensure_group()
        await recover(self.shared)
        for name, loop in (
            ("placement", self.placement.run), ("lifecycle", self.lifecycle.run),
            ("starts", self.lifecycle.watch_starts),
            ("liveness", self.liveness.run), ("gauges", self.gauges.run),
            ("retries", self.lifecycle.run_retries), ("dead-letters", self.dead_letters.run),
            ("stats", self.shared.stats.run), ("task-index", self.task_list.run),
        ):
            self._loops.append(asyncio.create_task(self._guard(name, loop), name=name))
        self.shared.kick.set()

    async def stop(self) -> None:
        """Stop the loops and write out the queue counters kept in memory."""
        self.stopped.set()
        await cancel_and_wait(self._loops)
        self._loops.clear()
        try:
            await self.shared.stats.flush()
        except StateUnavailable as exc:
            log.warning("queue statistics of the last second not written: %s", exc)

    async def _guard(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Keep a loop alive through state-store outages and bugs: log, back off, go on."""
        delay = 0.2
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except StateUnavailable as exc:
                log.warning("%s loop: %s; retrying in %.1fs", name, exc, delay)
            except Exception:
                log.exception("%s loop crashed; restarting it in %.1fs", name, delay)
            await asyncio.sleep(delay)
            delay = min(MAX_RESTART_DELAY_SECONDS, delay * 2)
            self.shared.kick.set()
