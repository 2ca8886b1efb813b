"""The Go client (clients/go) against a live stack: `go test ./...` with SWITCHYARD_SCHEDULER set.

The scheduler and a real Celery worker running the e2e app come from the `stack` fixture; the Go
suite's live tests (clients/go/live_test.go, clients/go/cmd/switchyard-submit/main_test.go) submit,
wait, watch, cancel and list through it, and its unit tests (fakes on loopback: leader following,
retries, TLS, mTLS, tokens) run in the same `go test`. A second run puts the live tests through a
scheduler with TLS, client certificates and role tokens (issue 11), the Go client reading its
credentials from SWITCHYARD_TLS_* and SWITCHYARD_TOKEN as users would set them.

The module builds offline from Debian's Go packages (clients/go/tools/debian-vendor.sh makes
vendor/ from them; `make deps-go` installs them). Without Go or those packages the tests skip
with one line that says what is missing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from switchyard.v1 import scheduler_pb2_grpc

from tests.support.certs import make_ca, make_cert
from tests.support.redis_server import RedisServer, env_without_switchyard
from tests.support.secret_logs import register
from tests.support.stack import CHANNEL_OPTIONS, REPO_ROOT, VENV_BIN, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

GO_MODULE = REPO_ROOT / "clients" / "go"
WORKER_ID = "go-w1"
# Test functions that must PASS, not skip: proof that the live tests saw the scheduler.
LIVE_TESTS = (
    "TestLiveSubmitAndWaitReturnsTheResult",
    "TestLiveWatchSeesTheTaskRunAndEnd",
    "TestLiveCancelAPendingTask",
    "TestLiveErrorsAreTyped",
    "TestLiveSubmitBatchAndIdempotency",
    "TestLiveQueuesAndWorkers",
    "TestLiveADeadAddressBeforeTheSchedulerIsSkipped",
    "TestLiveSubmitWaitPrintsTheTerminalTaskAsProtoJSON",
    "TestLiveSubmitWithoutWaitPrintsTheTaskAsSubmitted",
)
SECURE_WORKER_ID = "go-tls-w1"
# name -> (role, worker id bound to the token, token). The scheduler's file holds digests only.
TOKENS = {
    "go-client": ("client", "", register("sy-go-client-token-31c9")),
    "go-admin": ("admin", "", register("sy-go-admin-token-8e2d")),
    "go-agent": ("agent", SECURE_WORKER_ID, "sy-go-agent-token-a41f"),
}


def _go_env(scheduler: str | None = None, worker_id: str = WORKER_ID) -> dict[str, str]:
    """The environment of every `go` command: offline, from vendor/, no SWITCHYARD_* of the
    caller's (a developer's token must not reach the test scheduler)."""
    env = env_without_switchyard()
    env.update({"GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GOTOOLCHAIN": "local", "GO111MODULE": "on"})
    if not any(env.get(name) for name in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(REPO_ROOT / ".tools" / "go-build")  # kept between runs: rebuilds are quick
    if scheduler is not None:
        env["SWITCHYARD_SCHEDULER"] = scheduler
        env["SWITCHYARD_TEST_WORKER_ID"] = worker_id
    return env


def _prepare_go_module() -> None:
    """Make vendor/ from Debian's packages, or skip saying what is missing."""
    if shutil.which("go") is None:
        pytest.skip("Go client tests skipped: `go` is not on PATH (make deps-go installs golang-go and Debian's gRPC-Go packages)")
    made = subprocess.run(
        ["sh", str(GO_MODULE / "tools" / "debian-vendor.sh")], capture_output=True, text=True, timeout=60
    )
    if made.returncode != 0:
        reason = (made.stderr.strip().splitlines() or ["tools/debian-vendor.sh failed"])[-1]
        pytest.skip(f"Go client tests skipped: {reason} (make deps-go installs them)")


def _go(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["go", *args], cwd=GO_MODULE, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_go_client_suite_passes_against_a_live_scheduler(stack: Stack) -> None:
    _prepare_go_module()
    stack.add_worker(WORKER_ID, "cpu", concurrency=2)
    # Compile the test binaries while the worker starts (a cold build takes ~20 s, cached ~1 s).
    built = _go("test", "-count=1", "-run", "^$", "./...", env=_go_env(), timeout=240)
    assert built.returncode == 0, f"go test could not build the Go client:\n{built.stdout}\n{built.stderr}"
    stack.wait_workers_connected([WORKER_ID])

    result = _go("test", "-count=1", "-v", "./...", env=_go_env(stack.address), timeout=180)
    _assert_passed(result, LIVE_TESTS)


def _assert_passed(result: subprocess.CompletedProcess[str], required: tuple[str, ...]) -> None:
    """`go test -v` passed, and every test in `required` ran and passed (none skipped)."""
    output = result.stdout + result.stderr
    failures = "\n".join(line for line in output.splitlines() if re.match(r"\s*(--- FAIL|FAIL|panic:)", line))
    assert result.returncode == 0, f"go test failed:\n{failures}\n----- full output -----\n{output[-6000:]}"
    passed = set(re.findall(r"--- PASS: (\w+)", output))
    missing = [name for name in required if name not in passed]
    assert not missing, f"live Go tests did not pass (skipped or absent): {missing}\n{output[-4000:]}"


def _security_flags_missing() -> str | None:
    """Why the scheduler cannot run with TLS and tokens, or None when it can."""
    help_text = subprocess.run([str(VENV_BIN / "switchyard-scheduler"), "--help"], capture_output=True, text=True,
                               timeout=60, check=False).stdout
    lacking = [flag for flag in ("--tls-cert", "--tls-key", "--tls-client-ca", "--auth-tokens") if flag not in help_text]
    return f"the scheduler has no {', '.join(lacking)} flags (issue 11)" if lacking else None


class _SecureStack(Stack):
    """A Stack whose own channel (health checks, ListWorkers) uses TLS, a client certificate and
    the admin token, as an operator's tools would."""

    def __init__(self, redis_server: RedisServer, workdir: Path, scheduler_env: dict[str, str],
                 credentials: grpc.ChannelCredentials) -> None:
        self.credentials = credentials
        super().__init__(redis_server, workdir, scheduler_env=scheduler_env)

    def _reset_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = grpc.secure_channel(self.address, self.credentials, options=CHANNEL_OPTIONS)
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)  # type: ignore[no-untyped-call]


def test_go_client_over_tls_with_client_certificates_and_a_token(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    missing = _security_flags_missing()
    if missing:
        pytest.skip(f"Go client TLS and token tests skipped: {missing}")
    _prepare_go_module()
    certs = tmp_path / "certs"
    ca = make_ca(certs)
    server_cert, server_key = make_cert(certs, ca, "scheduler")
    client_cert, client_key = make_cert(certs, ca, "go-client", client=True)
    agent_cert, agent_key = make_cert(certs, ca, SECURE_WORKER_ID, client=True)
    admin_cert, admin_key = make_cert(certs, ca, "go-admin", client=True)
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text("tokens:\n" + "".join(
        f"  - {{name: {name}, role: {role}, sha256: '{hashlib.sha256(token.encode()).hexdigest()}'"
        + (f", worker_id: {worker}" if worker else "") + "}\n"
        for name, (role, worker, token) in TOKENS.items()
    ))
    admin = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(ca.cert_path.read_bytes(), admin_key.read_bytes(), admin_cert.read_bytes()),
        grpc.access_token_call_credentials(TOKENS["go-admin"][2]),
    )
    stack = _SecureStack(fresh_redis, tmp_path / "stack", {
        "SWITCHYARD_TLS_CERT_FILE": str(server_cert), "SWITCHYARD_TLS_KEY_FILE": str(server_key),
        "SWITCHYARD_TLS_CLIENT_CA_FILE": str(ca.cert_path), "SWITCHYARD_AUTH_TOKENS_FILE": str(tokens_file),
    }, admin)
    try:
        stack.start_scheduler()
        stack.add_worker(SECURE_WORKER_ID, "cpu", concurrency=2, env={
            "SWITCHYARD_TLS_CA": str(ca.cert_path), "SWITCHYARD_TLS_CERT": str(agent_cert),
            "SWITCHYARD_TLS_KEY": str(agent_key), "SWITCHYARD_TOKEN": TOKENS["go-agent"][2],
        })
        stack.wait_workers_connected([SECURE_WORKER_ID])
        env = _go_env(stack.address, worker_id=SECURE_WORKER_ID)
        env.update({
            "SWITCHYARD_TLS_CA": str(ca.cert_path), "SWITCHYARD_TLS_CERT": str(client_cert),
            "SWITCHYARD_TLS_KEY": str(client_key), "SWITCHYARD_TOKEN": TOKENS["go-client"][2],
        })
        result = _go("test", "-count=1", "-v", "-run", "^TestLive", "./...", env=env, timeout=240)
        _assert_passed(result, (*LIVE_TESTS, "TestLiveSecureRefusesAMissingOrUnknownToken"))
    finally:
        stack.close()

