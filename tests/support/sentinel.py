"""A Sentinel-managed Redis on loopback for tests: a primary, replicas and three Sentinels.

Every process is a real `redis-server` (a Sentinel is `redis-server sentinel.conf --sentinel`)
on a free port, in one private directory. `kill_primary` is the fault (SIGKILL);
`wait_failover` waits until a majority of the Sentinels name a new primary and that server
answers as one.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.support.redis_server import PORT_TRIES, PortTaken, free_port, wait_own_server, wait_until

MASTER_NAME = "sy-master"
DOWN_AFTER_MS = 1000
"""A primary silent this long is subjectively down for a Sentinel (production: 5-30 s)."""
FAILOVER_TIMEOUT_MS = 3000


class _Node:
    """One redis-server process (data node or Sentinel) on 127.0.0.1:<port>."""

    def __init__(self, binary: str, directory: Path, name: str, args: list[str]) -> None:
        self.port = free_port()
        self.name = name
        self.log_path = directory / f"{name}.log"
        self.args = [binary, *args, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--logfile", str(self.log_path)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self, timeout: float = 0.5) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                           socket_timeout=timeout, socket_connect_timeout=timeout)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until this process answers on its port (PortTaken if another one holds it)."""
        assert self.proc is not None
        wait_own_server(self.proc, self.port, self.log_path, timeout)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class SentinelRedis:
    """A primary, `replicas` replicas and three Sentinels monitoring them as `MASTER_NAME`."""

    def __init__(self, replicas: int = 1, sentinels: int = 3, quorum: int = 2) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; install it (apt-get install redis-server)")
        self._shape = (binary, replicas, sentinels, quorum)
        self._build()

    def _build(self) -> None:
        """Every node on fresh ports, in a fresh directory (nothing started)."""
        binary, replicas, sentinels, quorum = self._shape
        self.dir = Path(tempfile.mkdtemp(prefix="sy-sentinel-"))
        # No 5 s wait (the default) before a full sync to a replica: nothing else would join it.
        data = ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]
        self.primary = _Node(binary, self.dir, "primary", [*data, "--dir", str(self._subdir("primary"))])
        self.replicas = [
            _Node(binary, self.dir, f"replica{i}",
                  [*data, "--dir", str(self._subdir(f"replica{i}")),
                   "--replicaof", "127.0.0.1", str(self.primary.port)])
            for i in range(replicas)
        ]
        self.sentinels: list[_Node] = []
        for i in range(sentinels):
            conf = self.dir / f"sentinel{i}.conf"
            conf.write_text(
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinels.append(_Node(binary, self.dir, f"sentinel{i}",
                                        [str(conf), "--sentinel", "--dir", str(self._subdir(f"sentinel{i}"))]))
        self.killed: list[_Node] = []

    def _subdir(self, name: str) -> Path:
        path = self.dir / name
        path.mkdir()
        return path

    @property
    def nodes(self) -> list[_Node]:
        return [self.primary, *self.replicas, *self.sentinels]

    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL of this group (database 0); a Stack takes it like a
        RedisServer's."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self, timeout: float = 20.0) -> SentinelRedis:
        """Start every process; return once the replicas are in sync and every Sentinel knows
        the replicas and the other Sentinels (a failover needs that)."""
        deadline = time.monotonic() + timeout
        for tries_left in range(PORT_TRIES - 1, -1, -1):
            try:
                # Sentinels last, once the replicas are linked: a Sentinel learns of replicas from
                # the primary's INFO, which it asks for on connecting and then only every 10 s.
                self._start_nodes([self.primary, *self.replicas])
                self._wait("the replicas to link to the primary", self._replicas_linked, deadline)
                self._start_nodes(self.sentinels)
            except PortTaken:
                # A port picked for the group was taken before its server bound it: the ports
                # are in each other's arguments and configs, so the whole group starts afresh.
                if not tries_left:
                    raise
                self.stop()
                self._build()
                continue
            break
        self._wait("the Sentinel group to settle", self._settled, deadline)
        return self

    @staticmethod
    def _start_nodes(nodes: list[_Node]) -> None:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()

    def _wait(self, what: str, done: Callable[[], bool], deadline: float) -> None:
        """`wait_until` within what is left of the start's one timeout."""
        if not done():
            wait_until(done, timeout=max(0.0, deadline - time.monotonic()), message=f"{what} (logs in {self.dir})")

    def _replicas_linked(self) -> bool:
        with contextlib.ExitStack() as stack:
            return all(stack.enter_context(node.client()).info("replication").get("master_link_status") == "up"
                       for node in self.replicas)

    def _settled(self) -> bool:
        if not self._replicas_linked():
            return False
        with contextlib.ExitStack() as stack:
            for node in self.sentinels:
                client = stack.enter_context(node.client())
                try:
                    fields = client.sentinel_master(MASTER_NAME)
                except redis.RedisError:
                    return False
                if (int(fields["num-slaves"]) < len(self.replicas)
                        or int(fields["num-other-sentinels"]) < len(self.sentinels) - 1):
                    return False
        return True

    def primary_address(self) -> tuple[str, int] | None:
        """The primary most Sentinels name right now (None without a majority)."""
        votes: dict[tuple[str, int], int] = {}
        for node in self.sentinels:
            client = node.client()
            try:
                host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                votes[(host, int(port))] = votes.get((host, int(port)), 0) + 1
            except (redis.RedisError, TypeError, ValueError):
                pass
            finally:
                client.close()
        best = max(votes.items(), key=lambda item: item[1], default=None)
        return best[0] if best and best[1] > len(self.sentinels) // 2 else None

    def node_at(self, port: int) -> _Node:
        return next(node for node in self.nodes if node.port == port)

    def kill_primary(self) -> _Node:
        """SIGKILL the current primary (a crash: nothing flushed); returns it."""
        address = self.primary_address()
        assert address is not None, "no primary to kill"
        node = self.node_at(address[1])
        node.signal(signal.SIGKILL)
        assert node.proc is not None
        node.proc.wait(10)
        self.killed.append(node)
        return node

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> _Node:
        """Wait until a majority of Sentinels name a new primary and it accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = self.primary_address()
            if address is not None and address[1] != old_port:
                node = self.node_at(address[1])
                client = node.client()
                try:
                    if client.info("replication").get("role") == "master":
                        return node
                except redis.RedisError:
                    pass
                finally:
                    client.close()
            time.sleep(0.05)
        raise AssertionError(f"no failover after {timeout}s; Sentinel logs in {self.dir}")

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for node in self.nodes:
            with contextlib.suppress(OSError):
                text = node.log_path.read_text(errors="replace").splitlines()
                parts.append(f"----- {node.name} :{node.port} -----\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
