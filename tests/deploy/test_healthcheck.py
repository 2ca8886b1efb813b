"""The image's HEALTHCHECK (deploy/docker/healthcheck.py) against a real gRPC health service.

A scheduler that answers, leading (SERVING) or standing by (NOT_SERVING), is healthy; one that
does not answer is not; an agent's container (no scheduler in it) always is.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.deploy.tools import DEPLOY
from tests.support.redis_server import free_port


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()


def _cmdline(tmp_path: Path, *argv: str) -> Path:
    path = tmp_path / "cmdline"
    path.write_bytes(b"\0".join(arg.encode() for arg in argv) + b"\0")
    return path


@pytest.fixture()
def health_server() -> Iterator[tuple[health.HealthServicer, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(0)


@pytest.mark.parametrize("status", [health_pb2.HealthCheckResponse.SERVING,
                                    health_pb2.HealthCheckResponse.NOT_SERVING])
def test_a_leading_or_standing_by_scheduler_is_healthy(
        tmp_path: Path, health_server: tuple[health.HealthServicer, int], status: int) -> None:
    servicer, port = health_server
    servicer.set("", status)
    init = _cmdline(tmp_path, "tini", "--", "/opt/switchyard/bin/switchyard-scheduler")
    assert healthcheck.main(init, {"SWITCHYARD_LISTEN": f"0.0.0.0:{port}"}) == 0


def test_a_scheduler_that_does_not_answer_is_unhealthy(tmp_path: Path) -> None:
    init = _cmdline(tmp_path, "tini", "--", "switchyard-scheduler")
    assert healthcheck.main(init, {"SWITCHYARD_LISTEN": f"0.0.0.0:{free_port()}"}) == 1


def test_an_unknown_status_is_unhealthy(tmp_path: Path, health_server: tuple[health.HealthServicer, int]) -> None:
    servicer, port = health_server
    servicer.set("", health_pb2.HealthCheckResponse.UNKNOWN)
    init = _cmdline(tmp_path, "tini", "--", "switchyard-scheduler")
    assert healthcheck.main(init, {"SWITCHYARD_HEALTHCHECK_ADDRESS": f"127.0.0.1:{port}"}) == 1


def test_an_agent_container_is_healthy_while_it_runs(tmp_path: Path) -> None:
    init = _cmdline(tmp_path, "tini", "--", "switchyard-agent", "--", "celery", "-A", "app", "worker")
    # No scheduler to ask, and none listening: the agent's own process is the health.
    assert healthcheck.main(init, {"SWITCHYARD_LISTEN": f"0.0.0.0:{free_port()}"}) == 0


def test_address_defaults_to_the_listen_port_on_loopback() -> None:
    assert healthcheck.scheduler_address({"SWITCHYARD_LISTEN": "0.0.0.0:6000"}) == "127.0.0.1:6000"
    assert healthcheck.scheduler_address({}) == "127.0.0.1:50051"
