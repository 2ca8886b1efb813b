"""Retry policy: how a failed task is retried, and whether it ends dead-lettered or failed.

A policy is a frozen dataclass built once from configuration; `decide_retry` is a plain function
over it. Nothing here draws randomness: the jitter's number in [0, 1) is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Backoff(StrEnum):
    """How the delay grows from one retry to the next."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed task is retried, and whether it is dead-lettered at the end."""

    name: str
    """Name tasks and queues refer to."""
    max_retries: int = 0
    """Retries after the first failure (0 = never retried)."""
    backoff: Backoff = Backoff.EXPONENTIAL
    """exponential: base * multiplier**(n-1); linear: base * n ... both capped at max_delay."""
    base_delay_seconds: float = 60.0
    """Delay before the first retry."""
    multiplier: float = 2.0
    """Growth factor per retry (exponential only)."""
    max_delay_seconds: float = 3600.0
    """Cap on any single delay."""
    jitter: float = 0.1
    """Random spread of each delay, as a fraction (0.1 = +-10%); avoids retry stampedes."""
    non_retryable: frozenset[str] = frozenset()
    """Exception types that skip retries and go straight to the end state: the bare class name
    ("ValueError", "BadInput") or the qualified one ("app.errors.BadInput")."""
    dead_letter: bool = True
    """At the end: dead-letter (kept for inspection and replay) rather than plain failed."""

    def nominal_delay(self, retry_number: int) -> float:
        """Delay before retry number `retry_number` (1-based), without jitter."""
        n = max(1, retry_number)
        if self.backoff is Backoff.LINEAR:
            raw = self.base_delay_seconds * n
        else:
            raw = self.base_delay_seconds * self.multiplier ** (n - 1)
        return min(raw, self.max_delay_seconds)

    def delay_bounds(self, retry_number: int) -> tuple[float, float]:
        """Smallest and largest delay jitter can produce for that retry.

        Jitter spreads the nominal delay both ways, but never past `max_delay_seconds`: the cap
        is a promise about every single wait, so a capped retry waits within [nominal*(1-j), cap].
        """
        nominal = self.nominal_delay(retry_number)
        return nominal * (1 - self.jitter), min(nominal * (1 + self.jitter), self.max_delay_seconds)

    def delay(self, retry_number: int, unit_random: float) -> float:
        """Delay with jitter; `unit_random` is a number in [0, 1)."""
        low, high = self.delay_bounds(retry_number)
        return low + (high - low) * unit_random


NO_RETRY = RetryPolicy("none", max_retries=0, dead_letter=False)
"""Built in, for opting out: a failure is final and the task ends `failed`."""

DEFAULT_RETRY = RetryPolicy(
    "default",
    max_retries=2,
    backoff=Backoff.EXPONENTIAL,
    base_delay_seconds=2.0,
    multiplier=2.0,
    max_delay_seconds=60.0,
    jitter=0.5,
    dead_letter=True,
)
"""Built in, and the policy tasks get out of the box: three attempts in all, the retries after
about 2 s and 4 s (each spread +-50 % so failures that struck together do not retry together,
never over 60 s), then the task is dead-lettered, kept for inspection and replay."""

BUILTIN_RETRY_POLICIES: Mapping[str, RetryPolicy] = MappingProxyType(
    {NO_RETRY.name: NO_RETRY, DEFAULT_RETRY.name: DEFAULT_RETRY}
)
"""The policies every configuration holds; a config file may redefine `default`, never `none`."""


class RetryAction(StrEnum):
    """What follows a failure."""

    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    FAIL = "fail"


@dataclass(frozen=True)
class RetryDecision:
    """The outcome of one failure under a policy, with the reason in words."""

    action: RetryAction
    delay_seconds: float
    """Wait before the retry (0 unless the action is RETRY)."""
    reason: str


def decide_retry(policy: RetryPolicy, failures: int, error_type: str, unit_random: float,
                 qualified_type: str = "") -> RetryDecision:
    """What happens after a task's `failures`-th failure (1-based).

    `error_type` is the exception's class name, `qualified_type` its `module.QualName`.
    """
    end = RetryAction.DEAD_LETTER if policy.dead_letter else RetryAction.FAIL
    names = {error_type, qualified_type, error_type.rsplit(".", 1)[-1]} - {""}
    if names & policy.non_retryable:
        return RetryDecision(end, 0.0, f"{error_type} is not retryable under policy {policy.name}")
    if failures > policy.max_retries:
        return RetryDecision(
            end, 0.0, f"failed {failures} time(s); policy {policy.name} allows {policy.max_retries} retr(ies)"
        )
    delay = policy.delay(failures, unit_random)
    return RetryDecision(
        RetryAction.RETRY, delay,
        f"retry {failures} of {policy.max_retries} under policy {policy.name} in {delay:.1f}s",
    )


NOT_REGISTERED = "NotRegistered"
"""`error_type` of a failed report from a worker whose Celery app does not register the task's
name (its `task_unknown` / `task_rejected` signals fired). No retry policy applies: another
attempt would fail the same way, so the task ends failed at once."""

NOT_STARTED = "NotStarted"
"""`error_type` of a task that ended failed because its hand-outs kept missing the start deadline
(`start_deadline_seconds`, `start_deadline_returns`); set by the scheduler, never by a worker."""
