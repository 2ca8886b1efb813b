"""Fixtures of the chaos suite: real stacks, a size knob, and where measured figures go.

Every chaos test runs in two sizes. The short one is part of `make test` (the whole folder
takes a few minutes on a 2-core machine); `CHAOS_FULL=1` (what `make chaos` sets) runs the
sizes the issue asks for: 100 worker kills, 50 crash points, 10,000 fuzzed requests, ~1,000
submits/s against a Redis killed with -9.

Figures a test measures (loss window, time to declare a worker lost, ...) are printed and
written as JSON to `$CHAOS_RESULTS/<name>.json` when that variable names a folder, otherwise
next to the test's other files (pytest's tmp_path), so docs/reliability.md can quote them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import RedisServer
from tests.support.stack import Stack

FULL = os.environ.get("CHAOS_FULL", "") not in ("", "0")
"""True under `make chaos` (CHAOS_FULL=1): the full sizes."""


def scale(ci: int, full: int) -> int:
    """`full` under CHAOS_FULL=1, else `ci` (the size `make test` runs)."""
    return full if FULL else ci


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scheduler_env(**env): extra SWITCHYARD_* settings for the test's scheduler"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in {"call", "setup"}:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append(("switchyard process logs", value.log_tails()))


@pytest.fixture()
def stack(
    fresh_redis: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """A running scheduler on a flushed Redis; add workers with `stack.add_worker(...)`."""
    marker = request.node.get_closest_marker("scheduler_env")
    env = {k: str(v) for k, v in (marker.kwargs if marker else {}).items()}
    workdir = tmp_path_factory.mktemp(f"chaos-{request.node.name[:40]}")
    sy = Stack(fresh_redis, workdir, scheduler_env=env)
    try:
        sy.start_scheduler()
        yield sy
    finally:
        sy.close()


@pytest.fixture()
def record_figures(tmp_path: Path) -> Callable[[str, dict[str, Any]], Path]:
    """`record_figures(name, figures)`: print them and write them as JSON (see the module docstring)."""

    def record(name: str, figures: dict[str, Any]) -> Path:
        folder = Path(os.environ.get("CHAOS_RESULTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.json"
        text = json.dumps({"full_size": FULL, **figures}, indent=2, sort_keys=True)
        path.write_text(text + "\n")
        print(f"chaos figures {name} ({path}):\n{text}")
        return path

    return record
