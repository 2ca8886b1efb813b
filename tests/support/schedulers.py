"""Extra `switchyard-scheduler` processes on one Redis: standbys for the leadership tests.

The `Stack` runs the first scheduler; `SchedulerProc` starts more on their own ports with the
same environment, and can kill, pause, resume and terminate them. `health` answers the standard
gRPC health check the way a load balancer or kubelet would see it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import scheduler_pb2_grpc

from tests.support.redis_server import env_without_switchyard, free_port, wait_until
from tests.support.stack import CHANNEL_OPTIONS, REPO_ROOT, TEST_SCHEDULER_ENV, VENV_BIN, Stack

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class SchedulerProc:
    """One scheduler process on free ports (metrics off)."""

    def __init__(self, redis_url: str, workdir: Path, name: str, env: Mapping[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.name = name
        self.port = free_port()
        self.log_path = Path(workdir) / f"scheduler-{name}.log"
        self.env = {**TEST_SCHEDULER_ENV, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._connect()

    @classmethod
    def adopt(cls, stack: Stack) -> SchedulerProc:
        """The stack's own scheduler process, to signal and probe like the others."""
        adopted = cls(stack.redis_url, stack.workdir, f"stack-{stack.scheduler_starts}")
        adopted.channel.close()
        adopted.port, adopted.proc = stack.grpc_port, stack.scheduler_proc
        adopted.log_path = stack.scheduler_log_path
        adopted._connect()
        return adopted

    def _connect(self) -> None:
        self.channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self.stub = scheduler_pb2_grpc.SchedulerStub(self.channel)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SchedulerProc:
        env = env_without_switchyard()
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        args = [str(VENV_BIN / "switchyard-scheduler"), "--redis-url", self.redis_url,
                "--listen", self.address, "--metrics-listen", ""]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                         start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> int | None:
        """The overall health status, or None while nothing answers."""
        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return None
        return int(reply.status)

    def wait_health(self, status: int, timeout: float = 30.0) -> float:
        """Wait until health says `status`; returns the seconds it took."""
        started = time.monotonic()
        wait_until(lambda: self.health() == status, timeout=timeout,
                   message=f"scheduler {self.name} health {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
                           f"\n{self.log_tail()}")
        return time.monotonic() - started

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for the exit status."""
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- {self.log_path.name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.alive():
            self.signal(signal.SIGCONT)
            self.kill()
        self.channel.close()
