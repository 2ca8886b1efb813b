"""The Node.js client (clients/node) against a real stack: its own test suite, run by Node's test
runner, and its example's output checked against protobuf's own JSON printer.

The stack is a scheduler with a standby on the same Redis and a Celery worker of
tests/support/e2e_app.py; when the scheduler has TLS and token settings, a second scheduler that
requires TLS, client certificates and tokens. The addresses and credentials reach the Node tests
through the environment (clients/node/testing/live.js lists the variables). Skips, in one line,
where Node.js or the client's npm packages cannot be had.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.certs import make_ca, make_cert
from tests.support.node import NODE_CLIENT_DIR, node_client_problem, node_env
from tests.support.schedulers import NOT_SERVING, SchedulerProc
from tests.support.secret_logs import register
from tests.support.stack import REPO_ROOT, VENV_BIN, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

NODE_TEST_TIMEOUT_SECONDS = 120
SECURE_SETTINGS = (
    "SWITCHYARD_TLS_CERT_FILE",
    "SWITCHYARD_TLS_KEY_FILE",
    "SWITCHYARD_TLS_CLIENT_CA_FILE",
    "SWITCHYARD_AUTH_TOKENS_FILE",
)
"""The scheduler's settings (issue 11) the TLS and token tests need."""
SECURE_KEY_PREFIX = "sy-node-secure"
"""The secure scheduler's own key prefix: it leads its own keys instead of standing by."""


@pytest.fixture()
def node() -> str:
    problem = node_client_problem()
    if problem:
        pytest.skip(problem)
    return "node"


def _wait_tls_serving(
    address: str, credentials: grpc.ChannelCredentials, proc: SchedulerProc
) -> None:
    deadline = time.monotonic() + 30
    last: object = None
    with grpc.secure_channel(address, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not proc.alive():
                raise AssertionError(f"the TLS scheduler exited:\n{proc.log_tail()}")
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError as error:
                last = error.code()
            time.sleep(0.1)
    raise AssertionError(
        f"the TLS scheduler is not SERVING after 30 s (last: {last}):\n{proc.log_tail()}"
    )


@pytest.fixture()
def secure_env(stack: Stack, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A scheduler requiring TLS, client certificates and tokens, as SWITCHYARD_SECURE_* variables
    for the Node tests; or SWITCHYARD_SECURE_SKIP saying why there is none."""
    help_text = subprocess.run(
        [str(VENV_BIN / "switchyard-scheduler"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    missing = [setting for setting in SECURE_SETTINGS if setting not in help_text]
    if missing:
        yield {
            "SWITCHYARD_SECURE_SKIP": f"the scheduler has no {', '.join(missing)} setting, so no TLS scheduler to test against"
        }
        return
    certs = tmp_path / "certs"
    ca = make_ca(certs)
    wrong_ca = make_ca(certs, "unrelated-ca")
    server_cert, server_key = make_cert(certs, ca, "scheduler")
    client_cert, client_key = make_cert(certs, ca, "node-client", client=True)
    tokens = {"node-ci": register(secrets.token_urlsafe(24)), "node-ci-2": register(secrets.token_urlsafe(24))}
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text(
        "tokens:\n"
        + "".join(
            f'  - {{name: {name}, role: client, sha256: "{hashlib.sha256(token.encode()).hexdigest()}"}}\n'
            for name, token in tokens.items()
        )
    )
    scheduler = SchedulerProc(
        stack.redis_url,
        stack.workdir,
        "secure",
        env={
            "SWITCHYARD_KEY_PREFIX": SECURE_KEY_PREFIX,
            "SWITCHYARD_TLS_CERT_FILE": str(server_cert),
            "SWITCHYARD_TLS_KEY_FILE": str(server_key),
            "SWITCHYARD_TLS_CLIENT_CA_FILE": str(ca.cert_path),
            "SWITCHYARD_AUTH_TOKENS_FILE": str(tokens_file),
        },
    ).start()
    try:
        credentials = grpc.ssl_channel_credentials(
            ca.cert_path.read_bytes(), client_key.read_bytes(), client_cert.read_bytes()
        )
        _wait_tls_serving(scheduler.address, credentials, scheduler)
        yield {
            "SWITCHYARD_SECURE_SCHEDULER": scheduler.address,
            "SWITCHYARD_SECURE_CA": str(ca.cert_path),
            "SWITCHYARD_SECURE_WRONG_CA": str(wrong_ca.cert_path),
            "SWITCHYARD_SECURE_CLIENT_CERT": str(client_cert),
            "SWITCHYARD_SECURE_CLIENT_KEY": str(client_key),
            "SWITCHYARD_SECURE_TOKEN": tokens["node-ci"],
            "SWITCHYARD_SECURE_OTHER_TOKEN": tokens["node-ci-2"],
        }
    finally:
        scheduler.close()


def _summary(output: str) -> dict[str, int]:
    """The counts of the runner's closing lines (`# pass 21`, `# fail 0`, ...)."""
    return {
        name: int(count)
        for name, count in re.findall(
            r"^# (tests|pass|fail|cancelled|skipped) (\d+)$", output, re.M
        )
    }


def test_node_client_suite_passes_against_a_live_stack(
    stack: Stack, node: str, secure_env: dict[str, str]
) -> None:
    stack.add_worker("w1", "cpu", concurrency=2)
    standby = SchedulerProc(stack.redis_url, stack.workdir, "standby").start()
    try:
        stack.wait_workers_connected(["w1"])
        standby.wait_health(NOT_SERVING)
        env = node_env(
            SWITCHYARD_SCHEDULER=stack.address, SWITCHYARD_STANDBY=standby.address, **secure_env
        )
        started = time.monotonic()
        run = subprocess.run(
            [node, "--test", str(NODE_CLIENT_DIR / "test")],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TEST_TIMEOUT_SECONDS,
        )
        took = time.monotonic() - started
    finally:
        standby.close()
    output = run.stdout + run.stderr
    failures = "\n".join(re.findall(r"^not ok .*$", output, re.M)) or output[-6000:]
    assert run.returncode == 0, f"node --test failed:\n{failures}\n\n{output[-12000:]}"
    counts = _summary(output)
    assert counts.get("fail") == 0 and counts.get("pass", 0) >= 20, counts
    # The only tests allowed to skip are the TLS ones, and only when the scheduler cannot do TLS.
    skipped = re.findall(r"^ok \d+ - (.*) # SKIP (.*)$", output, re.M)
    allowed = secure_env.get("SWITCHYARD_SECURE_SKIP")
    unexpected = [
        f"{name}: {reason}" for name, reason in skipped if not (allowed and reason == allowed)
    ]
    assert not unexpected, f"unexpected skips: {unexpected}"
    assert took < 60, f"the Node suite took {took:.0f} s; keep it short"


def test_the_example_prints_what_protobufs_json_printer_prints(stack: Stack, node: str) -> None:
    """examples/submit.js --wait prints the canonical proto3 JSON of the terminal task: exactly
    what protobuf's own printer (json_format, as Go's protojson) makes of the same Task."""
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    run = subprocess.run(
        [
            node,
            str(NODE_CLIENT_DIR / "examples" / "submit.js"),
            "--scheduler",
            stack.address,
            "--task",
            "e2e.echo",
            "--args",
            '["a", 2]',
            "--kwargs",
            '{"n": 3, "nested": {"f": 1.5, "none": null}}',
            "--content-type",
            "text",
            "--wait",
        ],
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["state"] == "TASK_STATE_SUCCEEDED", printed
    assert printed == json_format.MessageToDict(stack.get(printed["taskId"]))
    assert json.loads(printed["resultJson"]) == {
        "args": ["a", 2],
        "kwargs": {"n": 3, "nested": {"f": 1.5, "none": None}},
    }
