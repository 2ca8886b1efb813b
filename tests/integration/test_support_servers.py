"""The test harness's own Redis processes start on a port another process took between picking
it and binding it (seen in CI: a Sentinel aborted on `Address already in use` while the server
holding its port answered PING in its place, and the group never settled)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from tests.support import redis_server, sentinel
from tests.support.redis_server import RedisServer
from tests.support.sentinel import SentinelRedis


@pytest.fixture()
def squatter() -> Iterator[RedisServer]:
    """A Redis already listening on the port the next server is given."""
    server = RedisServer(appendonly=False).start()
    try:
        yield server
    finally:
        server.stop()


def _first_taken(port: int) -> tuple[list[int], Callable[[], int]]:
    """A `free_port` that first gives `port`, then real free ports; and the ports it gave."""
    given: list[int] = []
    real = redis_server.free_port

    def free_port() -> int:
        given.append(port if not given else real())
        return given[-1]

    return given, free_port


def _pid_at(port: int) -> int:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def test_a_server_whose_port_was_taken_starts_on_a_fresh_one(
    squatter: RedisServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    given, free_port = _first_taken(squatter.port)
    monkeypatch.setattr(redis_server, "free_port", free_port)
    server = RedisServer(appendonly=False)
    assert server.port == squatter.port
    try:
        server.start()
        assert server.port != squatter.port and len(given) == 2
        assert server.proc is not None and _pid_at(server.port) == server.proc.pid
        # A restart keeps the port it got.
        port = server.port
        server.restart()
        assert server.port == port and _pid_at(port) == server.proc.pid
    finally:
        server.stop()


def test_a_sentinel_group_with_a_taken_port_starts_afresh(
    squatter: RedisServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    given, free_port = _first_taken(squatter.port)
    monkeypatch.setattr(sentinel, "free_port", free_port)
    nodes = 1 + 1 + 3  # primary, replica, Sentinels
    group = SentinelRedis()
    assert group.primary.port == squatter.port
    try:
        group.start()
        assert squatter.port not in {node.port for node in group.nodes}
        assert len(given) == 2 * nodes  # the first group given up, a second one built
        for node in group.nodes:
            assert node.proc is not None and _pid_at(node.port) == node.proc.pid
        assert group.primary_address() == ("127.0.0.1", group.primary.port)
    finally:
        group.stop()


def test_each_xdist_worker_picks_ports_from_its_own_range_below_the_ephemeral_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two test processes of one run never hand out the same port, and no outgoing connection
    (ports from 32768 up) can take one between its pick and its server's bind."""
    picked: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        picked[worker] = {redis_server.free_port() for _ in range(200)}
    assert len(picked["gw0"]) == len(picked["gw1"]) == 200  # no port handed out twice
    assert max(picked["gw0"]) < min(picked["gw1"]) and max(picked["gw1"]) < 32768
    with redis_server.socket.socket() as held:  # a port in use is passed over
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
        port = redis_server.free_port()
        held.bind(("127.0.0.1", port))
        monkeypatch.setattr(redis_server, "_next_port", iter([port - redis_server.PORTS.start] * 2 + [0]))
        assert redis_server.free_port() != port
