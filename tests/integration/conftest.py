"""Integration fixtures: the real scheduler in-process on real Redis, and protocol workers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from scheduler.settings import Settings
from tests.support.inproc import InProcessScheduler, ProtocolWorker
from tests.support.redis_server import RedisServer


def fast_settings(redis_url: str, **overrides: object) -> Settings:
    base = dict(redis_url=redis_url, heartbeat_interval_seconds=0.2,
                heartbeat_timeout_seconds=1.5, lost_grace_seconds=1.0)
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture()
def make_scheduler(fresh_redis: RedisServer) -> Iterator[Callable[..., InProcessScheduler]]:
    started: list[InProcessScheduler] = []

    def make(**overrides: object) -> InProcessScheduler:
        scheduler = InProcessScheduler(fast_settings(fresh_redis.url, **overrides)).start()
        started.append(scheduler)
        return scheduler

    yield make
    for scheduler in started:
        with contextlib.suppress(Exception):
            scheduler.stop()


@pytest.fixture()
def make_worker(fresh_redis: RedisServer) -> Iterator[Callable[..., ProtocolWorker]]:
    workers: list[ProtocolWorker] = []

    def make(scheduler: InProcessScheduler, worker_id: str, **kw: object) -> ProtocolWorker:
        worker = ProtocolWorker(scheduler.target, worker_id, fresh_redis.url, fresh_redis.url, **kw).connect()  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.close()
