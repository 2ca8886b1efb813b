"""Fixtures shared by every tier: a real redis-server per test module; and, for the whole
session, the search of every log line the suite wrote for the secrets tests used (issue 11).

hypothesis is imported here, at start-up: its pytest plugin otherwise imports it lazily at the
end of the run, while gRPC/kombu threads are alive, and CPython 3.11's compiler can then fail
with "AST constructor recursion depth mismatch".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  (imported before any test starts threads; see note below)
import pytest

from tests.support.redis_server import RedisServer
from tests.support.secret_logs import SUITE_SECRETS


class _SuiteLog(logging.Handler):
    """Every log record written in the test process during the session, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name}: {record.getMessage()} {record.exc_text or ''}")
        except Exception:
            self.lines.append(f"{record.msg!r} {record.args!r}")


_SUITE_LOG = _SuiteLog()


def pytest_sessionstart(session: pytest.Session) -> None:
    logging.getLogger().addHandler(_SUITE_LOG)


class _FromWorkers:
    """What the xdist workers found (`make test` runs the suite in several processes): their
    registered secrets, the leaks in their own in-process log lines, and how many lines they had."""

    secrets: set[str] = set()
    leaks: list[str] = []
    lines = 0


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the xdist controller: collect a finished worker's secrets and in-process leaks."""
    output = getattr(node, "workeroutput", {})
    _FromWorkers.secrets.update(output.get("suite_secrets", []))
    _FromWorkers.leaks += output.get("secret_leaks", [])
    _FromWorkers.lines += int(output.get("log_lines", 0))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any log line of the suite — the test processes' own records and every
    `*.log` file its scheduler, agent, Celery, Redis and Prometheus processes wrote under the
    session's temporary folder — holds a secret a test registered (tokens, Redis passwords).

    Under pytest-xdist each worker searches its own in-process lines and hands its secrets and
    leaks to the controller (`workeroutput`), which searches the log files of them all (the
    workers' temporary folders lie under its own) and fails the run."""
    logging.getLogger().removeHandler(_SUITE_LOG)
    own = [f"(test process) {line}" for line in _SUITE_LOG.lines if any(s in line for s in SUITE_SECRETS)]
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports
        workeroutput["suite_secrets"] = sorted(SUITE_SECRETS)
        workeroutput["secret_leaks"] = own
        workeroutput["log_lines"] = len(_SUITE_LOG.lines)
        return
    secrets = SUITE_SECRETS | _FromWorkers.secrets
    if not secrets:
        return
    leaks = own + _FromWorkers.leaks
    in_process = len(_SUITE_LOG.lines) + _FromWorkers.lines
    factory = getattr(session.config, "_tmp_path_factory", None)
    base: Path | None = factory.getbasetemp() if factory is not None else None
    files = sorted(base.rglob("*.log")) if base is not None and base.exists() else []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        leaks += [f"{path}: {line}" for line in text.splitlines() if any(s in line for s in secrets)]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"secret search: {len(secrets)} secret(s) looked for in "
                            f"{in_process} in-process log line(s) and {len(files)} log file(s): "
                            f"{len(leaks)} leak(s)")
        for leak in leaks[:20]:
            reporter.write_line(f"  LEAK {leak[:300]}")
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
