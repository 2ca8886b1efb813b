"""A local process stack for scripts that run Switchyard on one machine (the demo, the benchmarks).

``Stack`` starts child processes from the repository root, each leading its own process group
and writing to its own log file (``start``), checks that they are still alive (``check_alive``),
and tears them all down (``stop``: SIGTERM to every group, then SIGKILL of the group, so pool
children go too). It also finds console scripts (``executable``), polls a condition while
watching the children (``wait_for``), starts a private ``redis-server`` (``start_redis``) and runs
a script's body so that every child stops on exit, Ctrl-C and errors included (``run``). Beside
it: ``child_env`` for a clean child environment and ``free_port``.

Each caller keeps its own error type and wording: pass ``Stack`` its exception class (best a
subclass of ``StackError``), log directory, poll interval and "logs in" phrase.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import redis

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: children run here and find its packages on PYTHONPATH."""
BIN_DIR = Path(sys.executable).parent
"""The running interpreter's bin directory (the virtualenv's console scripts)."""


STOP_GRACE_SECONDS = 15.0
"""How long ``stop`` lets the children shut down gracefully before it kills them..."""
REDIS_GONE_GRACE_SECONDS = 1.0
"""...and how long when the stack's Redis is already gone: agents and Celery workers then spend
their grace waiting on a Redis that is not coming back (a warm shutdown whose task reports
cannot be delivered), so waiting longer only delays the kill."""


class StackError(Exception):
    """The stack cannot go on; the message says why and where to look."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """One started child: its name, handle and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


class Stack:
    """Child processes, each leading its own process group so stopping it stops its children.

    ``temp_dir`` is a fresh temporary directory, removed by ``stop`` unless ``keep_logs`` is set.
    Logs go to ``log_dir`` when given (the caller prepares that directory), else to
    ``temp_dir/logs``. Failures raise ``error`` and name the logs with ``logs_phrase``.
    """

    def __init__(
        self,
        *,
        prefix: str = "switchyard-stack-",
        log_dir: Path | None = None,
        error: type[Exception] = StackError,
        poll_interval: float = 0.1,
        logs_phrase: str = "logs in",
    ) -> None:
        self.processes: list[Process] = []
        self.temp_dir = Path(tempfile.mkdtemp(prefix=prefix))
        if log_dir is None:
            log_dir = self.temp_dir / "logs"
            log_dir.mkdir()
        self.log_dir = log_dir
        self.error = error
        self.poll_interval = poll_interval
        self.logs_phrase = logs_phrase
        self.keep_logs = False
        """Set before ``stop`` to leave ``temp_dir`` in place and say where the logs are."""

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Process:
        """Start ``argv`` in the repository root, in a new session, logging to ``<log_dir>/<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            list(argv), cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        process = Process(name, popen, log_path, log_file)
        self.processes.append(process)
        return process

    def check_alive(self) -> None:
        """Raise ``error`` naming the first child that has exited, and its log."""
        for process in self.processes:
            code = process.popen.poll()
            if code is not None:
                raise self.error(f"{process.name} exited with status {code}; see {process.log_path}")

    def stop(self) -> None:
        """SIGTERM every group (last started first), SIGKILL what is left after STOP_GRACE_SECONDS
        (REDIS_GONE_GRACE_SECONDS when the stack's Redis has exited), then clean up."""
        redis_gone = any(p.name == "redis" and p.popen.poll() is not None for p in self.processes)
        for process in reversed(self.processes):
            self._signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + (REDIS_GONE_GRACE_SECONDS if redis_gone else STOP_GRACE_SECONDS)
        for process in reversed(self.processes):
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(5)
            # Children that outlived their leader (e.g. Celery pool processes) go too.
            self._signal_group(process, signal.SIGKILL)
            process.log_file.close()
        self.processes.clear()
        if self.keep_logs:
            print(f"logs kept in {self.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def executable(self, name: str) -> str:
        """The virtualenv's copy of a console script, else the one on PATH; raises ``error`` if neither."""
        candidate = BIN_DIR / name
        if candidate.exists():
            return str(candidate)
        found = shutil.which(name)
        if found is None:
            raise self.error(f"{name} not found next to {sys.executable} or on PATH; run `make venv`")
        return found

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        """Poll until ``predicate`` holds, failing fast if a child process dies meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if predicate():
                return
            time.sleep(self.poll_interval)
        raise self.error(
            f"timed out after {timeout:.0f}s waiting for {what}; {self.logs_phrase} {self.log_dir}"
        )

    def start_redis(self) -> str:
        """Start a private ``redis-server`` (no persistence) on a free port; its URL once it answers PING."""
        port = free_port()
        self.start(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.temp_dir),
                "--save", "", "--appendonly", "no",
            ],
            child_env(),
        )
        url = f"redis://127.0.0.1:{port}/0"
        probe = redis.Redis.from_url(url, socket_timeout=0.5)

        def pong() -> bool:
            try:
                return bool(probe.ping())
            except redis.exceptions.RedisError:
                return False

        self.wait_for("redis-server to answer PING", pong, 15)
        probe.close()
        return url

    def run(
        self,
        body: Callable[[], int],
        catch: tuple[type[Exception], ...],
        *,
        keep_logs_on_error: bool = False,
    ) -> int:
        """Run ``body`` and return its exit status, stopping every child however it ends.

        SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (also when started in the background,
        where a shell would leave SIGINT ignored): that returns 130. An exception in ``catch`` is
        printed and returns 1, followed by ``logs: <log_dir>``, or with ``keep_logs_on_error`` the
        stack keeps its temporary directory and ``stop`` says where the logs are.
        """
        signal.signal(signal.SIGINT, _raise_interrupt)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        signal.signal(signal.SIGHUP, _raise_interrupt)
        try:
            return body()
        except KeyboardInterrupt:
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130
        except catch as exc:
            if keep_logs_on_error:
                self.keep_logs = True
                print(f"\nerror: {exc}", file=sys.stderr)
            else:
                print(f"\nerror: {exc}\nlogs: {self.log_dir}", file=sys.stderr)
            return 1
        finally:
            self.stop()

    @staticmethod
    def _signal_group(process: Process, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.popen.pid, signum)


def child_env(**extra: str) -> dict[str, str]:
    """This environment minus SWITCHYARD_* (so stray settings do not leak in), plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SWITCHYARD_")}
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
