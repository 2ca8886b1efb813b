"""The start-up handshake between the agent and its Celery worker, over a Unix socket pair.

The agent starts the Celery worker before it connects to the scheduler, so that its very first
hello can name the tasks the worker's app registers. The worker loads the user's app and, in
`worker_init` (task modules imported, no pool forked, nothing consumed yet), sends one JSON line:

    {"registered_tasks": ["app.a", ...], "broker_url": "redis://...", "broker_master_name": "", "pid": 4242}

and then waits. The agent connects, checks the broker against the state Redis the welcome names
(`worker_agent.broker_check`) and answers with one JSON line:

    {"state_redis_url": "redis://...", "key_prefix": "sy"}

which the worker puts into its environment (the pool forks after it, so every child inherits it)
before Celery goes on to start its pool and consume. Closing the channel instead of answering
means "do not start": the worker exits at once, without consuming anything. The socket's number
reaches the worker in `SWITCHYARD_AGENT_CHANNEL_FD` (`worker_agent.environment`); a worker
started without it (plain Celery, tests) skips the handshake.

The broker URL travels with its password over this private socket; only the agent's redacted
form is ever logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from worker_agent import environment

# A task list of many thousands of names is still one line; the default 64 KiB would cut it.
_LINE_LIMIT = 16 * 1024 * 1024


class HandshakeError(RuntimeError):
    """The other side of the start-up channel sent something unreadable."""


@dataclass(frozen=True)
class WorkerReport:
    """What the Celery worker tells the agent once it has loaded the user's app."""

    registered_tasks: tuple[str, ...]
    """Names in the app's task registry, Celery's own `celery.*` tasks left out, sorted."""
    broker_url: str
    """The app's broker URL as configured (empty: Celery's default), password included."""
    pid: int
    """The Celery worker's main process."""
    broker_master_name: str = ""
    """The `master_name` transport option of a Sentinel broker (`sentinel://...`); else empty."""

    def to_line(self) -> bytes:
        """The report as the one line the worker sends."""
        payload = {"registered_tasks": list(self.registered_tasks), "broker_url": self.broker_url,
                   "broker_master_name": self.broker_master_name, "pid": self.pid}
        return json.dumps(payload).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> WorkerReport:
        """Read the worker's line; HandshakeError when it is not a report."""
        data = _json_object(line)
        tasks = data.get("registered_tasks")
        if not isinstance(tasks, list) or not all(isinstance(name, str) for name in tasks):
            raise HandshakeError("the Celery worker's report has no list of task names")
        return cls(tuple(tasks), str(data.get("broker_url") or ""), int(data.get("pid") or 0),
                   str(data.get("broker_master_name") or ""))


@dataclass(frozen=True)
class WorkerRelease:
    """The agent's go-ahead: the state Redis and key prefix the worker must use."""

    state_redis_url: str
    key_prefix: str

    def to_line(self) -> bytes:
        """The release as the one line the agent sends."""
        return json.dumps({"state_redis_url": self.state_redis_url, "key_prefix": self.key_prefix}).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> WorkerRelease:
        """Read the agent's line; HandshakeError when it is not a release."""
        data = _json_object(line)
        url = data.get("state_redis_url")
        if not isinstance(url, str) or not url:
            raise HandshakeError("the agent's release names no state Redis")
        return cls(url, str(data.get("key_prefix") or ""))


def _json_object(line: bytes) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise HandshakeError(f"unreadable start-up message: {exc}") from None
    if not isinstance(data, dict):
        raise HandshakeError("the start-up message is not a JSON object")
    return data


class AgentChannel:
    """The agent's end of the channel; the other end is handed to the Celery worker it starts."""

    def __init__(self) -> None:
        self._agent_socket, self._worker_socket = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def worker_fd(self) -> int:
        """The descriptor to pass to the worker process (inheritable only through `pass_fds`)."""
        return self._worker_socket.fileno()

    def worker_started(self) -> None:
        """Drop the agent's copy of the worker's end, so the worker's exit reads as end-of-file."""
        self._worker_socket.close()

    async def read_report(self) -> WorkerReport | None:
        """The worker's report, or None when it closed the channel (or died) without one."""
        if self._reader is None:
            self._reader, self._writer = await asyncio.open_unix_connection(
                sock=self._agent_socket, limit=_LINE_LIMIT
            )
        line = await self._reader.readline()
        if not line.endswith(b"\n"):
            return None
        return WorkerReport.from_line(line)

    async def release(self, release: WorkerRelease) -> None:
        """Let the worker start consuming, with `release`'s settings; OSError if it is gone."""
        if self._writer is None:
            raise RuntimeError("release() before read_report()")
        self._writer.write(release.to_line())
        await self._writer.drain()
        self.close()

    def close(self) -> None:
        """Close the agent's end: a worker still waiting exits without consuming anything."""
        if self._writer is not None:
            self._writer.close()
        else:
            self._agent_socket.close()
        self._worker_socket.close()


def worker_handshake(report: WorkerReport) -> WorkerRelease | None:
    """Worker side: send `report` and block until the agent's release.

    Returns None when the worker was not started by an agent (no channel in the environment).
    When the agent closes the channel without a release, the process exits at once with status 0:
    the agent refused to start it and says why itself.
    """
    fd_text = os.environ.pop(environment.AGENT_CHANNEL_FD, "")
    if not fd_text:
        return None
    with socket.socket(fileno=int(fd_text)) as channel:
        try:
            channel.sendall(report.to_line())
            with channel.makefile("rb") as incoming:
                line = incoming.readline(_LINE_LIMIT)
        except (BrokenPipeError, ConnectionResetError):
            line = b""  # the agent is gone or stopping
    if not line.endswith(b"\n"):
        # Nothing started yet (no pool, no consumer): leave without Celery's shutdown steps.
        os._exit(0)
    return WorkerRelease.from_line(line)
