"""The client's and the CLI's credentials: which token they send and where they read it from,
TLS and mTLS to every address, and the clear errors for files that cannot be used.

A small fake ``Scheduler`` service on a loopback port records the metadata and the TLS peer of
every call it gets; the tests assert what reached it. Certificates come from a throw-away CA
(tests/support/certs.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from switchyard import SchedulerClient, cli, exceptions, security
from switchyard.cli.exits import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE
from switchyard.security import (
    CredentialError,
    TokenSource,
    is_loopback_address,
    resolve_tls,
    resolve_token,
)
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc
from switchyard.wire import (
    AUTHORIZATION_METADATA_KEY,
    LEADER_METADATA_KEY,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
)

from tests.support.certs import CertificateAuthority, make_ca, make_cert

TOKEN = "sy-test-token-3f9a"
ROTATED_TOKEN = "sy-test-token-rotated-77c1"
SECURITY_ENV = (TOKEN_ENV, TOKEN_FILE_ENV, "SWITCHYARD_TLS_CA", "SWITCHYARD_TLS_CERT", "SWITCHYARD_TLS_KEY",
                "SWITCHYARD_TLS_SERVER_NAME")


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own SWITCHYARD_TOKEN or TLS variables must not leak into these tests."""
    for name in SECURITY_ENV:
        monkeypatch.delenv(name, raising=False)


@dataclass
class Received:
    """One call as the fake saw it."""

    method: str
    authorization: list[str]
    peer_common_name: str | None


@dataclass
class FakeScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Answers GetTask, WatchTask and ListQueues; records what each call carried. A standby
    (``leader`` set) answers UNAVAILABLE naming the leader, like a real one."""

    received: list[Received] = field(default_factory=list)
    leader: str | None = None
    refuse: bool = False
    """Answer UNAUTHENTICATED, like a scheduler that does not know the token."""

    def _record(self, method: str, context: grpc.ServicerContext) -> None:
        metadata = context.invocation_metadata() or ()
        names = context.auth_context().get("x509_common_name") or [None]
        common_name = names[0].decode() if isinstance(names[0], bytes) else None
        self.received.append(Received(
            method, [str(value) for key, value in metadata if key == AUTHORIZATION_METADATA_KEY], common_name))
        if self.leader is not None:
            context.set_trailing_metadata(((LEADER_METADATA_KEY, self.leader),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "this scheduler is a standby")
        if self.refuse:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid token: send 'authorization: Bearer <token>'")

    def GetTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._record("GetTask", context)
        return scheduler_pb2.GetTaskResponse(task=scheduler_pb2.Task(task_id=request.task_id))

    def WatchTask(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._record("WatchTask", context)
        yield scheduler_pb2.WatchTaskResponse(
            task=scheduler_pb2.Task(task_id=request.task_id, state=scheduler_pb2.TASK_STATE_SUCCEEDED))

    def ListQueues(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._record("ListQueues", context)
        return scheduler_pb2.ListQueuesResponse()


@dataclass
class Served:
    fake: FakeScheduler
    address: str
    server: grpc.Server


@dataclass
class Certificates:
    directory: Path
    ca: CertificateAuthority
    server: tuple[Path, Path]
    client: tuple[Path, Path]
    other_ca: CertificateAuthority


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("certs")
    ca = make_ca(directory)
    return Certificates(
        directory, ca, make_cert(directory, ca, "scheduler"), make_cert(directory, ca, "ops-laptop", client=True),
        make_ca(directory, name="unrelated-ca"),
    )


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(credentials: grpc.ServerCredentials | None = None, **fake_options: Any) -> Served:
        fake = FakeScheduler(**fake_options)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        servers.append(server)
        return Served(fake, f"127.0.0.1:{port}", server)

    yield start
    for server in servers:
        server.stop(None)


def _server_credentials(certs: Certificates, *, require_client_cert: bool = False) -> grpc.ServerCredentials:
    cert_path, key_path = certs.server
    return grpc.ssl_server_credentials(
        [(key_path.read_bytes(), cert_path.read_bytes())],
        root_certificates=certs.ca.cert_path.read_bytes() if require_client_cert else None,
        require_client_auth=require_client_cert,
    )


# --- which token is sent ------------------------------------------------------------------------


def test_token_goes_with_unary_and_streaming_calls(serve: Any) -> None:
    served = serve()
    with SchedulerClient(served.address, token=TOKEN) as client:
        client.get("t-1")
        assert client.wait("t-1", timeout=10).state == "succeeded"
        client.queues()
    assert [(call.method, call.authorization) for call in served.fake.received] == [
        ("GetTask", [f"Bearer {TOKEN}"]), ("WatchTask", [f"Bearer {TOKEN}"]), ("ListQueues", [f"Bearer {TOKEN}"]),
    ]


def test_no_token_sends_no_authorization(serve: Any) -> None:
    served = serve()
    with SchedulerClient(served.address) as client:
        client.get("t-1")
    assert served.fake.received[0].authorization == []


def test_token_from_the_environment(serve: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served = serve()
    monkeypatch.setenv(TOKEN_ENV, f"{TOKEN}\n")
    with SchedulerClient(served.address) as client:
        client.get("t-1")
    token_file = tmp_path / "token"
    token_file.write_text(ROTATED_TOKEN)
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.setenv(TOKEN_FILE_ENV, str(token_file))
    with SchedulerClient(served.address) as client:
        client.get("t-2")
    assert [call.authorization for call in served.fake.received] == [[f"Bearer {TOKEN}"], [f"Bearer {ROTATED_TOKEN}"]]


def test_an_explicit_token_file_wins_over_the_environment(serve: Any, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    served = serve()
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with SchedulerClient(served.address, token_file=token_file) as client:
        client.get("t-1")
    assert served.fake.received[0].authorization == [f"Bearer {TOKEN}"]


def test_a_rewritten_token_file_is_used_from_the_next_call(serve: Any, tmp_path: Path) -> None:
    served = serve()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with SchedulerClient(served.address, token_file=token_file) as client:
        client.get("t-1")
        # Kubernetes updates a mounted Secret by swapping a symlink: a new file, not an edit.
        replacement = tmp_path / "token.new"
        replacement.write_text(ROTATED_TOKEN + "\n")
        replacement.replace(token_file)
        client.get("t-2")
    assert [call.authorization for call in served.fake.received] == [
        [f"Bearer {TOKEN}"], [f"Bearer {ROTATED_TOKEN}"]]


def test_a_token_file_that_breaks_later_keeps_the_last_token(serve: Any, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    served = serve()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with SchedulerClient(served.address, token_file=token_file) as client:
        client.get("t-1")
        token_file.unlink()
        with caplog.at_level(logging.WARNING, logger="switchyard.client"):
            client.get("t-2")
    assert served.fake.received[1].authorization == [f"Bearer {TOKEN}"]
    assert any(f"cannot read token file {token_file}" in record.getMessage() for record in caplog.records)


def test_the_token_follows_the_leader_to_every_address(serve: Any) -> None:
    leader = serve()
    standby = serve(leader=leader.address)
    with SchedulerClient(f"{standby.address},{leader.address}", token=TOKEN, failover_timeout=5) as client:
        client.get("t-1")
    assert standby.fake.received[0].authorization == [f"Bearer {TOKEN}"]
    assert leader.fake.received[0].authorization == [f"Bearer {TOKEN}"]


def test_a_refused_token_raises_unauthenticated_without_echoing_it(serve: Any,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    served = serve(refuse=True)
    with (
        caplog.at_level(logging.DEBUG),
        SchedulerClient(served.address, token=TOKEN) as client,
        pytest.raises(exceptions.Unauthenticated) as raised,
    ):
        client.get("t-1")
    assert TOKEN not in str(raised.value)
    assert not [record for record in caplog.records if TOKEN in record.getMessage()]


# --- TLS and mTLS --------------------------------------------------------------------------------


def test_tls_with_the_scheduler_ca_carries_the_token(serve: Any, certs: Certificates) -> None:
    served = serve(_server_credentials(certs))
    with SchedulerClient(served.address, tls_ca=certs.ca.cert_path, token=TOKEN) as client:
        client.get("t-1")
        client.wait("t-1", timeout=10)
    assert [call.authorization for call in served.fake.received] == [[f"Bearer {TOKEN}"]] * 2


def test_tls_settings_come_from_the_environment(serve: Any, certs: Certificates,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    served = serve(_server_credentials(certs, require_client_cert=True))
    monkeypatch.setenv("SWITCHYARD_TLS_CA", str(certs.ca.cert_path))
    monkeypatch.setenv("SWITCHYARD_TLS_CERT", str(certs.client[0]))
    monkeypatch.setenv("SWITCHYARD_TLS_KEY", str(certs.client[1]))
    with SchedulerClient(served.address) as client:
        client.get("t-1")
    assert served.fake.received[0].peer_common_name == "ops-laptop"


def test_tls_with_another_ca_is_refused(serve: Any, certs: Certificates) -> None:
    served = serve(_server_credentials(certs))
    with (
        SchedulerClient(served.address, tls_ca=certs.other_ca.cert_path, failover_timeout=0) as client,
        pytest.raises(exceptions.Unavailable),
    ):
        client.get("t-1")
    assert served.fake.received == []


def test_plaintext_to_a_tls_scheduler_is_refused(serve: Any, certs: Certificates) -> None:
    served = serve(_server_credentials(certs))
    with SchedulerClient(served.address, failover_timeout=0) as client, pytest.raises(exceptions.Unavailable):
        client.get("t-1")
    assert served.fake.received == []


def test_mtls_presents_the_client_certificate(serve: Any, certs: Certificates) -> None:
    served = serve(_server_credentials(certs, require_client_cert=True))
    cert_path, key_path = certs.client
    with SchedulerClient(served.address, tls_ca=certs.ca.cert_path, tls_cert=cert_path, tls_key=key_path,
                         token=TOKEN) as client:
        client.get("t-1")
    assert served.fake.received[0].peer_common_name == "ops-laptop"
    assert served.fake.received[0].authorization == [f"Bearer {TOKEN}"]


def test_mtls_without_a_client_certificate_is_refused(serve: Any, certs: Certificates) -> None:
    served = serve(_server_credentials(certs, require_client_cert=True))
    with (
        SchedulerClient(served.address, tls_ca=certs.ca.cert_path, failover_timeout=0) as client,
        pytest.raises(exceptions.Unavailable),
    ):
        client.get("t-1")
    assert served.fake.received == []


def test_tls_follows_the_leader_to_every_address(serve: Any, certs: Certificates) -> None:
    leader = serve(_server_credentials(certs))
    standby = serve(_server_credentials(certs), leader=leader.address)
    with SchedulerClient([standby.address, leader.address], tls_ca=certs.ca.cert_path, token=TOKEN,
                         failover_timeout=5) as client:
        client.get("t-1")
    assert leader.fake.received[0].authorization == [f"Bearer {TOKEN}"]


def test_a_server_name_override_accepts_a_certificate_for_another_name(serve: Any, certs: Certificates) -> None:
    directory = certs.directory / "named"
    cert_path, key_path = make_cert(directory, certs.ca, "sched-internal", hosts=("scheduler.internal",))
    served = serve(grpc.ssl_server_credentials([(key_path.read_bytes(), cert_path.read_bytes())]))
    with (
        SchedulerClient(served.address, tls_ca=certs.ca.cert_path, failover_timeout=0) as client,
        pytest.raises(exceptions.Unavailable),
    ):
        client.get("t-1")  # the certificate does not name 127.0.0.1
    with SchedulerClient(served.address, tls_ca=certs.ca.cert_path, tls_server_name="scheduler.internal") as client:
        client.get("t-1")
    assert len(served.fake.received) == 1


# --- unusable credentials: one clear error, before any call ------------------------------------


def test_unusable_credentials_are_reported_before_any_call(tmp_path: Path, certs: Certificates) -> None:
    missing = tmp_path / "missing"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    two_words = tmp_path / "two-words"
    two_words.write_text(f"{TOKEN} {TOKEN}\n")
    not_pem = tmp_path / "not-pem"
    not_pem.write_text("hello")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"token_file": missing}, f"cannot read token file {missing}: No such file or directory"),
        ({"token_file": empty}, f"token file {empty} is empty"),
        ({"token_file": two_words}, f"token file {two_words} holds a space"),
        ({"token": TOKEN, "token_file": empty}, "give a token or a token file, not both"),
        ({"tls_ca": missing}, f"cannot read the TLS CA file {missing}"),
        ({"tls_ca": not_pem}, f"the TLS CA file {not_pem} holds no PEM CERTIFICATE"),
        ({"tls_cert": certs.client[0]}, "a TLS client certificate was given without its key"),
        ({"tls_key": certs.client[1], "tls_ca": certs.ca.cert_path}, "a TLS client key was given without its"),
        ({"tls_server_name": "x"}, "a TLS server name was given without TLS"),
    ]
    for options, message in cases:
        with pytest.raises(CredentialError) as raised:
            SchedulerClient("127.0.0.1:1", **options)
        assert message in raised.value.message, options
        assert TOKEN not in raised.value.message
        assert isinstance(raised.value, exceptions.InvalidArgument)


def test_environment_token_errors_name_the_variable_not_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, f"{TOKEN}\nsecond-line")
    with pytest.raises(CredentialError) as raised:
        resolve_token()
    assert raised.value.message.startswith(f"${TOKEN_ENV} holds")
    assert TOKEN not in raised.value.message


def test_a_token_source_never_shows_its_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    for source in (TokenSource(TOKEN), TokenSource(path=token_file)):
        assert TOKEN not in repr(source) and TOKEN not in source.origin
        assert source.current() == TOKEN


def test_tls_false_ignores_the_tls_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHYARD_TLS_CA", str(tmp_path / "missing"))
    assert resolve_tls(tls=False) is None
    with pytest.raises(CredentialError):
        resolve_tls()


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1:50051", True), ("localhost:50051", True), ("[::1]:50051", True), ("127.0.0.2:1", True),
    ("unix:///run/switchyard.sock", True), ("dns:///localhost:50051", True),
    ("10.0.0.4:50051", False), ("sched.internal:50051", False), ("[2001:db8::1]:50051", False),
])
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


def test_a_token_in_clear_to_another_machine_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    # 192.0.2.0/24 is reserved for documentation: nothing answers, and no call is made here.
    security._warned_plaintext.discard("192.0.2.7:50051")  # once per process: start afresh
    with caplog.at_level(logging.WARNING, logger="switchyard.client"):
        for _ in range(2):
            client = SchedulerClient("192.0.2.7:50051", token=TOKEN)
            client._stub_for("192.0.2.7:50051")
            client.close()
    warnings = [record.getMessage() for record in caplog.records if "without TLS" in record.getMessage()]
    assert warnings == ["sending the token given to 192.0.2.7:50051 without TLS: anyone on the network path can "
                        "read it; give a TLS CA (--tls-ca / SWITCHYARD_TLS_CA) unless a mesh encrypts the connection"]


def test_concurrent_calls_all_carry_the_token(serve: Any, tmp_path: Path) -> None:
    served = serve()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with SchedulerClient(served.address, token_file=token_file) as client:
        threads = [threading.Thread(target=client.get, args=(f"t-{index}",)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(served.fake.received) == 8
    assert all(call.authorization == [f"Bearer {TOKEN}"] for call in served.fake.received)


# --- the command line ----------------------------------------------------------------------------


def test_cli_sends_the_token_from_a_file_given_before_or_after_the_command(
        serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    served = serve()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert cli.main(["--scheduler", served.address, "--token-file", str(token_file), "queues"]) == 0
    assert cli.main(["queues", "--scheduler", served.address, "--token-file", str(token_file)]) == 0
    assert [call.authorization for call in served.fake.received] == [[f"Bearer {TOKEN}"]] * 2
    assert TOKEN not in capsys.readouterr().err


def test_cli_reads_the_token_and_tls_from_the_environment(serve: Any, certs: Certificates,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    served = serve(_server_credentials(certs, require_client_cert=True))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv("SWITCHYARD_TLS_CA", str(certs.ca.cert_path))
    monkeypatch.setenv("SWITCHYARD_TLS_CERT", str(certs.client[0]))
    monkeypatch.setenv("SWITCHYARD_TLS_KEY", str(certs.client[1]))
    assert cli.main(["--scheduler", served.address, "get", "t-1"]) == 0
    assert served.fake.received[0].authorization == [f"Bearer {TOKEN}"]
    assert served.fake.received[0].peer_common_name == "ops-laptop"


def test_cli_tls_flags_reach_an_mtls_scheduler(serve: Any, certs: Certificates) -> None:
    served = serve(_server_credentials(certs, require_client_cert=True))
    cert_path, key_path = certs.client
    assert cli.main(["--scheduler", served.address, "--tls-ca", str(certs.ca.cert_path), "--tls-cert", str(cert_path),
                     "--tls-key", str(key_path), "get", "t-1"]) == 0
    assert served.fake.received[0].peer_common_name == "ops-laptop"


def test_cli_without_the_scheduler_ca_cannot_connect(serve: Any, certs: Certificates,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    served = serve(_server_credentials(certs))
    code = cli.main(["--scheduler", served.address, "--failover-timeout", "0", "--tls-ca",
                     str(certs.other_ca.cert_path), "get", "t-1"])
    assert code == EXIT_UNAVAILABLE
    assert "error: UNAVAILABLE" in capsys.readouterr().err


def test_cli_reports_an_unusable_token_file_as_bad_usage_before_any_call(
        serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    served = serve()
    missing = tmp_path / "missing-token"
    assert cli.main(["--scheduler", served.address, "--token-file", str(missing), "queues"]) == EXIT_USAGE
    assert capsys.readouterr().err == f"switchyard: error: cannot read token file {missing}: No such file or directory\n"
    assert served.fake.received == []


def test_cli_says_how_to_give_a_token_when_the_scheduler_wants_one(
        serve: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    served = serve(refuse=True)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert cli.main(["--scheduler", served.address, "queues"]) == EXIT_FAILURE
    error = capsys.readouterr().err
    assert error == ("error: UNAUTHENTICATED: no valid token: send 'authorization: Bearer <token>' "
                     f"(give a token with --token-file FILE or {TOKEN_ENV})\n")


def test_cli_help_lists_the_security_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    shown = capsys.readouterr().out
    for flag in ("--tls-ca FILE", "--tls-cert FILE", "--tls-key FILE", "--tls-server-name NAME", "--token-file FILE",
                 "SWITCHYARD_TLS_CA", TOKEN_ENV):
        assert flag in shown
