"""Start-up failures a user can cause are one line and a non-zero exit, the metrics listener
does what its flag says (issue 9, start-up items, taken early because they are small), and a
network address is served only with TLS and authentication, or when told --insecure (issue 11).

Each test runs the real `switchyard-scheduler` console script against the module's Redis.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import scheduler_pb2, scheduler_pb2_grpc

from tests.support.certs import make_ca, make_cert
from tests.support.redis_server import RedisServer, env_without_switchyard, free_port, wait_until
from tests.support.secret_logs import register
from tests.support.stack import REPO_ROOT, VENV_BIN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def scheduler(redis: RedisServer, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(VENV_BIN / "switchyard-scheduler"), "--redis-url", redis.url, *args],
            stdout=out, stderr=subprocess.STDOUT, env=env_without_switchyard(), cwd=REPO_ROOT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(15)


def test_a_second_scheduler_on_a_taken_port_exits_with_one_line(fresh_redis: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    first = scheduler(fresh_redis, tmp_path / "first.log", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "")
    try:
        wait_until(lambda: "serving gRPC" in (tmp_path / "first.log").read_text(), timeout=30,
                   message="the first scheduler to serve")
        second = subprocess.run(
            [str(VENV_BIN / "switchyard-scheduler"), "--redis-url", fresh_redis.url,
             "--listen", f"127.0.0.1:{port}", "--metrics-listen", ""],
            capture_output=True, text=True, env=env_without_switchyard(), cwd=REPO_ROOT, timeout=30,
        )
    finally:
        stop(first)
    assert second.returncode == 2
    assert "Traceback" not in second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith("switchyard-scheduler: cannot listen on 127.0.0.1:") and "in use" in last


def test_a_taken_metrics_port_exits_with_one_line(fresh_redis: RedisServer, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run(
            [str(VENV_BIN / "switchyard-scheduler"), "--redis-url", fresh_redis.url,
             "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{busy}"],
            capture_output=True, text=True, env=env_without_switchyard(), cwd=REPO_ROOT, timeout=30,
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"switchyard-scheduler: cannot serve metrics on 127.0.0.1:{busy}: Address already in use "
        "(choose another --metrics-listen, or '' to turn metrics off)"
    )


def test_an_empty_metrics_listen_turns_metrics_off(fresh_redis: RedisServer, tmp_path: Path) -> None:
    log = tmp_path / "off.log"
    proc = scheduler(fresh_redis, log, "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "")
    try:
        line = wait_until(lambda: re.search(r"serving gRPC.*", log.read_text()), timeout=30,
                          message="the scheduler to serve").group(0)
    finally:
        stop(proc)
    assert "metrics on off" in line
    assert "127.0.0.1:9108" not in log.read_text()


def test_metrics_on_port_zero_report_the_port_actually_bound(fresh_redis: RedisServer, tmp_path: Path) -> None:
    log = tmp_path / "zero.log"
    proc = scheduler(fresh_redis, log, "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "127.0.0.1:0")
    try:
        found = wait_until(lambda: re.search(r"metrics on 127\.0\.0\.1:(\d+)", log.read_text()), timeout=30,
                           message="the scheduler to name its metrics port")
        port = int(found.group(1))
        assert port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert b"switchyard_queue_depth" in reply.read()
    finally:
        stop(proc)


def test_the_start_log_never_shows_the_redis_password(redis_server: RedisServer, tmp_path: Path) -> None:
    log = tmp_path / "secret.log"
    url = redis_server.url.replace("redis://", "redis://:s3cr3t-pw@")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "switchyard-scheduler"), "--redis-url", url, "--listen", f"127.0.0.1:{free_port()}",
             "--metrics-listen", ""],
            stdout=out, stderr=subprocess.STDOUT, env=env_without_switchyard(), cwd=REPO_ROOT,
        )
    try:
        wait_until(lambda: "serving gRPC" in log.read_text() or proc.poll() is not None, timeout=30,
                   message="the scheduler to start or give up")
    finally:
        if proc.poll() is None:
            stop(proc)
    assert "s3cr3t-pw" not in log.read_text()


def test_a_network_address_without_tls_and_authentication_is_refused_in_one_line(fresh_redis: RedisServer) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "switchyard-scheduler"), "--redis-url", fresh_redis.url,
         "--listen", f"0.0.0.0:{free_port()}", "--metrics-listen", ""],
        capture_output=True, text=True, env=env_without_switchyard(), cwd=REPO_ROOT, timeout=30,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("switchyard-scheduler: refusing to listen on a network address (--listen 0.0.0.0:")
    assert "--tls-cert" in line and "--auth-tokens" in line and "--insecure" in line


def test_insecure_serves_a_network_address_and_says_so(fresh_redis: RedisServer, tmp_path: Path) -> None:
    log = tmp_path / "insecure.log"
    proc = scheduler(fresh_redis, log, "--listen", f"0.0.0.0:{free_port()}", "--metrics-listen", "", "--insecure")
    try:
        wait_until(lambda: "serving gRPC" in log.read_text(), timeout=30, message="the scheduler to serve")
    finally:
        stop(proc)
    warning = next(line for line in log.read_text().splitlines() if "--insecure" in line)
    assert " WARNING " in warning and "without TLS (--tls-cert, --tls-key) and authentication" in warning


def test_a_scheduler_with_tls_and_tokens_serves_a_network_address(fresh_redis: RedisServer, tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert, key = make_cert(tmp_path, ca, "scheduler")
    token = register("sytok-e2e-startup-4f0c2b9d7e")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - {{name: ops, role: admin, sha256: '{hashlib.sha256(token.encode()).hexdigest()}'}}\n")
    port, log = free_port(), tmp_path / "secured.log"
    proc = scheduler(fresh_redis, log, "--listen", f"0.0.0.0:{port}", "--metrics-listen", "127.0.0.1:0",
                     "--tls-cert", str(cert), "--tls-key", str(key), "--auth-tokens", str(tokens))
    try:
        line = wait_until(lambda: re.search(r"serving gRPC.*", log.read_text()), timeout=30,
                          message="the scheduler to serve").group(0)
        assert f"TLS, tokens from {tokens} (1)" in line
        metrics_port = int(re.search(r"metrics on 127\.0\.0\.1:(\d+)", line).group(1))
        credentials = grpc.ssl_channel_credentials(ca.cert_path.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            # "serving gRPC" is logged before the scheduler leads: NOT_SERVING until it does.
            health = health_pb2_grpc.HealthStub(channel)
            wait_until(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                       == health_pb2.HealthCheckResponse.SERVING, timeout=30, message="the scheduler to lead")
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            stub.ListQueues(scheduler_pb2.ListQueuesRequest(), metadata=(("authorization", f"Bearer {token}"),),
                            timeout=10)
        # The HTTP listener speaks HTTPS with the same certificate; the API wants the token.
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        request = urllib.request.Request(f"https://127.0.0.1:{metrics_port}/api/v1/queues",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10, context=context) as reply:
            assert reply.status == 200
    finally:
        stop(proc)
    assert token not in log.read_text()
