"""Retry decisions of the pure core: backoff schedules, jitter bounds, budgets and dead letters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scheduler.core.retry import Backoff, RetryAction, RetryPolicy, decide_retry

AUTEUR_DEFAULT = RetryPolicy("default", max_retries=5, base_delay_seconds=60, multiplier=2, max_delay_seconds=3600)
AUTEUR_CRITICAL = RetryPolicy("critical", max_retries=5, base_delay_seconds=30, multiplier=1.5, max_delay_seconds=1800)
AUTEUR_BATCH = RetryPolicy("batch", max_retries=3, backoff=Backoff.LINEAR, base_delay_seconds=300, jitter=0)


def test_backoff_schedules_match_the_auteur_policies():
    assert [AUTEUR_DEFAULT.nominal_delay(n) for n in range(1, 8)] == [60, 120, 240, 480, 960, 1920, 3600]
    assert [AUTEUR_CRITICAL.nominal_delay(n) for n in (1, 2, 3)] == [30, 45, 67.5]
    assert AUTEUR_CRITICAL.nominal_delay(20) == 1800
    assert [AUTEUR_BATCH.nominal_delay(n) for n in (1, 2, 3)] == [300, 600, 900]


@given(st.integers(1, 30), st.floats(0, 0.999999))
def test_jittered_delay_stays_inside_its_bounds(retry, unit):
    low, high = AUTEUR_DEFAULT.delay_bounds(retry)
    assert low <= AUTEUR_DEFAULT.delay(retry, unit) <= high
    assert high <= AUTEUR_DEFAULT.max_delay_seconds * (1 + AUTEUR_DEFAULT.jitter)


def test_retry_budget_then_dead_letter_or_fail():
    batch = AUTEUR_BATCH
    assert [decide_retry(batch, n, "ValueError", 0.5).action for n in (1, 2, 3, 4)] == [
        RetryAction.RETRY, RetryAction.RETRY, RetryAction.RETRY, RetryAction.DEAD_LETTER]
    no_dlq = RetryPolicy("x", max_retries=0, dead_letter=False)
    assert decide_retry(no_dlq, 1, "ValueError", 0.5).action is RetryAction.FAIL


def test_non_retryable_errors_skip_retries():
    policy = RetryPolicy("p", max_retries=5, non_retryable=frozenset({"PermissionError"}))
    decision = decide_retry(policy, 1, "PermissionError", 0.5)
    assert decision.action is RetryAction.DEAD_LETTER and "not retryable" in decision.reason
