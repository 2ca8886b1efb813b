"""Following the leader among several schedulers, as a state machine that does no I/O.

One logical call that failed with a retryable status gets a :class:`Failover`; each failure is
fed to :meth:`Failover.next_try`, which answers where to try next and how long to wait first, or
raises when the time is up. It never sleeps itself: the synchronous client
(:mod:`switchyard._connection`) sleeps the delay, the asyncio client (:mod:`switchyard.aio`)
awaits it, so both follow exactly the same rules:

* a standby names the leader (``switchyard-leader`` metadata): go there next when it is one of
  the client's addresses; a leader outside the list is tried last in the round;
* otherwise the next address of the list not yet tried in this round;
* when every address of a round has failed: back off (doubling from
  :data:`RETRY_FIRST_DELAY` to :data:`RETRY_MAX_DELAY`, "equal jitter") and start a new round,
  until ``failover_timeout`` seconds have passed since the first failure;
* a client that has never reached a scheduler gets one round and no waiting, so a wrong address
  is reported at once instead of retried for 30 s.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from switchyard.exceptions import SwitchyardError

__all__ = [
    "RETRY_FIRST_DELAY",
    "RETRY_MAX_DELAY",
    "Failover",
    "NextTry",
    "SchedulerSet",
    "retry_delay",
    "should_retry",
]

RETRY_FIRST_DELAY = 0.1
"""Backoff after the first round in which every address failed, seconds (before jitter)."""
RETRY_MAX_DELAY = 2.0
"""The backoff doubles each round up to this, seconds."""

log = logging.getLogger("switchyard.client")


class SchedulerSet(Protocol):
    """What a :class:`Failover` reads from (and marks on) the connection it works for."""

    addresses: tuple[str, ...]
    """Every scheduler address, in the order they are tried."""
    failover_timeout: float
    """Seconds a call keeps trying after its first failure (0: one round, no waiting)."""
    _reached: bool
    """True once any scheduler answered this connection (a standby's refusal counts)."""


@dataclass(frozen=True)
class NextTry:
    """Where a failed call goes next, and how long to wait before it goes."""

    address: str
    """The scheduler address to try."""
    delay: float
    """Seconds to wait first (0 within a round; the backoff between rounds)."""


def should_retry(error: SwitchyardError, repeatable: bool) -> bool:
    """Whether a call that failed with ``error`` goes on to another try: always after
    ``UNAVAILABLE`` (nothing ran, or a standby refused), after ``DEADLINE_EXCEEDED`` only when
    the call is ``repeatable`` (running it twice does no harm), never after anything else."""
    if error.status_code is grpc.StatusCode.UNAVAILABLE:
        return True
    return repeatable and error.status_code is grpc.StatusCode.DEADLINE_EXCEEDED


def retry_delay(round_number: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Backoff before round ``round_number`` + 1 (0-based): doubling up to a cap, with "equal
    jitter" (half fixed, half random) so many clients losing one scheduler do not return in step."""
    ceiling = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2.0**round_number)
    return ceiling / 2 + uniform(0, ceiling / 2)


class Failover:
    """One logical call's way through the scheduler addresses after a failure.

    ``clock`` (monotonic seconds) and ``uniform`` (the jitter) are there for tests; the clients
    use the defaults. ``announce_at_once`` logs the loss on the first failure (a watch that was
    delivering); otherwise it is logged when a whole round has failed, so a call that finds the
    leader on its second try stays quiet.
    """

    def __init__(
        self,
        connection: SchedulerSet,
        *,
        announce_at_once: bool = False,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.connection = connection
        self.clock = clock
        self.uniform = uniform
        self.deadline = clock() + connection.failover_timeout
        self.announce_at_once = announce_at_once
        self.tried: list[str] = []
        """Addresses tried in the current round."""
        self.ever_tried: list[str] = []
        """Every address tried or named, in order, for the final error message."""
        self.rounds = 0
        self.attempts = 0
        self.announced = False

    def next_try(self, failed: str, error: SwitchyardError, hint: str | None) -> NextTry:
        """Where to try after ``failed`` answered ``error`` (naming ``hint`` as the leader), and
        how long to wait first.

        Raises when the time is up: ``error`` itself after a single attempt, otherwise an error
        of the same kind that names every address tried.
        """
        self.attempts += 1
        for address in (failed, hint):
            if address and address not in self.ever_tried:
                self.ever_tried.append(address)
        if failed not in self.tried:
            self.tried.append(failed)
        if hint:
            self.connection._reached = True  # a standby answered: the schedulers are there
        log.debug("scheduler at %s: %s%s", failed, error, f" (leader: {hint})" if hint else "")
        if self.announce_at_once and not self.announced:
            self._announce(failed, error)
        patient = self.connection._reached and self.connection.failover_timeout > 0
        address = self._untried(failed, hint)
        if address is not None and (self.clock() < self.deadline or not patient):
            return NextTry(address, 0.0)
        # Every address failed in this round (or the time is up).
        remaining = self.deadline - self.clock()
        if not patient or remaining <= 0:
            raise self._gave_up(failed, error, patient)
        if not self.announced:
            self._announce(failed, error)
        delay = min(retry_delay(self.rounds, self.uniform), remaining)
        self.rounds += 1
        self.tried.clear()
        next_round = self._untried(failed, hint)
        assert next_round is not None  # with nothing tried, some address is untried
        return NextTry(next_round, delay)

    def recovered(self, address: str) -> None:
        """``address`` answered after the failure; say so if the failure was announced."""
        if self.announced:
            log.info("reconnected to %s", address)

    def _announce(self, address: str, error: SwitchyardError) -> None:
        self.announced = True
        log.warning("lost the scheduler at %s (%s); reconnecting...", address, error)

    def _untried(self, failed: str, hint: str | None) -> str | None:
        addresses = self.connection.addresses
        if hint in addresses and hint not in self.tried:
            return hint
        start = addresses.index(failed) + 1 if failed in addresses else 0
        for offset in range(len(addresses)):
            address = addresses[(start + offset) % len(addresses)]
            if address not in self.tried:
                return address
        # A leader the client was not told about: maybe an address only its peers can reach.
        if hint and hint not in self.tried:
            return hint
        return None

    def _gave_up(self, failed: str, error: SwitchyardError, patient: bool) -> SwitchyardError:
        if self.attempts == 1:
            return error
        within = f" within {self.connection.failover_timeout:g} s" if patient else ""
        message = (
            f"no scheduler at {', '.join(self.ever_tried)} could serve the call{within}; "
            f"the last, {failed}, answered: {error.message}"
        )
        return type(error)(message, status_code=error.status_code)
