"""Redis over TLS (`rediss://`), with a password and client certificates: the scheduler, the
worker side's state client and the Celery broker connection all reach it through one URL, and
one that cannot (another CA, no client certificate) fails with a message that names the server
but never its password.

A real redis-server listens on a TLS port only (tests/support/redis_tls.py); the scheduler runs
in process, and the worker side is a protocol worker whose claim and reports go through the
agent's own `StateStore`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection
from switchyard import SchedulerClient
from switchyard.redis_urls import celery_broker, check_url, sync_client

from scheduler.errors import StateUnavailable
from scheduler.state.connection import Connection as StateConnection
from tests.integration.conftest import fast_settings
from tests.support.certs import make_ca
from tests.support.inproc import InProcessScheduler, ProtocolWorker
from tests.support.redis_server import wait_until
from tests.support.redis_tls import DEFAULT_PASSWORD, TlsRedisServer, redis_supports_tls
from worker_agent.attempts import Attempt
from worker_agent.state_client import Claimed, StateStore

pytestmark = pytest.mark.skipif(
    not redis_supports_tls(), reason="this redis-server was built without TLS (Debian's redis-server has it)")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("redis-tls")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clean_tls_redis(tls_redis: TlsRedisServer) -> TlsRedisServer:
    client = tls_redis.client()
    client.flushall()
    client.close()
    return tls_redis


def test_a_task_runs_with_every_redis_connection_over_tls(clean_tls_redis: TlsRedisServer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    url = clean_tls_redis.url
    check_url(url)
    broker = celery_broker(url)
    caplog.set_level(logging.DEBUG)
    scheduler = InProcessScheduler(fast_settings(url)).start()
    worker = ProtocolWorker(scheduler.target, "tls-worker", broker.broker_url, url)
    store = StateStore(url, "sy")
    try:
        worker.connect()
        with SchedulerClient(scheduler.target) as client:
            submitted = client.submit("tls.echo", args=["over TLS"])
            delivery = wait_until(lambda: worker.deliveries and worker.deliveries[0], timeout=15,
                                  message="the hand-out to reach the worker over the TLS broker")
            attempt = Attempt(delivery.task_id, delivery.attempt, "tls-worker", payload_by_reference=False)
            assert isinstance(store.claim(attempt, wait_seconds=10), Claimed)
            store.emit_succeeded(attempt, {"echo": delivery.args})
            task = client.wait(submitted.task_id, timeout=15)
        assert task.state == "succeeded"
        assert task.result == {"echo": ["over TLS"]}
    finally:
        store.close()
        worker.close()
        scheduler.stop()
    leaked = [record.getMessage() for record in caplog.records if DEFAULT_PASSWORD in record.getMessage()]
    assert leaked == []


def test_the_celery_broker_verifies_the_server_as_redis_py_does(clean_tls_redis: TlsRedisServer,
                                                                 tmp_path: Path) -> None:
    # kombu alone would connect to a rediss:// URL without checking the certificate at all.
    unverified = clean_tls_redis.url_with(ca=make_ca(tmp_path, name="unrelated-ca").cert_path)
    broker = celery_broker(unverified.replace("ssl_cert_reqs=required&", ""))
    assert "ssl_cert_reqs=required" in broker.broker_url
    with (Connection(broker.broker_url, connect_timeout=3) as connection,
          pytest.raises(Exception, match="certificate verify failed")):
        connection.ensure_connection(max_retries=0)


async def _ping_through_the_store(url: str) -> None:
    state = StateConnection(url, "sy")
    try:
        try:
            await state.redis.ping()
        except Exception as exc:
            raise state.unavailable(exc) from exc
    finally:
        await state.redis.aclose()


@pytest.mark.parametrize(("change", "says"), [
    ("another CA", "TLS handshake failed: self-signed certificate in certificate chain"),
    # Redis may reset the connection before or after the client reads its alert: either way it is refused.
    ("no client certificate", "cannot reach the state store"),
    ("a wrong password", "refused the login"),
])
def test_a_refused_connection_names_the_server_but_never_the_password(
        tls_redis: TlsRedisServer, tmp_path: Path, change: str, says: str) -> None:
    if change == "another CA":
        url = tls_redis.url_with(ca=make_ca(tmp_path, name="unrelated-ca").cert_path)
    elif change == "no client certificate":
        url = tls_redis.url_with(client_cert=False)
    else:
        url = tls_redis.url_with(password="not-the-password-1f2e")
    with pytest.raises(StateUnavailable) as raised:
        asyncio.run(_ping_through_the_store(url))
    message = str(raised.value)
    assert f"rediss://127.0.0.1:{tls_redis.port}/0" in message
    assert says in message
    assert DEFAULT_PASSWORD not in message and "not-the-password-1f2e" not in message


def test_the_worker_side_client_refuses_a_server_it_cannot_verify(tls_redis: TlsRedisServer, tmp_path: Path) -> None:
    url = tls_redis.url_with(ca=make_ca(tmp_path, name="unrelated-ca").cert_path)
    client = sync_client(url, socket_connect_timeout=3)
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match="certificate verify failed"):
            client.ping()
    finally:
        client.close()
    assert time.monotonic() - started < 10
