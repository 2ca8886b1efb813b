"""Fixtures shared by every tier: a real redis-server per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the test module (AOF on, so restarts keep data)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The module's redis-server, flushed before the test."""
    redis_server.client().flushall()
    return redis_server
