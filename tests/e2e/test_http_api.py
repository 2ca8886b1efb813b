"""The HTTP listener of real `switchyard-scheduler` processes: the leader answers the JSON API
and /metrics on its metrics port; a standby answers /metrics, and 503 naming the leader on
/api/v1; after the leader hands the lease back, the standby answers the API itself."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import RedisServer, env_without_switchyard, free_port, wait_until
from tests.support.stack import REPO_ROOT, VENV_BIN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def start_scheduler(redis: RedisServer, log: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    """A scheduler with metrics on a port it picks; (process, gRPC address, HTTP port)."""
    address = f"127.0.0.1:{free_port()}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "switchyard-scheduler"), "--redis-url", redis.url, "--listen", address,
             "--metrics-listen", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT, env=env_without_switchyard(), cwd=REPO_ROOT,
        )
    found = wait_until(lambda: re.search(r"metrics on 127\.0\.0\.1:(\d+)", log.read_text()), timeout=30,
                       message=f"{log.name} to name its metrics port")
    return proc, address, int(found.group(1))


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            body = reply.read().decode()
            return reply.status, json.loads(body) if path.startswith("/api/") else body
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


def test_the_leader_answers_the_api_and_a_standby_names_it(fresh_redis: RedisServer, tmp_path: Path) -> None:
    leader, leader_address, leader_port = start_scheduler(fresh_redis, tmp_path / "leader.log")
    standby = None
    try:
        wait_until(lambda: get(leader_port, "/api/v1/health")[0] == 200, message="the first scheduler to lead")
        standby, _standby_address, standby_port = start_scheduler(fresh_redis, tmp_path / "standby.log")
        status, health = get(leader_port, "/api/v1/health")
        assert (status, health["status"], health["leader"]) == (200, "ok", True)
        assert get(leader_port, "/api/v1/tasks?state=running") == (200, {"tasks": [], "next_page_token": ""})

        status, refused = wait_until(lambda: (r := get(standby_port, "/api/v1/queues"))[1].get("leader_address") and r,
                                     message="the standby to name the leader")
        assert (status, refused["code"], refused["leader_address"]) == (503, "UNAVAILABLE", leader_address)
        status, metrics = get(standby_port, "/metrics")
        assert status == 200 and "switchyard_leader 0.0" in metrics

        leader.terminate()  # hands the lease back: the standby takes over at once
        leader.wait(15)
        status, health = wait_until(lambda: (r := get(standby_port, "/api/v1/health"))[0] == 200 and r,
                                    message="the standby to take over and answer")
        assert health["leader"] is True
    finally:
        for proc in (leader, standby):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
