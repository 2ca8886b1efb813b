"""The hardened set-up of docs/security.md, end to end: a scheduler with TLS, client certificates
and role tokens, on a Redis that speaks TLS only and wants a password; a real agent that dials it
with its certificate and its token (from the environment) and runs a real Celery worker whose
broker is that Redis over TLS; a client that submits with its own token.

What a user would notice is asserted: the task runs and succeeds; an agent whose token is bound
to another worker id is refused and says so in one line; the user code's process never holds
the agent's token; and no log line of any process holds a token or the Redis password.

The test skips, saying why, when the scheduler lacks the TLS and token settings or the
redis-server was built without TLS.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from switchyard import SchedulerClient
from switchyard.v1 import scheduler_pb2_grpc

from tests.support.certs import make_ca, make_cert
from tests.support.redis_server import wait_until
from tests.support.redis_tls import DEFAULT_PASSWORD, TlsRedisServer, redis_supports_tls
from tests.support.secret_logs import register
from tests.support.stack import CHANNEL_OPTIONS, VENV_BIN, Stack

TOKENS = {
    "ci": ("client", "", register("sy-e2e-client-token-9d8c")),
    "ops": ("admin", "", register("sy-e2e-admin-token-7b6a")),
    "tls-w1": ("agent", "tls-w1", register("sy-e2e-agent-token-5f4e")),
}
"""name -> (role, worker id, token)."""


def _scheduler_settings_missing() -> str | None:
    """Why the scheduler cannot run this set-up, or None when it can."""
    help_text = subprocess.run([str(VENV_BIN / "switchyard-scheduler"), "--help"], capture_output=True, text=True,
                               timeout=60, check=False).stdout
    lacking = [flag for flag in ("--tls-cert", "--tls-key", "--tls-client-ca", "--auth-tokens") if flag not in help_text]
    return f"the scheduler has no {', '.join(lacking)} yet (issue 11, server side)" if lacking else None


pytestmark = [
    pytest.mark.skipif(not redis_supports_tls(), reason="this redis-server was built without TLS"),
]


class SecureStack(Stack):
    """A Stack whose own channel (health checks, ListWorkers) uses TLS, a client certificate and
    the admin token, as an operator's tools would."""

    def __init__(self, redis_server: TlsRedisServer, workdir: Path, scheduler_env: dict[str, str],
                 credentials: grpc.ChannelCredentials) -> None:
        self.credentials = credentials
        super().__init__(redis_server, workdir, scheduler_env=scheduler_env)

    def _reset_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = grpc.secure_channel(self.address, self.credentials, options=CHANNEL_OPTIONS)
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)  # type: ignore[no-untyped-call]


@pytest.fixture
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureStack, dict[str, Path]]]:
    missing = _scheduler_settings_missing()
    if missing:
        pytest.skip(missing)
    directory = tmp_path_factory.mktemp("security-e2e")
    certs_dir = directory / "certs"
    ca = make_ca(certs_dir)
    server_cert, server_key = make_cert(certs_dir, ca, "scheduler")
    files = {"ca": ca.cert_path}
    files["agent_cert"], files["agent_key"] = make_cert(certs_dir, ca, "tls-w1", client=True)
    files["ops_cert"], files["ops_key"] = make_cert(certs_dir, ca, "ops", client=True)
    tokens_file = directory / "tokens.yaml"
    tokens_file.write_text("tokens:\n" + "".join(f"  - {json.dumps(_entry(name))}\n" for name in TOKENS))
    redis_server = TlsRedisServer(directory / "redis-certs").start()
    admin = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(ca.cert_path.read_bytes(), files["ops_key"].read_bytes(),
                                     files["ops_cert"].read_bytes()),
        grpc.access_token_call_credentials(TOKENS["ops"][2]))
    stack = SecureStack(redis_server, directory / "stack", {
        "SWITCHYARD_TLS_CERT_FILE": str(server_cert), "SWITCHYARD_TLS_KEY_FILE": str(server_key),
        "SWITCHYARD_TLS_CLIENT_CA_FILE": str(ca.cert_path), "SWITCHYARD_AUTH_TOKENS_FILE": str(tokens_file),
    }, admin)
    try:
        stack.start_scheduler()
        yield stack, files
    finally:
        stack.close()
        redis_server.stop()


def _entry(name: str) -> dict[str, str]:
    """One entry of the scheduler's token file (YAML is a superset of JSON): the digest, never the token."""
    role, worker_id, token = TOKENS[name]
    entry = {"name": name, "role": role, "sha256": hashlib.sha256(token.encode()).hexdigest()}
    return {**entry, "worker_id": worker_id} if worker_id else entry


def _agent_env(files: dict[str, Path], token: str) -> dict[str, str]:
    return {"SWITCHYARD_TLS_CA": str(files["ca"]), "SWITCHYARD_TLS_CERT": str(files["agent_cert"]),
            "SWITCHYARD_TLS_KEY": str(files["agent_key"]), "SWITCHYARD_TOKEN": token}


def test_a_task_runs_through_the_hardened_set_up(secure_stack: tuple[SecureStack, dict[str, Path]]) -> None:
    stack, files = secure_stack
    agent_token = TOKENS["tls-w1"][2]
    stack.add_worker("tls-w1", env=_agent_env(files, agent_token))
    # The same token presented by another worker: the scheduler refuses it, the agent says so.
    impostor = stack.add_worker("tls-w2", env=_agent_env(files, agent_token))
    stack.wait_workers_connected(["tls-w1"])

    with SchedulerClient(stack.address, tls_ca=files["ca"], tls_cert=files["ops_cert"], tls_key=files["ops_key"],
                         token=TOKENS["ci"][2]) as client:
        submitted = client.submit("e2e.sleep", args=[0.05, "over-tls"])
        task = client.wait(submitted.task_id, timeout=60)
    assert task.state == "succeeded", task
    assert task.worker_id == "tls-w1"

    wait_until(lambda: "refused this agent" in impostor.log_path.read_text(errors="replace"), timeout=30,
               message="the impostor agent to log its refusal")
    impostor.stop()

    # The user code's process (a Celery pool child) never held the agent's token.
    [run] = [run for run in stack.runs() if run["tag"] == "over-tls"]
    user_code_environment = Path(f"/proc/{run['pid']}/environ").read_bytes()
    assert b"SWITCHYARD_TOKEN" not in user_code_environment
    assert agent_token.encode() not in user_code_environment

    secrets = [token for _role, _worker, token in TOKENS.values()] + [DEFAULT_PASSWORD]
    for log_path in sorted(stack.workdir.glob("*.log")):
        text = log_path.read_text(errors="replace")
        assert not [secret for secret in secrets if secret in text], f"a secret is in {log_path.name}"
