"""The `switchyard` command line against a real stack: what a user types in a shell."""

from __future__ import annotations

import json
import subprocess

import pytest

from scheduler.core.retry import DEFAULT_RETRY
from tests.support.redis_server import env_without_switchyard
from tests.support.stack import VENV_BIN, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _cli(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "switchyard"), "--scheduler", stack.address, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_without_switchyard(),
    )


def test_cli_submit_wait_queues_and_unknown_id(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])

    waited = _cli(
        stack,
        "submit",
        "e2e.echo",
        "--args",
        '[1, "two"]',
        "--kwargs",
        '{"three": 3}',
        "--content-type",
        "text",
        "--wait",
        "--timeout",
        "60",
    )
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    assert '"two"' in waited.stdout and "three" in waited.stdout, waited.stdout
    assert "SUCCEEDED" in waited.stdout.upper(), waited.stdout

    as_json = _cli(
        stack,
        "--json",
        "submit",
        "e2e.echo",
        "--args",
        '["json"]',
        "--content-type",
        "text",
        "--wait",
    )
    assert as_json.returncode == 0, (as_json.stdout, as_json.stderr)
    reply = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert json.loads(reply["task"]["result_json"]) == {"args": ["json"], "kwargs": {}}
    assert reply["task"]["worker_id"] == "w1"

    # Out of the box a failing task is retried (the built-in "default" policy) and then
    # dead-lettered; --wait waits through the retries and exits 1.
    failing = _cli(
        stack, "submit", "e2e.fail", "--args", '["boom"]', "--content-type", "text", "--wait"
    )
    assert failing.returncode == 1, (failing.stdout, failing.stderr)
    assert "ValueError" in failing.stdout and "boom" in failing.stdout, failing.stdout
    # `key  value` lines (a traceback's lines are indented and left out).
    shown = {
        key: value.strip()
        for key, _, value in (line.partition(" ") for line in failing.stdout.splitlines())
        if key[:1].isalpha()
    }
    attempts = str(DEFAULT_RETRY.max_retries + 1)
    assert (shown["state"], shown["retry_policy"], shown["failures"], shown["attempt"]) == (
        "dead_lettered",
        "default",
        attempts,
        attempts,
    ), failing.stdout

    queues = _cli(stack, "queues")
    assert queues.returncode == 0, queues.stderr
    for name in ("gpu_priority", "gpu_fallback", "cpu_standard"):
        assert name in queues.stdout, queues.stdout

    workers = _cli(stack, "workers")
    assert workers.returncode == 0 and "w1" in workers.stdout, (workers.stdout, workers.stderr)

    unknown = _cli(stack, "get", "no-such-task")
    assert unknown.returncode == 1, (unknown.stdout, unknown.stderr)
    assert "NOT_FOUND" in unknown.stderr, unknown.stderr
