"""Launching and supervising the user's Celery worker as a child of the agent.

The user writes `switchyard-agent ... -- celery -A app worker [args]`. The agent runs that
worker through `python -m worker_agent.celery_boot` instead of the `celery` script, so the
Switchyard hooks are installed before Celery loads the user's app — the user's code needs no
change. The argv is rewritten so the worker consumes only its own queue (`wire.worker_queue`),
has a stable node name, and skips mingle/gossip (which would otherwise slow start-up and
chatter across the whole fleet); its concurrency becomes the worker's slot count.

The child stays in the agent's process group on purpose: an operator (or a chaos test) that
stops or kills the group freezes or kills both together, just as a crashed machine would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from switchyard.wire import worker_queue

from worker_agent.attempts import pid_file_path

log = logging.getLogger("switchyard.agent.supervise")


class CommandError(ValueError):
    """The command after `--` is not a Celery worker command the agent can supervise."""


@dataclass(frozen=True)
class WorkerCommand:
    """The rewritten Celery worker command and what the agent learned from it."""

    argv: tuple[str, ...]
    """Full argv to execute (starts with sys.executable -m worker_agent.celery_boot)."""
    slots: int
    """The worker's --concurrency: how many tasks it runs at once."""
    queue: str
    """The only queue the worker consumes: `switchyard.wire.worker_queue(worker_id)`."""


def _option_present(args: Sequence[str], short: str | None, long: str) -> bool:
    for arg in args:
        if arg == long or arg.startswith(long + "="):
            return True
        if short is not None and (arg == short or (arg.startswith(short) and not arg.startswith("--"))):
            return True
    return False


def rewrite_worker_command(
    command: Sequence[str], worker_id: str, default_concurrency: int | None = None
) -> WorkerCommand:
    """Rewrite `celery -A app worker ...` into the command the agent runs.

    Forces `-Q <the worker's own queue>` (dropping any -Q/--queues the user gave, with a warning,
    because a worker consuming shared queues would run work the scheduler never handed it),
    adds `-n <worker_id>@%h` and `--without-mingle --without-gossip` unless given, and
    parses or adds `--concurrency`.
    """
    args = list(command)
    if not args:
        raise CommandError("no Celery command given after '--' (expected: celery -A MODULE worker ...)")
    if os.path.basename(args[0]) in ("celery", "celery.exe"):
        args = args[1:]
    elif args[:3] == [args[0], "-m", "celery"] and "python" in os.path.basename(args[0]):
        args = args[3:]
    else:
        raise CommandError(
            f"the command after '--' must start with 'celery' (got {args[0]!r}); "
            "expected: celery -A MODULE worker [celery args]"
        )
    if "worker" not in args:
        raise CommandError("the Celery command must run 'worker' (expected: celery -A MODULE worker ...)")

    kept: list[str] = []
    concurrency: int | None = None
    dropped_queues: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        # Queue options: removed whatever their form, the queue is the scheduler's choice.
        if arg in ("-Q", "--queues"):
            dropped_queues.append(args[index + 1] if index + 1 < len(args) else "")
            index += 2
            continue
        if arg.startswith("--queues="):
            dropped_queues.append(arg.split("=", 1)[1])
            index += 1
            continue
        if arg.startswith("-Q") and not arg.startswith("--"):
            dropped_queues.append(arg[2:])
            index += 1
            continue
        # Concurrency: parsed in every form, kept as given.
        value: str | None = None
        if arg in ("-c", "--concurrency"):
            if index + 1 >= len(args):
                raise CommandError(f"{arg} needs a value")
            value = args[index + 1]
            kept.extend([arg, value])
            index += 2
        elif arg.startswith("--concurrency="):
            value = arg.split("=", 1)[1]
            kept.append(arg)
            index += 1
        elif arg.startswith("-c") and not arg.startswith("--") and len(arg) > 2:
            value = arg[2:]
            kept.append(arg)
            index += 1
        else:
            kept.append(arg)
            index += 1
        if value is not None:
            try:
                concurrency = int(value)
            except ValueError:
                raise CommandError(f"--concurrency must be a whole number, got {value!r}") from None
            if concurrency < 1:
                raise CommandError(f"--concurrency must be at least 1, got {concurrency}")

    queue = worker_queue(worker_id)
    if dropped_queues:
        log.warning(
            "ignoring Celery queue option(s) %s: a Switchyard worker consumes only %s",
            ", ".join(repr(q) for q in dropped_queues),
            queue,
        )
    kept.extend(["-Q", queue])
    if not _option_present(kept, "-n", "--hostname"):
        kept.extend(["-n", f"{worker_id}@%h"])
    if "--without-mingle" not in kept:
        kept.append("--without-mingle")
    if "--without-gossip" not in kept:
        kept.append("--without-gossip")
    if concurrency is None:
        concurrency = default_concurrency or os.cpu_count() or 1
        kept.append(f"--concurrency={concurrency}")
    argv = (sys.executable, "-m", "worker_agent.celery_boot", *kept)
    return WorkerCommand(argv=argv, slots=concurrency, queue=queue)


@dataclass(frozen=True)
class ExitStatus:
    """How the Celery worker ended."""

    exit_code: int
    """Exit code, or the negative signal number that ended it (Popen's convention)."""

    @property
    def reason(self) -> str:
        """A sentence for the WorkerExited message and the log."""
        if self.exit_code < 0:
            try:
                name = signal.Signals(-self.exit_code).name
            except ValueError:
                name = f"signal {-self.exit_code}"
            return f"celery worker killed by {name}"
        return f"celery worker exited with code {self.exit_code}"


class CeleryWorker:
    """One supervised Celery worker process.

    Exit is observed by a thread blocked in `Popen.wait`, which hands the status to the
    event loop at once — no polling delay between the worker dying and the agent knowing.
    """

    def __init__(self, command: WorkerCommand, env: dict[str, str], pass_fds: Sequence[int] = ()) -> None:
        self.command = command
        self.env = env
        self.pass_fds = tuple(pass_fds)
        """Descriptors the worker inherits (the start-up channel to the agent)."""
        self.process: subprocess.Popen[bytes] | None = None
        self._exited: asyncio.Future[ExitStatus] | None = None

    @property
    def pid(self) -> int:
        """Pid of the worker's main process, 0 before it starts."""
        return self.process.pid if self.process is not None else 0

    def start(self) -> None:
        """Start the worker; must be called from the running event loop."""
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        log.info("starting Celery worker: %s", " ".join(self.command.argv))
        # Same process group as the agent (no start_new_session): see the module docstring.
        self.process = subprocess.Popen(list(self.command.argv), env=self.env, pass_fds=self.pass_fds)
        process, exited = self.process, self._exited

        def wait_for_exit() -> None:
            status = ExitStatus(process.wait())
            loop.call_soon_threadsafe(_resolve, exited, status)

        threading.Thread(target=wait_for_exit, name="celery-exit-watch", daemon=True).start()

    async def wait(self) -> ExitStatus:
        """Wait until the worker exits and return how it ended."""
        if self._exited is None:
            raise RuntimeError("the Celery worker was never started")
        return await asyncio.shield(self._exited)

    def signal(self, signum: int) -> None:
        """Send a signal to the worker's main process if it still runs."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    async def stop(self, grace_seconds: float = 60.0) -> ExitStatus:
        """Warm shutdown (SIGTERM: finish running tasks), then SIGKILL after the grace period."""
        self.signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.wait(), grace_seconds)
        except TimeoutError:
            log.warning("Celery worker still running %.0f s after SIGTERM; killing it", grace_seconds)
            self.signal(signal.SIGKILL)
            return await self.wait()


def _resolve(future: asyncio.Future[ExitStatus], status: ExitStatus) -> None:
    if not future.done():
        future.set_result(status)


async def cancel_attempt(run_dir: Path, task_id: str, attempt: int, kill_after_seconds: float = 5.0) -> bool:
    """Stop one running attempt: SIGTERM its pool child, SIGKILL if it outlives the grace period.

    Returns False when the attempt is not running here (no pid file): it already ended or
    never started, and the scheduler's fence keeps it from starting later.
    """
    try:
        pid_file = pid_file_path(run_dir, task_id, attempt)
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        log.info("cancel of task %s attempt %d: not running here (%s)", task_id, attempt, exc)
        return False
    if pid <= 1 or pid == os.getpid():
        log.warning("cancel of task %s attempt %d: pid file names pid %d; ignoring", task_id, attempt, pid)
        return False
    log.info("cancelling task %s attempt %d: SIGTERM to pool process %d", task_id, attempt, pid)
    if not _send(pid, signal.SIGTERM):
        pid_file.unlink(missing_ok=True)
        return True
    deadline = asyncio.get_running_loop().time() + kill_after_seconds
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        # The pid file disappears when the attempt's own cleanup ran; the pid may be gone too.
        if not pid_file.exists() or not _alive(pid):
            pid_file.unlink(missing_ok=True)
            return True
    log.warning("task %s attempt %d: pool process %d ignored SIGTERM; sending SIGKILL", task_id, attempt, pid)
    _send(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def _send(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; it has stopped running, which is what cancel cares about.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True
