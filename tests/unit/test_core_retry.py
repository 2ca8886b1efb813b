"""Retry decisions of the pure core: backoff schedules, jitter bounds, budgets and dead letters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scheduler.core.retry import (
    DEFAULT_RETRY,
    NO_RETRY,
    Backoff,
    RetryAction,
    RetryPolicy,
    decide_retry,
)
from scheduler.settings import Settings

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


# --- the out-of-the-box policy ------------------------------------------------------------


def test_default_settings_retry_with_backoff_and_jitter_and_keep_none_to_opt_out():
    settings = Settings()
    policy = settings.retry_policies[settings.default_retry_policy]
    assert policy is DEFAULT_RETRY and policy.name == "default"
    assert (policy.backoff, policy.max_retries, policy.dead_letter) == (Backoff.EXPONENTIAL, 2, True)
    assert policy.jitter > 0
    # Nominal delays grow by the multiplier up to the cap.
    assert [policy.nominal_delay(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert settings.retry_policies["none"] is NO_RETRY  # a config can still opt out


@given(st.integers(1, 30), st.floats(0, 0.999999))
def test_default_delays_stay_within_their_jitter_bounds_and_the_cap(retry, unit):
    low, high = DEFAULT_RETRY.delay_bounds(retry)
    nominal = DEFAULT_RETRY.nominal_delay(retry)
    assert low == nominal * (1 - DEFAULT_RETRY.jitter) and low < high  # jitter really spreads it
    assert 0 < low <= DEFAULT_RETRY.delay(retry, unit) <= high <= DEFAULT_RETRY.max_delay_seconds


def test_the_cap_bounds_a_jittered_delay_too():
    capped = RetryPolicy("capped", max_retries=9, base_delay_seconds=50, max_delay_seconds=60, jitter=0.5)
    assert capped.delay_bounds(1) == (25, 60)  # 50 +- 50 % would reach 75
    assert capped.delay_bounds(5) == (30, 60)
    assert capped.delay(5, 0.999999) <= 60


@given(st.floats(0, 0.999999))
def test_default_policy_retries_twice_with_growing_delays_then_dead_letters(unit):
    decisions = [decide_retry(DEFAULT_RETRY, n, "RuntimeError", unit) for n in (1, 2, 3)]
    assert [d.action for d in decisions] == [RetryAction.RETRY, RetryAction.RETRY, RetryAction.DEAD_LETTER]
    first, second, _end = (d.delay_seconds for d in decisions)
    assert 1 <= first <= 3 and 2 <= second <= 6 and first < second
    assert "allows 2 retr" in decisions[2].reason
