"""The scheduler's own metrics follow its leadership and its state store, on real Redis: the leader
exports queue and worker gauges with `switchyard_leader` 1, a standby exports none of them with
`switchyard_leader` 0, a takeover moves them, and `switchyard_state_store_up` drops while Redis is
down and comes back with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import pytest

from scheduler.main import start
from tests.integration.conftest import fast_settings
from tests.support.inproc import InProcessScheduler
from tests.support.redis_server import RedisServer, wait_until

pytestmark = pytest.mark.timeout(90)
DEPTH, CPU_QUEUE = "switchyard_queue_depth", {"queue": "cpu_standard"}
GPU_READY = {"type": "gpu", "state": "ready"}


class Standby(InProcessScheduler):
    """An in-process scheduler that does not wait to lead (a second one on the same Redis)."""

    def start(self) -> Standby:
        self.thread.start()
        self.running = asyncio.run_coroutine_threadsafe(
            start(self.settings, self.metrics, wait_serving=None), self.loop).result(30)
        return self


def sample(scheduler: InProcessScheduler, name: str, labels: dict[str, str] | None = None) -> float | None:
    return scheduler.metrics.registry.get_sample_value(name, labels or {})


def wait_sample(scheduler: InProcessScheduler, name: str, expected: float | None,
                labels: dict[str, str] | None = None, timeout: float = 20.0) -> None:
    wait_until(lambda: sample(scheduler, name, labels) == expected, timeout=timeout, interval=0.05,
               message=f"{name}{labels or ''} == {expected}")


@pytest.fixture()
def standby(fresh_redis: RedisServer) -> Iterator[Callable[[], Standby]]:
    made: list[Standby] = []

    def make() -> Standby:
        scheduler = Standby(fast_settings(fresh_redis.url, leader_lease_seconds=2.0)).start()
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        with contextlib.suppress(Exception):
            scheduler.stop()


def test_only_the_leader_exports_queue_and_worker_gauges(
    make_scheduler: Callable[..., InProcessScheduler], standby: Callable[[], Standby],
) -> None:
    leader = make_scheduler(leader_lease_seconds=2.0)
    second = standby()
    wait_sample(leader, "switchyard_leader", 1.0)
    wait_sample(leader, DEPTH, 0.0, CPU_QUEUE)
    wait_sample(leader, "switchyard_workers", 0.0, GPU_READY)
    wait_sample(second, "switchyard_state_store_up", 1.0)
    assert sample(second, "switchyard_leader") == 0.0
    assert sample(second, DEPTH, CPU_QUEUE) is None and sample(second, "switchyard_workers", GPU_READY) is None

    leader.stop()  # hands the lease back: the standby takes over at once
    wait_sample(second, "switchyard_leader", 1.0)
    wait_sample(second, DEPTH, 0.0, CPU_QUEUE)
    assert sample(leader, "switchyard_leader") == 0.0
    assert sample(leader, DEPTH, CPU_QUEUE) is None, "the old leader still exports a queue it no longer knows"


def test_state_store_up_follows_redis(
    make_scheduler: Callable[..., InProcessScheduler], fresh_redis: RedisServer,
) -> None:
    scheduler = make_scheduler(leader_lease_seconds=2.0)
    wait_sample(scheduler, "switchyard_state_store_up", 1.0)
    fresh_redis.kill()
    try:
        wait_sample(scheduler, "switchyard_state_store_up", 0.0)
        wait_sample(scheduler, "switchyard_leader", 0.0)
    finally:
        fresh_redis.start()
    wait_sample(scheduler, "switchyard_state_store_up", 1.0)
    wait_sample(scheduler, "switchyard_leader", 1.0, timeout=30)
