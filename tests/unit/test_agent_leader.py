"""Finding the leading scheduler among several addresses: order, leader hints, backoff, and the
leader address read from a refusal's trailing metadata."""

from __future__ import annotations

import random

import grpc
import pytest
from switchyard.wire import LEADER_METADATA_KEY

from worker_agent.stream import LeaderFinder, leader_named_by

A, B, C = "a:1", "b:2", "c:3"


def finder(*addresses: str) -> LeaderFinder:
    return LeaderFinder(addresses, initial_seconds=0.2, max_seconds=5.0, rng=random.Random(3))


def attempts(leaders: LeaderFinder, count: int, refuse_with: str | None = None) -> list[tuple[str, float]]:
    """`count` attempts that all fail (naming `refuse_with` as the leader, if given)."""
    seen = []
    for _ in range(count):
        address, delay = leaders.next_attempt()
        seen.append((address, delay))
        leaders.failed(address, refuse_with)
    return seen


def test_addresses_tried_in_turn_then_rounds_wait_longer_up_to_the_cap() -> None:
    seen = attempts(finder(A, B, C), 15)
    assert [address for address, _ in seen] == [A, B, C] * 5
    # Moving on within a round costs nothing; each new round waits the next backoff step.
    assert [delay for _, delay in seen[:3]] == [0.0, 0.0, 0.0]
    round_waits = [seen[i][1] for i in range(3, 15, 3)]
    ceilings = [0.2, 0.4, 0.8, 1.6]
    assert all(ceiling / 2 <= wait <= ceiling for wait, ceiling in zip(round_waits, ceilings, strict=True))
    assert all(delay == 0.0 for i, (_, delay) in enumerate(seen) if i % 3)
    many = attempts(finder(A), 20)
    assert max(delay for _, delay in many) <= 5.0


def test_a_named_leader_is_tried_next_at_once() -> None:
    leaders = finder(A, B, C)
    assert leaders.next_attempt() == (A, 0.0)
    leaders.failed(A, leader=C)
    assert leaders.next_attempt() == (C, 0.0)


def test_a_leader_outside_the_list_is_followed_and_remembered() -> None:
    leaders = finder(A, B)
    leaders.next_attempt()
    leaders.failed(A, leader="d:4")
    assert leaders.next_attempt() == ("d:4", 0.0)
    leaders.connected("d:4")
    leaders.lost("d:4")
    address, delay = leaders.next_attempt()
    assert address == "d:4" and 0.1 <= delay <= 0.2


def test_schedulers_naming_each_other_cannot_make_a_tight_loop() -> None:
    leaders = finder(A, B)
    seen = []
    for _ in range(8):
        address, delay = leaders.next_attempt()
        seen.append((address, delay))
        leaders.failed(address, leader=B if address == A else A)
    # After the first redirect, every second attempt waits, and the waits grow.
    waits = [delay for _, delay in seen[2::2]]
    assert all(delay > 0 for delay in waits), seen
    assert waits[-1] > waits[0], seen


def test_after_losing_an_accepted_stream_the_same_scheduler_comes_first_then_the_others() -> None:
    leaders = finder(A, B, C)
    leaders.next_attempt()
    leaders.connected(B)
    leaders.lost(B)
    address, delay = leaders.next_attempt()
    assert address == B and 0.1 <= delay <= 0.2
    leaders.failed(B)
    assert leaders.next_attempt() == (A, 0.0)
    leaders.failed(A)
    assert leaders.next_attempt() == (C, 0.0)


def test_a_handover_names_the_new_leader_and_it_is_tried_at_once() -> None:
    leaders = finder(A, B)
    leaders.next_attempt()
    leaders.connected(A)
    leaders.lost(A, leader=B)
    assert leaders.next_attempt() == (B, 0.0)


def test_a_welcome_resets_the_backoff() -> None:
    leaders = finder(A)
    attempts(leaders, 6)
    leaders.connected(A)
    leaders.lost(A)
    _, delay = leaders.next_attempt()
    assert delay <= 0.2


def _refusal(code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing),
                                 details="refused", debug_error_string="")


def test_leader_read_from_an_unavailable_answers_trailing_metadata() -> None:
    refusal = _refusal(grpc.StatusCode.UNAVAILABLE, ((LEADER_METADATA_KEY, "10.0.0.4:50051"),))
    assert leader_named_by(refusal) == "10.0.0.4:50051"


@pytest.mark.parametrize(("code", "trailing"), [
    (grpc.StatusCode.UNAVAILABLE, ()),
    (grpc.StatusCode.UNAVAILABLE, ((LEADER_METADATA_KEY, "not an address"),)),
    (grpc.StatusCode.FAILED_PRECONDITION, ((LEADER_METADATA_KEY, "10.0.0.4:50051"),)),
])
def test_no_leader_without_a_valid_address_in_an_unavailable_answer(
        code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...]) -> None:
    assert leader_named_by(_refusal(code, trailing)) is None
    assert leader_named_by(ConnectionError("reset")) is None
