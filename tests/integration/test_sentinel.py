"""The state store on a Sentinel-managed Redis (a real primary, a replica, three Sentinels):
submissions wait for the replica (WAIT), a wait that runs out is counted, and the store follows
a failover to the promoted replica with every acknowledged submission there.

The whole stack through a failover (scheduler, agent, Celery worker) is
tests/e2e/test_sentinel_failover.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest

from scheduler.errors import StateUnavailable
from scheduler.state.connection import ReplicaWait
from scheduler.state.store import RedisState
from tests.support.sentinel import SentinelRedis
from tests.support.store_kit import KEYS, PREFIX, new_task, submitted

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture()
def group() -> Iterator[SentinelRedis]:
    sentinel_redis = SentinelRedis().start()
    try:
        yield sentinel_redis
    finally:
        sentinel_redis.stop()


def test_a_submission_waits_for_the_replica_and_a_wait_that_runs_out_is_counted(group: SentinelRedis) -> None:
    replica = group.replicas[0]

    async def scenario() -> tuple[bool, float, int, float, float]:
        state = RedisState(group.url, PREFIX, ReplicaWait(1, 0.3))
        unwaited = RedisState(group.url, PREFIX)
        try:
            await submitted(state, new_task("a"))
            # Acknowledged means the replica has it already: a failover now would keep it.
            with replica.client() as replica_client:
                on_replica = bool(replica_client.exists(KEYS.task("a")))
            # What the wait costs, per single-task submission, on loopback.
            costs = []
            for label, store in (("unwaited", unwaited), ("waited", state)):
                started = time.perf_counter()
                for i in range(200):
                    await submitted(store, new_task(f"{label}-{i}"))
                costs.append((time.perf_counter() - started) / 200)
            replica.signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                await submitted(state, new_task("b"))  # still accepted: it is on the primary
                waited = time.monotonic() - started
            finally:
                replica.signal(signal.SIGCONT)
            # The strict alternative the docs name: Redis itself refuses writes without replicas.
            with group.primary.client() as primary_client:
                primary_client.config_set("min-replicas-to-write", 2)
            with pytest.raises(StateUnavailable, match=r"refuses writes: fewer replicas are in sync than its "
                                                       r"min-replicas-to-write; check the replicas"):
                await submitted(state, new_task("c"))
            return on_replica, waited, state.replica_timeouts, costs[0], costs[1]
        finally:
            await state.close()
            await unwaited.close()

    on_replica, waited, timeouts, unwaited_cost, waited_cost = asyncio.run(scenario())
    print(f"\nper submission: {unwaited_cost * 1e3:.2f} ms without WAIT, {waited_cost * 1e3:.2f} ms with WAIT 1")
    assert on_replica
    assert timeouts == 1
    assert 0.3 <= waited < 2.0


def test_the_store_follows_a_failover_to_the_promoted_replica(group: SentinelRedis) -> None:
    async def scenario() -> tuple[list[str], float, set[str]]:
        state = RedisState(group.url, PREFIX, ReplicaWait(1, 1.0))
        try:
            acknowledged = []
            for i in range(50):
                await submitted(state, new_task(f"before-{i}"))
                acknowledged.append(f"before-{i}")
            old = group.kill_primary()
            killed_at = time.monotonic()
            outages: list[str] = []
            while True:
                try:
                    await submitted(state, new_task("after"))
                    break
                except StateUnavailable as exc:
                    outages.append(str(exc))
                    await asyncio.sleep(0.1)
                assert time.monotonic() - killed_at < 30, f"no failover:\n{group.log_tails()}"
            resumed_after = time.monotonic() - killed_at
            new_primary = group.primary_address()
            assert new_primary is not None and new_primary[1] != old.port
            found = {r.task_id for r in await state.tasks.load([*acknowledged, "after"])}
            return outages, resumed_after, found
        finally:
            await state.close()

    outages, resumed_after, found = asyncio.run(scenario())
    print(f"\nsubmissions resumed {resumed_after:.1f} s after the primary was killed")
    # While no primary answers, the store says so, naming the Sentinel group, never hanging.
    assert outages
    assert all(message.startswith(f"cannot reach the state store at {group.url} (") for message in outages)
    assert found == {*(f"before-{i}" for i in range(50)), "after"}
