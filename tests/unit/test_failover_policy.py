"""The leader-following state machine both Python clients share (`switchyard._failover`), on
its own: a fake clock and fixed jitter, no servers, no sleeping."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from switchyard._failover import (
    RETRY_FIRST_DELAY,
    RETRY_MAX_DELAY,
    Failover,
    NextTry,
    retry_delay,
    should_retry,
)
from switchyard.exceptions import DeadlineExceeded, InvalidArgument, Unavailable


@dataclass
class Schedulers:
    """What a Failover reads from the connection."""

    addresses: tuple[str, ...] = ("a:1", "b:2", "c:3")
    failover_timeout: float = 30.0
    _reached: bool = True


@dataclass
class Clock:
    """Monotonic seconds that move only when the test says."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def fixed_jitter(low: float, high: float) -> float:
    return high  # the longest delay the jitter allows


DOWN = Unavailable("connection refused")


def test_a_named_leader_is_tried_next_and_a_round_goes_through_every_address() -> None:
    failover = Failover(Schedulers(), clock=Clock(), uniform=fixed_jitter)
    assert failover.next_try("a:1", DOWN, hint="c:3") == NextTry("c:3", 0.0)
    assert failover.next_try("c:3", DOWN, hint=None) == NextTry("b:2", 0.0)


def test_a_whole_round_failed_backs_off_then_starts_again_doubling_up_to_the_cap() -> None:
    clock = Clock()
    failover = Failover(Schedulers(addresses=("a:1", "b:2")), clock=clock, uniform=fixed_jitter)
    assert failover.next_try("a:1", DOWN, None) == NextTry("b:2", 0.0)
    delays = []
    for _ in range(7):
        step = failover.next_try("b:2", DOWN, None)  # the round is over: back off
        delays.append(step.delay)
        assert step.address == "a:1"
        assert failover.next_try("a:1", DOWN, None) == NextTry("b:2", 0.0)
        clock.now += step.delay
    expected = [min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2**n) for n in range(7)]
    assert delays == pytest.approx(expected)


def test_the_jitter_keeps_at_least_half_of_the_backoff() -> None:
    for round_number in range(6):
        ceiling = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2**round_number)
        assert retry_delay(round_number, lambda low, high: low) == pytest.approx(ceiling / 2)
        assert ceiling / 2 <= retry_delay(round_number) <= ceiling


def test_a_leader_outside_the_list_comes_last_in_the_round() -> None:
    failover = Failover(Schedulers(addresses=("a:1", "b:2")), clock=Clock(), uniform=fixed_jitter)
    assert failover.next_try("a:1", DOWN, hint="z:9") == NextTry("b:2", 0.0)
    assert failover.next_try("b:2", DOWN, hint="z:9") == NextTry("z:9", 0.0)


def test_time_up_raises_an_error_of_the_same_kind_naming_every_address_tried() -> None:
    clock = Clock()
    failover = Failover(Schedulers(addresses=("a:1", "b:2"), failover_timeout=1.0), clock=clock, uniform=fixed_jitter)
    failover.next_try("a:1", DOWN, None)
    step = failover.next_try("b:2", DOWN, None)
    assert step.delay == pytest.approx(RETRY_FIRST_DELAY)
    clock.now += 1.0
    with pytest.raises(DeadlineExceeded) as raised:
        failover.next_try("a:1", DeadlineExceeded("slow"), None)
    assert raised.value.message == "no scheduler at a:1, b:2 could serve the call within 1 s; the last, a:1, answered: slow"


def test_the_backoff_never_outlasts_the_failover_timeout() -> None:
    clock = Clock()
    failover = Failover(Schedulers(addresses=("a:1",), failover_timeout=0.03), clock=clock, uniform=fixed_jitter)
    assert failover.next_try("a:1", DOWN, None) == NextTry("a:1", pytest.approx(0.03))


def test_a_client_that_never_reached_a_scheduler_gets_one_round_and_no_waiting() -> None:
    schedulers = Schedulers(addresses=("a:1", "b:2"), _reached=False)
    failover = Failover(schedulers, clock=Clock(), uniform=fixed_jitter)
    assert failover.next_try("a:1", DOWN, None) == NextTry("b:2", 0.0)
    with pytest.raises(Unavailable, match=r"^UNAVAILABLE: no scheduler at a:1, b:2 could serve the call; the last, b:2,"):
        failover.next_try("b:2", DOWN, None)
    single = Failover(Schedulers(addresses=("a:1",), _reached=False), clock=Clock())
    with pytest.raises(Unavailable) as raised:
        single.next_try("a:1", DOWN, None)
    assert raised.value is DOWN  # one attempt: its own error, unchanged


def test_a_standby_naming_the_leader_counts_as_reaching_the_schedulers() -> None:
    schedulers = Schedulers(addresses=("a:1", "b:2"), _reached=False)
    failover = Failover(schedulers, clock=Clock(), uniform=fixed_jitter)
    assert failover.next_try("a:1", DOWN, hint="b:2") == NextTry("b:2", 0.0)
    assert schedulers._reached
    assert failover.next_try("b:2", DOWN, hint=None).delay > 0  # now patient: a new round


def test_only_unavailable_and_repeatable_deadlines_are_retried() -> None:
    assert should_retry(Unavailable("x"), repeatable=False)
    assert should_retry(DeadlineExceeded("x"), repeatable=True)
    assert not should_retry(DeadlineExceeded("x"), repeatable=False)
    assert not should_retry(InvalidArgument("x"), repeatable=True)
    assert InvalidArgument("x").status_code is grpc.StatusCode.INVALID_ARGUMENT
