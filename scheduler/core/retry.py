"""Retry policy: how a failed task is retried, and whether it ends dead-lettered or failed.

A policy is a frozen dataclass built once from configuration; `decide_retry` is a plain function
over it. Nothing here draws randomness: the jitter's number in [0, 1) is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
        """Smallest and largest delay jitter can produce for that retry."""
        nominal = self.nominal_delay(retry_number)
        return nominal * (1 - self.jitter), nominal * (1 + self.jitter)

    def delay(self, retry_number: int, unit_random: float) -> float:
        """Delay with jitter; `unit_random` is a number in [0, 1)."""
        low, high = self.delay_bounds(retry_number)
        return low + (high - low) * unit_random


NO_RETRY = RetryPolicy("none", max_retries=0, dead_letter=False)
"""The built-in default: a failure is final and the task ends `failed`."""


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
