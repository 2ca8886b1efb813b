"""Fixtures for the end-to-end tier: a real scheduler, agents and Celery workers per test.

Every e2e test gets its own `Stack` (scheduler process on fresh ports) on the module's
redis-server, flushed first. A test that needs different scheduler settings says so with
`@pytest.mark.scheduler_env(SWITCHYARD_MAX_PAYLOAD_BYTES="1048576")`. When a test fails, the
tail of every process log is attached to its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.redis_server import RedisServer
from tests.support.stack import Stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scheduler_env(**env): extra SWITCHYARD_* settings for the e2e scheduler"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in {"call", "setup"}:
        stack = getattr(item, "funcargs", {}).get("stack")
        if isinstance(stack, Stack):
            report.sections.append(("switchyard process logs", stack.log_tails()))


@pytest.fixture()
def stack(
    fresh_redis: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """A running scheduler on a flushed Redis; add workers with `stack.add_worker(...)`."""
    marker = request.node.get_closest_marker("scheduler_env")
    env = {k: str(v) for k, v in (marker.kwargs if marker else {}).items()}
    workdir = tmp_path_factory.mktemp(f"stack-{request.node.name[:40]}")
    sy = Stack(fresh_redis, workdir, scheduler_env=env)
    try:
        sy.start_scheduler()
        yield sy
    finally:
        sy.close()
