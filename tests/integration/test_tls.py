"""TLS and mTLS on the real scheduler's gRPC port and HTTP listener (scheduler/api/tls.py), with
certificates made for each test by tests/support/certs.py (the `openssl` command).

A caller that trusts another CA, or (with mTLS) brings no client certificate, cannot talk to the
scheduler; a certificate replaced on disk is served to the next connection without a restart;
without tokens an agent connects only as its certificate's CN; KEDA's client certificate reaches
the scaler service when tokens are on, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from externalscaler import externalscaler_pb2 as keda
from externalscaler import externalscaler_pb2_grpc as keda_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import agent_pb2, agent_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc, worker_pb2

from scheduler.api.http_api import HttpApi
from scheduler.main import Security
from tests.support.certs import CertificateAuthority, make_ca, make_cert
from tests.support.inproc import InProcessScheduler
from tests.support.redis_server import wait_until
from tests.support.secret_logs import SecretWatch

WATCH = SecretWatch()
CLIENT_TOKEN = WATCH.secret(f"sytok-tls-client-{secrets.token_urlsafe(18)}")


@pytest.fixture(scope="module", autouse=True)
def secret_watch() -> Iterator[SecretWatch]:
    WATCH.start()
    try:
        yield WATCH
    finally:
        WATCH.stop()
    assert WATCH.leaks() == []


class Pki:
    """A test's certificates: two unrelated CAs, the scheduler's certificate and client certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = make_ca(directory / "ca")
        self.other_ca = make_ca(directory / "other", "other-ca")
        self.server_cert, self.server_key = make_cert(directory / "server", self.ca, "scheduler")

    def client(self, name: str, ca: CertificateAuthority | None = None) -> tuple[bytes, bytes]:
        """(key, certificate chain) of a client certificate with CN=`name`."""
        cert, key = make_cert(self.directory / "clients", ca or self.ca, name, client=True)
        return key.read_bytes(), cert.read_bytes()


@pytest.fixture()
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def channel(target: str, ca: CertificateAuthority, client: tuple[bytes, bytes] | None = None) -> grpc.Channel:
    """A TLS channel trusting `ca` (with a client certificate for mTLS), on a connection of its own."""
    key, chain = client or (None, None)
    credentials = grpc.ssl_channel_credentials(ca.cert_path.read_bytes(), private_key=key, certificate_chain=chain)
    return grpc.secure_channel(target, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


def health_code(ch: grpc.Channel) -> grpc.StatusCode:
    try:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.RpcError as error:
        return error.code()
    finally:
        ch.close()
    return grpc.StatusCode.OK


def tls_settings(pki: Pki, **overrides: object) -> dict[str, object]:
    return {"tls_cert_file": str(pki.server_cert), "tls_key_file": str(pki.server_key), **overrides}


def test_tls_refuses_a_caller_that_trusts_another_ca_or_speaks_plaintext(pki: Pki, make_scheduler) -> None:
    sched: InProcessScheduler = make_scheduler(**tls_settings(pki))
    assert health_code(channel(sched.target, pki.ca)) is grpc.StatusCode.OK
    assert health_code(channel(sched.target, pki.other_ca)) is grpc.StatusCode.UNAVAILABLE
    assert health_code(grpc.insecure_channel(sched.target)) is grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_caller_without_a_client_certificate(pki: Pki, make_scheduler) -> None:
    sched = make_scheduler(**tls_settings(pki, tls_client_ca_file=str(pki.ca.cert_path)))
    assert health_code(channel(sched.target, pki.ca)) is grpc.StatusCode.UNAVAILABLE
    assert health_code(channel(sched.target, pki.ca, pki.client("intruder", pki.other_ca))) \
        is grpc.StatusCode.UNAVAILABLE
    assert health_code(channel(sched.target, pki.ca, pki.client("ops"))) is grpc.StatusCode.OK


def _connect(ch: grpc.Channel, worker_id: str) -> tuple[grpc.StatusCode, str]:
    """Open Connect with a hello for `worker_id`; the code of its first answer (OK: a welcome)."""
    done = threading.Event()

    def requests() -> Iterator[agent_pb2.ConnectRequest]:
        yield agent_pb2.ConnectRequest(hello=agent_pb2.AgentHello(
            worker_id=worker_id, worker_type=worker_pb2.WORKER_TYPE_CPU, slots=1, celery_queue=f"sy.w.{worker_id}",
            capabilities=worker_pb2.WorkerCapabilities(cpu_count=1)))
        done.wait(10)

    responses = agent_pb2_grpc.AgentGatewayStub(ch).Connect(requests(), timeout=10)
    try:
        first = next(responses)
        assert first.HasField("welcome")
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    finally:
        done.set()
        responses.cancel()


def test_without_tokens_an_agent_connects_only_as_its_certificates_cn(pki: Pki, make_scheduler) -> None:
    sched = make_scheduler(**tls_settings(pki, tls_client_ca_file=str(pki.ca.cert_path)))
    ch = channel(sched.target, pki.ca, pki.client("gpu-1"))
    try:
        assert _connect(ch, "gpu-1") == (grpc.StatusCode.OK, "")
        code, details = _connect(ch, "gpu-2")
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert "names worker 'gpu-1' (its CN)" in details
        # Every other RPC is open to a certificate holder: there are no roles without tokens.
        scheduler_pb2_grpc.SchedulerStub(ch).ListQueues(scheduler_pb2.ListQueuesRequest(), timeout=10)
    finally:
        ch.close()


def test_with_tokens_kedas_client_certificate_reaches_the_scaler_and_nothing_else(
        pki: Pki, tmp_path: Path, make_scheduler) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n  - " + json.dumps({"name": "ci", "role": "client",
                                                  "sha256": hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest()}) + "\n")
    sched = make_scheduler(**tls_settings(pki, tls_client_ca_file=str(pki.ca.cert_path), auth_tokens_file=str(tokens)))
    ch = channel(sched.target, pki.ca, pki.client("keda-operator"))
    try:
        ref = keda.ScaledObjectRef(name="w", scalerMetadata={"workerType": "cpu"})
        assert keda_grpc.ExternalScalerStub(ch).IsActive(ref, timeout=10).result is False
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListQueues(scheduler_pb2.ListQueuesRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # The same connection with a token: the token decides.
        stub.ListQueues(scheduler_pb2.ListQueuesRequest(), metadata=(("authorization", f"Bearer {CLIENT_TOKEN}"),),
                        timeout=10)
    finally:
        ch.close()


def test_rotated_certificates_take_effect_without_a_restart(pki: Pki, make_scheduler) -> None:
    sched = make_scheduler(**tls_settings(pki, tls_client_ca_file=str(pki.ca.cert_path)))
    old_client = pki.client("ops")
    assert health_code(channel(sched.target, pki.ca, old_client)) is grpc.StatusCode.OK
    original_ca = CertificateAuthority(pki.directory / "original-ca.crt", pki.ca.key_path)
    original_ca.cert_path.write_bytes(pki.ca.cert_path.read_bytes())
    # Re-issue the scheduler's certificate from the other CA, and trust only that CA for clients,
    # in the same files the scheduler was started with.
    make_cert(pki.server_cert.parent, pki.other_ca, "scheduler")
    pki.ca.cert_path.write_bytes(pki.other_ca.cert_path.read_bytes())
    new_client = pki.client("ops-2", pki.other_ca)
    # gRPC asks for the certificate at each handshake: the next connection sees the new files.
    assert health_code(channel(sched.target, pki.other_ca, new_client)) is grpc.StatusCode.OK
    assert health_code(channel(sched.target, original_ca, new_client)) is grpc.StatusCode.UNAVAILABLE
    assert health_code(channel(sched.target, pki.other_ca, old_client)) is grpc.StatusCode.UNAVAILABLE


def test_a_key_that_does_not_match_keeps_the_previous_certificate(pki: Pki, make_scheduler) -> None:
    sched = make_scheduler(**tls_settings(pki))
    good_key = pki.server_key.read_bytes()
    pki.server_key.write_bytes(pki.client("stray")[0])  # a half-done rotation: key first, certificate later
    assert health_code(channel(sched.target, pki.ca)) is grpc.StatusCode.OK
    assert any("is not the private key of --tls-cert" in line and "previous certificate" in line
               for line in WATCH.lines())
    pki.server_key.write_bytes(good_key)
    assert health_code(channel(sched.target, pki.ca)) is grpc.StatusCode.OK


def test_the_http_listener_speaks_https_with_the_current_certificate(pki: Pki, make_scheduler) -> None:
    sched = make_scheduler(**tls_settings(pki))
    security = Security.from_settings(sched.settings)
    assert security.certificate is not None
    http_api = HttpApi(sched.metrics.registry, security.policy)
    port = http_api.serve("127.0.0.1", 0, security.certificate.ssl_context)
    http_api.attach(sched.running.leadership, sched.loop)

    def get(ca: CertificateAuthority) -> int:
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/api/v1/health", timeout=10, context=context) as reply:
            return reply.status

    try:
        assert get(pki.ca) == 200
        with pytest.raises(urllib.error.URLError):
            get(pki.other_ca)
        make_cert(pki.server_cert.parent, pki.other_ca, "scheduler")
        wait_until(lambda: _status_or_none(get, pki.other_ca) == 200, timeout=10,
                   message="the HTTPS listener to serve the rotated certificate")
    finally:
        http_api.close()


def _status_or_none(get, ca: CertificateAuthority) -> int | None:
    try:
        return int(get(ca))
    except (OSError, urllib.error.URLError):
        return None


def test_no_log_line_holds_a_token() -> None:
    assert WATCH.leaks() == []
