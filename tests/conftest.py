"""Fixtures shared by every tier: a real redis-server per test module.

hypothesis is imported here, at start-up: its pytest plugin otherwise imports it lazily at the
end of the run, while gRPC/kombu threads are alive, and CPython 3.11's compiler can then fail
with "AST constructor recursion depth mismatch".
"""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis  # noqa: F401  (imported before any test starts threads; see note below)
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
