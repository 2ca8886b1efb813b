"""Leadership: any number of schedulers may share one Redis; the one holding the lease leads.

Each scheduler process runs `Leadership.run`: about every `lease/3` seconds the leader renews
the lease (scripts/lease.lua), and a standby tries to take it every `STANDBY_POLL_SECONDS`, so
a lease handed back (SIGTERM) is taken over at once and an expired one (the leader died)
within the lease time. Taking the lease gives a new fencing token; every state-changing script
carries it (connection.Fence, scripts/fence.lua), so a deposed leader's late writes bounce.

A term of leadership is one `Engine`: built and recovered from Redis when the lease is taken,
stopped when it is lost. Losing it has three causes, all handled the same way (stop writing,
stop the engine, close agent streams, become a standby): another scheduler holds the lease,
this one could not renew it before it may have expired (by this process's own clock), or a
write bounced as fenced.

While Redis cannot be reached the scheduler does not serve (health NOT_SERVING, RPCs answer
UNAVAILABLE naming the Redis address) and logs each attempt; a leader keeps its term through an
outage shorter than the lease. When Redis comes back with a new data-set id (it lost its data)
the scheduler says so once, loudly, and the next term starts from the empty store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from enum import StrEnum

from scheduler.engine import Engine, cancel_and_wait
from scheduler.errors import NotLeader, StateUnavailable
from scheduler.state.lease import LeaseView
from scheduler.state.store import RedisState

log = logging.getLogger("switchyard.scheduler.leadership")

STANDBY_POLL_SECONDS = 0.2
"""How often a standby tries to take the lease: the takeover time after a clean hand-back."""
OUTAGE_RETRY_SECONDS = (0.5, 1.0, 2.0)
"""Waits between attempts while the state store cannot be reached (the last one repeats)."""
SAFETY_MARGIN = 0.2
"""Part of the lease a leader never counts on (clock drift, the renewal's own round trip)."""


class Role(StrEnum):
    """Where this scheduler stands."""

    WAITING = "waiting for the state store"
    STANDBY = "standby"
    TAKING_OVER = "taking over"
    LEADING = "leading"
    STOPPED = "stopped"


def advertised(address: str, bound_port: int) -> str:
    """HOST:PORT others reach a scheduler listening on `address` at (bound port, real host name)."""
    host, _sep, _port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"


class Leadership:
    """This process's side of the lease: its role, its engine while it leads, and why not."""

    def __init__(
        self,
        state: RedisState,
        build_engine: Callable[[], Engine],
        address: str,
        lease_seconds: float,
        on_serving: Callable[[bool], None] = lambda serving: None,
    ) -> None:
        self.state = state
        self.address = address
        self.holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.role = Role.WAITING
        self.engine: Engine | None = None
        self.leader_address = ""
        self.instance = ""
        self.outage: StateUnavailable | None = None
        self._build_engine = build_engine
        self._lease_seconds = lease_seconds
        self._on_serving = on_serving
        self._serving = False
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._term: asyncio.Task[None] | None = None
        self._attempts = 0
        state.fence.on_lost = self._wake.set
        state.fence.drop()

    # --- what the servicers see -------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """True while this scheduler leads with a running engine and a reachable Redis."""
        return self.role is Role.LEADING and self.engine is not None and self.outage is None

    def current(self) -> Engine:
        """The engine to answer a request with; raises what a client should be told otherwise."""
        if self.outage is not None:
            raise StateUnavailable(str(self.outage))
        if self.role is Role.LEADING and self.engine is not None:
            return self.engine
        if self.role is Role.TAKING_OVER:
            raise NotLeader(f"this scheduler ({self.address}) is taking over as leader; retry in a moment",
                            self.address)
        if self.role is Role.STANDBY and self.leader_address:
            raise NotLeader(f"this scheduler ({self.address}) is a standby; the leader is at {self.leader_address}",
                            self.leader_address)
        if self.role is Role.STANDBY:
            raise NotLeader(f"this scheduler ({self.address}) is a standby and no leader is elected yet; "
                            "retry in a moment")
        if self.role is Role.STOPPED:
            raise NotLeader(f"this scheduler ({self.address}) is shutting down; retry on the leader")
        raise StateUnavailable(f"this scheduler has not reached its state store at {self.state.location} yet; "
                               "check that Redis is running and reachable — the request can be retried")

    async def wait_changed(self) -> None:
        """Return at the next change of role or serving state (tests and start-up wait on it)."""
        self._changed.clear()
        await self._changed.wait()

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Take, renew and lose the lease until cancelled (see the module docstring)."""
        while self.role is not Role.STOPPED:
            wait = await self._tick()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _tick(self) -> float:
        """One claim of the lease; returns how long to wait before the next."""
        sent_at = time.monotonic()
        try:
            # A Redis that hangs (paused, partitioned) must read as an outage within the lease.
            view = await asyncio.wait_for(
                self.state.lease.claim(self.holder, self.address, self._lease_seconds, uuid.uuid4().hex),
                self._lease_seconds / 3,
            )
        except TimeoutError:
            return await self._unreachable(StateUnavailable(
                f"the state store at {self.state.location} did not answer within {self._lease_seconds / 3:.1f}s; "
                "check that Redis is running and reachable — the request can be retried"))
        except StateUnavailable as exc:
            return await self._unreachable(exc)
        reread = False
        if self.outage is not None:
            log.warning("the state store at %s answers again", self.state.location)
            self.outage = None
            # Writes whose replies were lost, or a replica promoted without the last writes
            # (Sentinel): memory may no longer match the store. Read it again.
            reread = self.role in (Role.LEADING, Role.TAKING_OVER)
        self._attempts = 0
        self._notice_instance(view)
        if view.held and reread and view.token == self.state.fence.token:
            log.info("re-reading state after the outage (same term, fencing token %s)", view.token)
            await self._end_term()
            self._take_over(view, sent_at)
        elif view.held and self.role in (Role.LEADING, Role.TAKING_OVER) and view.token == self.state.fence.token:
            self.state.fence.hold(view.token, sent_at + self._lease_seconds - SAFETY_MARGIN)
        elif view.held:
            if self.role in (Role.LEADING, Role.TAKING_OVER):
                await self._step_down("the lease was taken again under a new fencing token")
            self._take_over(view, sent_at)
        else:
            if self.role in (Role.LEADING, Role.TAKING_OVER):
                await self._step_down(f"the scheduler at {view.leader_address or '?'} holds the lease now")
            if self.role is not Role.STANDBY or view.leader_address != self.leader_address:
                log.info("standing by: the leader is %s", view.leader_address or "not elected yet")
            self.role, self.leader_address = Role.STANDBY, view.leader_address
        self._publish()
        return self._lease_seconds / 3 if self.role in (Role.LEADING, Role.TAKING_OVER) else STANDBY_POLL_SECONDS

    async def _unreachable(self, exc: StateUnavailable) -> float:
        wait = OUTAGE_RETRY_SECONDS[min(self._attempts, len(OUTAGE_RETRY_SECONDS) - 1)]
        self._attempts += 1
        self.outage = exc
        log.warning("%s (attempt %d; not serving; next try in %.1fs)", exc, self._attempts, wait)
        if self.role in (Role.LEADING, Role.TAKING_OVER) and time.monotonic() > self.state.fence.valid_until:
            await self._step_down("the lease could not be renewed before it may have expired")
            self.role = Role.WAITING
        self._publish()
        return wait

    def _notice_instance(self, view: LeaseView) -> None:
        if self.instance and view.instance != self.instance:
            log.error("STATE LOST: the state store at %s came back without its data (data set %s, was %s); "
                      "tasks submitted before are gone, workers' reports about them are dropped; "
                      "new work is accepted", self.state.location, view.instance, self.instance)
        self.instance = view.instance

    def _take_over(self, view: LeaseView, sent_at: float) -> None:
        log.info("took the leader lease (fencing token %s); recovering state", view.token)
        self.role, self.leader_address = Role.TAKING_OVER, self.address
        self.state.fence.hold(view.token, sent_at + self._lease_seconds - SAFETY_MARGIN)
        self._term = asyncio.create_task(self._lead(), name="leadership-term")

    async def _lead(self) -> None:
        engine = self._build_engine()
        try:
            await engine.start()
        except StateUnavailable as exc:
            log.warning("could not take over: %s", exc)
            await engine.stop()
            self.state.fence.drop()
            self.role = Role.WAITING
            self._wake.set()
            return
        self.engine, self.role = engine, Role.LEADING
        log.info("leading: serving on %s", self.address)
        self._publish()

    async def _step_down(self, reason: str) -> None:
        log.warning("stepping down as leader: %s", reason)
        self.state.fence.drop()
        await self._end_term()
        self.role, self.leader_address = Role.STANDBY, ""
        self._publish()

    async def _end_term(self) -> None:
        term, self._term = self._term, None
        if term is not None:
            await cancel_and_wait([term])
        engine, self.engine = self.engine, None
        if engine is not None:
            await engine.stop()

    async def resign(self) -> None:
        """Stop serving, stop the engine (its counters written), hand the lease back at once."""
        was_leading = self.role in (Role.LEADING, Role.TAKING_OVER)
        self.role = Role.STOPPED
        self._publish()
        self._wake.set()
        await self._end_term()
        self.state.fence.drop()
        if was_leading:
            try:
                await self.state.lease.release(self.holder, uuid.uuid4().hex)
                log.info("handed the leader lease back")
            except StateUnavailable as exc:
                log.warning("could not hand the lease back (a standby takes over when it expires): %s", exc)

    def _publish(self) -> None:
        serving = self.serving
        if serving != self._serving:
            self._serving = serving
            self._on_serving(serving)
        self._changed.set()
