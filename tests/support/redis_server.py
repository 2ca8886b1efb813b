"""A throw-away `redis-server` on a free loopback port, for tests that need real Redis.

Each instance owns its directory, so a test may kill, restart or SIGSTOP it without
touching any other test or the machine's own Redis.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis

PORTS = range(10_000, 30_000)
"""Where `free_port` looks: below the kernel's ephemeral range (32768 and up on Linux), so no
outgoing connection of the suite can take a port between its pick and the server's bind. (A
Redis Cluster node also binds its bus port, port + 10000: cluster tests will need to pick such
pairs inside their own slice.)"""


def _own_ports() -> range:
    """This test process's share of `PORTS`: the suite runs in several processes at once
    (pytest-xdist, `PYTEST_XDIST_WORKER` gw0, gw1 ...), each picking from its own slice, so two
    of them never hand out the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    span = len(PORTS) // max(count, index + 1)
    return range(PORTS.start + index * span, PORTS.start + (index + 1) * span)


_next_port = itertools.count(random.randrange(1 << 16))
_port_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, from this process's slice of
    `PORTS`, never the same one twice until the slice has been gone through."""
    ports = _own_ports()
    for _ in range(len(ports)):
        with _port_lock:
            port = ports[next(_next_port) % len(ports)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"free_port: every port in {ports} is taken")


PORT_TRIES = 5
"""Fresh ports tried when the one picked was taken before redis-server could bind it."""


class PortTaken(RuntimeError):
    """The redis-server exited at start, its port already in use (another process bound it
    between `free_port` and the server's own bind): start again on a fresh port."""


def wait_own_server(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 10.0) -> None:
    """Wait until the redis-server `proc` answers on `port`. Another server answering there does
    not count (it holds the port our server could not bind): PortTaken once ours has exited."""
    deadline = time.monotonic() + timeout
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            exited = proc.poll() is not None
            with contextlib.suppress(redis.exceptions.RedisError):
                if int(client.info("server")["process_id"]) == proc.pid:
                    return
            if exited:
                text = log_path.read_text(errors="replace") if log_path.exists() else ""
                if "Address already in use" in text:
                    raise PortTaken(f"port {port} was taken before redis-server bound it")
                raise RuntimeError(f"redis-server on port {port} exited ({proc.returncode}); see {log_path}")
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"redis-server on port {port} did not come up; see {log_path}")


class RedisServer:
    """One redis-server process with AOF on, listening on 127.0.0.1:<port>."""

    def __init__(self, port: int | None = None, appendonly: bool = True, appendfsync: str = "always") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; install it (apt-get install redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self.appendonly = appendonly
        # "always" (no acknowledged write lost) or "everysec" (the chaos suite measures its loss window).
        self.appendfsync = appendfsync
        self.dir = Path(tempfile.mkdtemp(prefix="sy-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._port_kept = port is not None
        """False until the first start: only then may a taken port be swapped for a fresh one."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.dir / "redis.log"),
        ]
        for tries_left in range(PORT_TRIES - 1, -1, -1):
            args[args.index("--port") + 1] = str(self.port)
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_own_server(self.proc, self.port, self.dir / "redis.log")
            except PortTaken:
                if self._port_kept or not tries_left:
                    raise
                self.port = free_port()
                continue
            break
        # Restarts (tests kill and restart Redis) come back on the same port.
        self._port_kept = True
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the server answers PING at `url` (a subclass's TLS URL included)."""
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on port {self.port} did not come up; see {self.dir}/redis.log")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def env_without_switchyard() -> dict[str, str]:
    """The current environment minus SWITCHYARD_* variables, so child processes see only what a test sets."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns a truthy value; fail the test with `message` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")
