"""The token file, the access policy and the safe-default checks (scheduler/api/auth.py,
scheduler/main.py), without a server: the integration tier proves them over real gRPC."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from externalscaler import externalscaler_pb2
from switchyard.v1 import agent_pb2, scheduler_pb2

from scheduler.api.auth import (
    ROLES_BY_METHOD,
    AccessPolicy,
    Role,
    TokenFile,
    bearer_token,
    parse_token_file,
)
from scheduler.config import ConfigError, load_settings
from scheduler.errors import PermissionDenied, Unauthenticated
from scheduler.main import Security, exposure_problem, is_loopback
from scheduler.settings import Settings

CLEAR_TOKEN = "not-a-digest-but-a-token-in-clear"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    return str(path)


def standard(tmp_path: Path) -> str:
    return write(tmp_path, f"""tokens:
  - {{name: ci, role: client, sha256: "{digest('t-client')}"}}
  - {{name: ops, role: admin, sha256: "{digest('t-admin')}"}}
  - {{name: gpu-1, role: agent, worker_id: gpu-1, sha256: "{digest('t-agent')}"}}
""")


def test_every_rpc_has_its_roles() -> None:
    """A new RPC must be given roles here, or it stays admin-only (and this test says so)."""
    services = (scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"],
                agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"],
                externalscaler_pb2.DESCRIPTOR.services_by_name["ExternalScaler"])
    methods = {f"/{service.full_name}/{method.name}" for service in services for method in service.methods}
    assert methods == set(ROLES_BY_METHOD)


def test_a_token_file_is_read_into_entries(tmp_path: Path) -> None:
    entries = parse_token_file(standard(tmp_path))
    assert [(e.name, e.role, e.worker_id) for e in entries] == [
        ("ci", Role.CLIENT, ""), ("ops", Role.ADMIN, ""), ("gpu-1", Role.AGENT, "gpu-1")]


@pytest.mark.parametrize(("body", "problem"), [
    ("tokens:\n  - {name: a, role: wizard, sha256: '%s'}\n", "tokens[0].role: 'wizard' must be one of client, admin, agent"),
    ("tokens:\n  - {name: a, role: agent, sha256: '%s'}\n", "has role agent and needs worker_id"),
    ("tokens:\n  - {name: a, role: client, worker_id: w, sha256: '%s'}\n", "only agent tokens name a worker"),
    ("tokens:\n  - {name: a, role: client, sha256: '%s', secret: x}\n", "unknown key 'secret'"),
    ("tokens:\n  - {name: a, role: client, sha256: '%s'}\n  - {name: a, role: admin, sha256: '%s'}\n",
     "name 'a' is already used on line 2"),
    ("tokens:\n  - {role: client, sha256: '%s'}\n", "missing required key 'name'"),
    ("{}\n", "missing required key 'tokens'"),
])
def test_a_bad_token_file_names_the_line_and_the_problem(tmp_path: Path, body: str, problem: str) -> None:
    digests = (digest("one"), digest("two"))[: body.count("%s")]
    with pytest.raises(ConfigError) as raised:
        parse_token_file(write(tmp_path, body % digests))
    assert "token file" in str(raised.value) and problem in str(raised.value)


def test_a_token_pasted_in_clear_is_refused_without_repeating_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_token_file(write(tmp_path, f"tokens:\n  - {{name: a, role: client, sha256: {CLEAR_TOKEN}}}\n"))
    assert "64 hex digits" in str(raised.value)
    assert CLEAR_TOKEN not in str(raised.value)


def test_the_same_token_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the same token is listed on line 2"):
        parse_token_file(write(tmp_path, f"tokens:\n  - {{name: a, role: client, sha256: '{digest('x')}'}}\n"
                                         f"  - {{name: b, role: admin, sha256: '{digest('x').upper()}'}}\n"))


def test_a_missing_token_file_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"cannot read the token file /nonexistent/tokens.yaml \(--auth-tokens\)"):
        TokenFile("/nonexistent/tokens.yaml")


def test_tokens_are_identified_by_their_digest(tmp_path: Path) -> None:
    tokens = TokenFile(standard(tmp_path))
    found = tokens.identify("t-admin")
    assert found is not None and found.name == "ops"
    assert tokens.identify("t-admin ") is None
    assert tokens.identify("") is None


def test_a_reload_revokes_what_left_and_keeps_what_stayed(tmp_path: Path) -> None:
    path = standard(tmp_path)
    tokens = TokenFile(path)
    agent, admin = tokens.identify("t-agent"), tokens.identify("t-admin")
    assert agent is not None and admin is not None
    agent_revoked, admin_revoked = tokens.revocation(agent), tokens.revocation(admin)
    Path(path).write_text(f"tokens:\n  - {{name: ops, role: admin, sha256: '{digest('t-admin')}'}}\n")
    assert tokens.reload_if_changed()
    assert agent_revoked.is_set() and not admin_revoked.is_set()
    assert tokens.identify("t-agent") is None
    assert tokens.revocation(agent).is_set()  # asked after the fact: already revoked
    assert not tokens.reload_if_changed()  # unchanged file: nothing to do


def test_a_broken_reload_keeps_the_tokens_in_force(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = standard(tmp_path)
    tokens = TokenFile(path)
    Path(path).write_text("tokens: [")
    assert not tokens.reload_if_changed()
    assert tokens.identify("t-client") is not None
    assert "stay in force" in caplog.text
    assert not tokens.reload_if_changed()
    assert caplog.text.count("stay in force") == 1  # said once per change, not every second


@pytest.mark.parametrize(("values", "token"), [([], None), (["Bearer abc"], "abc"), (["bearer  abc "], "abc")])
def test_bearer_tokens_are_read_from_the_metadata(values: list[str], token: str | None) -> None:
    assert bearer_token(values) == token


@pytest.mark.parametrize("values", [["abc"], ["Basic abc"], ["Bearer "], ["Bearer a", "Bearer b"]])
def test_a_malformed_authorization_is_unauthenticated_without_the_token(values: list[str]) -> None:
    with pytest.raises(Unauthenticated) as raised:
        bearer_token(values)
    assert "abc" not in str(raised.value)


def test_the_policy_by_role(tmp_path: Path) -> None:
    policy = AccessPolicy(TokenFile(standard(tmp_path)))
    submit, purge = "/switchyard.v1.Scheduler/SubmitTask", "/switchyard.v1.Scheduler/PurgeDeadLetters"
    connect, scaler = "/switchyard.v1.AgentGateway/Connect", "/externalscaler.ExternalScaler/GetMetrics"
    reflect, health = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "/grpc.health.v1.Health/Check"
    assert policy.admit(submit, ["Bearer t-client"], None).token.name == "ci"  # type: ignore[union-attr]
    assert policy.admit(purge, ["Bearer t-admin"], None).token.name == "ops"  # type: ignore[union-attr]
    with pytest.raises(PermissionDenied, match=r"token 'ci' has role client; .*PurgeDeadLetters needs role admin"):
        policy.admit(purge, ["Bearer t-client"], None)
    with pytest.raises(PermissionDenied, match="needs role agent"):
        policy.admit(connect, ["Bearer t-admin"], None)
    with pytest.raises(Unauthenticated, match="needs a token"):
        policy.admit(submit, [], None)
    with pytest.raises(Unauthenticated, match="not valid on this scheduler"):
        policy.admit(submit, ["Bearer nope"], None)
    with pytest.raises(Unauthenticated):
        policy.admit(scaler, [], None)  # no certificate: KEDA needs mTLS (or --keda-scaler-open)
    assert policy.admit(scaler, [], "keda").certificate_cn == "keda"
    assert policy.admit(reflect, ["Bearer t-agent"], None).token is not None
    assert policy.is_open(health)
    assert AccessPolicy(policy.tokens, keda_scaler_open=True).is_open(scaler)


def test_client_certificates_alone_admit_every_caller_with_one() -> None:
    policy = AccessPolicy(None, client_certificates=True)
    caller = policy.admit("/switchyard.v1.Scheduler/PurgeDeadLetters", [], "gpu-1")
    assert caller.certificate_cn == "gpu-1" and caller.token is None
    with pytest.raises(Unauthenticated, match="authenticates by token only"):
        policy.admit_http("Bearer x")


def test_the_http_api_takes_client_and_admin_tokens(tmp_path: Path) -> None:
    policy = AccessPolicy(TokenFile(standard(tmp_path)))
    assert policy.admit_http("Bearer t-client").token is not None
    with pytest.raises(PermissionDenied, match="needs role admin or client"):
        policy.admit_http("Bearer t-agent")
    with pytest.raises(Unauthenticated, match="Authorization: Bearer"):
        policy.admit_http(None)
    assert AccessPolicy(None).admit_http(None).token is None  # auth off: open, as before


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False)])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_network_address_needs_tls_and_authentication_or_insecure() -> None:
    bare = Security(None, None, AccessPolicy(None))
    assert exposure_problem(Settings(), bare) is None  # 127.0.0.1 by default
    problem = exposure_problem(Settings(listen="0.0.0.0:50051"), bare)
    assert problem is not None
    assert "--listen 0.0.0.0:50051" in problem and "TLS (--tls-cert, --tls-key)" in problem
    assert "--insecure" in problem and "\n" not in problem
    assert "--metrics-listen 0.0.0.0:9108" in (exposure_problem(Settings(metrics_listen="0.0.0.0:9108"), bare) or "")
    assert exposure_problem(Settings(listen="0.0.0.0:50051", insecure=True), bare) is None
    authenticated_only = Security(None, None, AccessPolicy(None, client_certificates=True))
    assert "authentication" not in (exposure_problem(Settings(listen=":50051"), authenticated_only) or "")


def test_tls_files_go_together() -> None:
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file go together"):
        load_settings(["--tls-cert", "a.pem"], {})
    with pytest.raises(ConfigError, match="needs TLS"):
        load_settings(["--tls-client-ca", "ca.pem"], {})


def test_bool_settings_from_flags_environment_and_file(tmp_path: Path) -> None:
    assert load_settings(["--insecure", "--no-reflection"], {}).insecure is True
    assert load_settings(["--no-reflection"], {}).reflection is False
    assert load_settings([], {"SWITCHYARD_INSECURE": "true"}).insecure is True
    with pytest.raises(ConfigError, match="setting insecure='maybe'"):
        load_settings([], {"SWITCHYARD_INSECURE": "maybe"})
    config = tmp_path / "c.yaml"
    config.write_text("reflection: false\nkeda_scaler_open: true\n")
    settings = load_settings(["--config", str(config)], {})
    assert (settings.reflection, settings.keda_scaler_open) == (False, True)
