"""The agent's credentials: its TLS and token flags (and variables), what its stream to the
scheduler carries, a token re-read at every reconnect, and a refusal that heals once the token
file is fixed, all without the token ever reaching the log.

A fake ``AgentGateway`` on a loopback port (grpc.aio, in the test's event loop) records the
metadata and TLS peer of every stream; certificates come from tests/support/certs.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from switchyard import security
from switchyard.v1 import agent_pb2, agent_pb2_grpc, worker_pb2
from switchyard.wire import AUTHORIZATION_METADATA_KEY, TOKEN_ENV, TOKEN_FILE_ENV

from tests.support.certs import CertificateAuthority, make_ca, make_cert
from worker_agent import environment
from worker_agent.main import ConfigError, parse_args
from worker_agent.stream import AgentStream

TOKEN = "sy-agent-token-a1b2"
NEW_TOKEN = "sy-agent-token-c3d4"
CELERY = ["--", "celery", "-A", "app", "worker"]
WAIT_S = 15.0


@dataclass
class Stream:
    authorization: list[str]
    peer_common_name: str | None


@dataclass
class FakeGateway(agent_pb2_grpc.AgentGatewayServicer):
    """Welcomes an agent whose token is in `accepted` (any, when None) and ends the stream when
    `end_streams` is set; refuses others with UNAUTHENTICATED, as a real scheduler does."""

    accepted: set[str] | None = None
    streams: list[Stream] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    end_streams: asyncio.Event = field(default_factory=asyncio.Event)

    async def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[agent_pb2.ConnectResponse]:
        authorization = [value for key, value in context.invocation_metadata() if key == AUTHORIZATION_METADATA_KEY]
        names = context.auth_context().get("x509_common_name") or [None]
        self.streams.append(Stream(authorization, names[0].decode() if names[0] else None))
        self.arrived.set()
        if self.accepted is not None and authorization not in ([f"Bearer {token}"] for token in self.accepted):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        await request_iterator.__anext__()  # the hello
        yield agent_pb2.ConnectResponse(welcome=agent_pb2.AgentWelcome(
            heartbeat_interval_seconds=30, state_redis_url="redis://:redis-pw@127.0.0.1:1/0", key_prefix="sy"))
        await self.end_streams.wait()

    async def wait_streams(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.streams) < count:
                self.arrived.clear()
                await self.arrived.wait()


@dataclass
class Certificates:
    ca: CertificateAuthority
    server: tuple[Path, Path]
    agent: tuple[Path, Path]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("agent-certs")
    ca = make_ca(directory)
    return Certificates(ca, make_cert(directory, ca, "scheduler"), make_cert(directory, ca, "gpu-1", client=True))


def _hello() -> agent_pb2.AgentHello:
    return agent_pb2.AgentHello(worker_id="gpu-1", slots=1)


async def _no_cancel(task_id: str, attempt: int) -> None:
    return None


async def _with_gateway(gateway: FakeGateway, certs: Certificates | None,
                        body: Callable[[str], Awaitable[None]], *, require_client_cert: bool = True) -> None:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentGatewayServicer_to_server(gateway, server)  # type: ignore[no-untyped-call]
    if certs is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        cert_path, key_path = certs.server
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
            [(key_path.read_bytes(), cert_path.read_bytes())], root_certificates=certs.ca.cert_path.read_bytes(),
            require_client_auth=require_client_cert))
    await server.start()
    try:
        await body(f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


async def _run_stream(stream: AgentStream, until: Callable[[], Awaitable[None]]) -> None:
    running = asyncio.create_task(stream.run())
    try:
        await until()
    finally:
        await stream.close()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def _config(tmp_path: Path, certs: Certificates, token: str, *, mtls: bool = True) -> Any:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    args = ["--scheduler", "127.0.0.1:1", "--worker-id", "gpu-1", "--tls-ca", str(certs.ca.cert_path),
            "--token-file", str(token_file)]
    if mtls:
        args += ["--tls-cert", str(certs.agent[0]), "--tls-key", str(certs.agent[1])]
    return parse_args([*args, *CELERY], environ={}), token_file


# --- the command line ----------------------------------------------------------------------------


def test_security_flags_make_tls_settings_and_a_token(tmp_path: Path, certs: Certificates) -> None:
    config, token_file = _config(tmp_path, certs, TOKEN)
    assert config.tls.ca_file == certs.ca.cert_path and config.tls.cert_file == certs.agent[0]
    assert config.token.current() == TOKEN and config.token.path == token_file
    assert TOKEN not in repr(config)


def test_security_settings_come_from_the_environment(tmp_path: Path, certs: Certificates) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(NEW_TOKEN)
    config = parse_args(["--scheduler", "s:1", "--worker-id", "gpu-1", *CELERY], environ={
        TOKEN_ENV: TOKEN, "SWITCHYARD_TLS_CA": str(certs.ca.cert_path),
        "SWITCHYARD_TLS_CERT": str(certs.agent[0]), "SWITCHYARD_TLS_KEY": str(certs.agent[1]),
    })
    assert config.token.current() == TOKEN and config.tls.key_file == certs.agent[1]
    config = parse_args(["--scheduler", "s:1", "--worker-id", "gpu-1", *CELERY],
                        environ={TOKEN_FILE_ENV: str(token_file)})
    assert config.token.current() == NEW_TOKEN and config.tls is None


def test_without_security_settings_the_agent_dials_in_plaintext_with_no_token() -> None:
    config = parse_args(["--scheduler", "s:1", "--worker-id", "w", *CELERY], environ={})
    assert config.tls is None and config.token is None


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--token-file", "/nonexistent/token"], "cannot read token file /nonexistent/token: No such file or directory"),
    (["--tls-ca", "/nonexistent/ca.crt"], "cannot read the TLS CA file /nonexistent/ca.crt"),
    (["--tls-cert", "{cert}"], "a TLS client certificate was given without its key"),
])
def test_unusable_security_settings_stop_the_agent_with_one_clear_line(
        extra: list[str], fragment: str, certs: Certificates) -> None:
    extra = [item.format(cert=certs.agent[0]) for item in extra]
    with pytest.raises(ConfigError) as raised:
        parse_args(["--scheduler", "s:1", "--worker-id", "w", *extra, *CELERY], environ={})
    assert fragment in str(raised.value)


def test_the_celery_worker_never_inherits_the_agents_token() -> None:
    assert {TOKEN_ENV, TOKEN_FILE_ENV} <= set(environment.AGENT_SECRETS)


# --- the stream ------------------------------------------------------------------------------------


def test_the_stream_carries_the_token_over_mtls(tmp_path: Path, certs: Certificates,
                                                caplog: pytest.LogCaptureFixture) -> None:
    config, _ = _config(tmp_path, certs, TOKEN)
    gateway_holder: list[FakeGateway] = []

    async def scenario() -> None:
        gateway = FakeGateway()
        gateway_holder.append(gateway)

        async def body(address: str) -> None:
            stream = AgentStream([address], _hello, worker_pb2.WorkerLoad, _no_cancel, tls=config.tls,
                                 token=config.token)

            async def welcomed() -> None:
                async with asyncio.timeout(WAIT_S):
                    await stream.first_welcome.wait()

            await _run_stream(stream, welcomed)

        await _with_gateway(gateway, certs, body)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    assert gateway_holder[0].streams == [Stream([f"Bearer {TOKEN}"], "gpu-1")]
    assert not [record for record in caplog.records if TOKEN in record.getMessage()]


def test_a_rotated_token_file_is_used_at_the_next_reconnect(tmp_path: Path, certs: Certificates) -> None:
    config, token_file = _config(tmp_path, certs, TOKEN)
    gateway = FakeGateway()

    async def scenario() -> None:
        async def body(address: str) -> None:
            stream = AgentStream([address], _hello, worker_pb2.WorkerLoad, _no_cancel, tls=config.tls,
                                 token=config.token, reconnect_initial_seconds=0.01)

            async def rotate() -> None:
                await gateway.wait_streams(1)
                replacement = tmp_path / "token.new"
                replacement.write_text(NEW_TOKEN)
                replacement.replace(token_file)
                gateway.end_streams.set()  # the scheduler restarts: the agent reconnects
                await gateway.wait_streams(2)

            await _run_stream(stream, rotate)

        await _with_gateway(gateway, certs, body)

    asyncio.run(scenario())
    assert [stream.authorization for stream in gateway.streams[:2]] == [[f"Bearer {TOKEN}"], [f"Bearer {NEW_TOKEN}"]]


def test_a_refused_token_is_logged_once_and_healed_by_a_new_token_file(
        tmp_path: Path, certs: Certificates, caplog: pytest.LogCaptureFixture) -> None:
    config, token_file = _config(tmp_path, certs, TOKEN, mtls=False)
    gateway = FakeGateway(accepted={NEW_TOKEN})

    async def scenario() -> None:
        async def body(address: str) -> None:
            stream = AgentStream([address], _hello, worker_pb2.WorkerLoad, _no_cancel, tls=config.tls,
                                 token=config.token, reconnect_initial_seconds=0.01, reconnect_max_seconds=0.05)

            async def heal() -> None:
                await gateway.wait_streams(3)  # refused, and retried
                token_file.write_text(NEW_TOKEN)
                async with asyncio.timeout(WAIT_S):
                    await stream.first_welcome.wait()

            await _run_stream(stream, heal)

        await _with_gateway(gateway, certs, body, require_client_cert=False)

    with caplog.at_level(logging.DEBUG, logger="switchyard"):
        asyncio.run(scenario())
    refusals = [record for record in caplog.records if "refused this agent" in record.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert refusals[0].getMessage().startswith("scheduler at 127.0.0.1:")
    assert f"check the agent's token (--token-file, token file {token_file})" in refusals[0].getMessage()
    assert gateway.streams[-1].authorization == [f"Bearer {NEW_TOKEN}"]
    assert not [record for record in caplog.records
                if TOKEN in record.getMessage() or NEW_TOKEN in record.getMessage() or "redis-pw" in record.getMessage()]


def test_plaintext_with_a_token_to_another_machine_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_args(["--scheduler", "192.0.2.9:50051", "--worker-id", "w", *CELERY], environ={TOKEN_ENV: TOKEN})
    stream = AgentStream(config.schedulers, _hello, worker_pb2.WorkerLoad, _no_cancel, token=config.token)
    security._warned_plaintext.discard("192.0.2.9:50051")  # once per process: start afresh

    async def open_once() -> None:
        channel = stream._open_channel("192.0.2.9:50051")
        await channel.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(open_once())
    assert any(f"sending ${TOKEN_ENV} to 192.0.2.9:50051 without TLS" in record.getMessage()
               for record in caplog.records)


def test_tls_alone_trusts_the_system_cas() -> None:
    config = parse_args(["--scheduler", "s:1", "--worker-id", "w", "--tls", *CELERY], environ={})
    assert config.tls is not None and config.tls.ca_file is None and config.tls.cert_file is None
