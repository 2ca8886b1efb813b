"""``switchyard top``: a live view of the scheduler -- queues, workers, the leader -- redrawn
about once a second.

It draws with plain ANSI escapes (the terminal's alternate screen, the cursor hidden, each
frame written over the last), so it works in any terminal and over SSH without curses; the
terminal is restored however it ends. ``q`` or Ctrl-C quits (exit 0). ``--once`` prints one
frame as plain text and exits, for scripts and for a terminal that is not one.

A frame is built from two calls (ListQueues, ListWorkers); the leader is the address that
answered them (a standby answers only by naming the leader, whom the client then follows).
While the scheduler cannot be reached the last frame stays, with the error above it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from switchyard._fleet_views import QueueView, WorkerView
from switchyard.cli.exits import EXIT_OK, EXIT_USAGE
from switchyard.cli.render import format_duration, format_table
from switchyard.client import SchedulerClient
from switchyard.exceptions import SwitchyardError

__all__ = ["DEFAULT_INTERVAL", "Snapshot", "render_frame", "take_snapshot", "top"]

DEFAULT_INTERVAL = 1.0
"""Seconds between frames."""

GIB = 1024.0
"""MiB per GiB."""

_ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
_LEAVE = "\x1b[?25h\x1b[?1049l"  # cursor shown, main screen back
_HOME = "\x1b[H"
_CLEAR_TO_EOL = "\x1b[K"
_CLEAR_BELOW = "\x1b[J"
_INTERRUPT = "\x03"
"""What `_Screen.keys` yields for Ctrl-C (SIGINT)."""


@dataclass(frozen=True)
class Snapshot:
    """What one frame shows."""

    queues: Sequence[QueueView]
    workers: Sequence[WorkerView]
    leader: str
    """Address of the scheduler that answered (the leader)."""
    taken_at: datetime
    error: str = ""
    """Why the figures are not fresh ("" when they are)."""


def take_snapshot(client: SchedulerClient) -> Snapshot:
    """Queues and workers now, and who answered."""
    queues = client.queues()
    workers = client.workers()
    return Snapshot(queues, workers, client.current_address, datetime.now(UTC))


def _seconds(value: float) -> str:
    return f"{value:.2f}s" if value else "-"


def _rate(value: float) -> str:
    return f"{value:.1f}" if value else "-"


def _queue_rows(queues: Sequence[QueueView]) -> list[list[str]]:
    return [
        [
            queue.name,
            "paused" if queue.paused else "active",
            str(queue.pending),
            str(queue.processing),
            str(queue.retrying),
            _seconds(queue.wait_p50_seconds),
            _seconds(queue.wait_p95_seconds),
            _rate(queue.submitted_per_second),
            _rate(queue.finished_per_second),
            f"{queue.error_rate * 100:.0f}%",
            str(queue.dead_lettered),
            str(queue.workers),
        ]
        for queue in queues
    ]


def _gpu_memory(worker: WorkerView) -> str:
    if not worker.gpus:
        return "-"
    total = sum(gpu.memory_total_mb for gpu in worker.gpus)
    used = sum(max(0, gpu.memory_total_mb - gpu.memory_free_mb) for gpu in worker.gpus)
    return f"{used / GIB:.1f}/{total / GIB:.1f}GiB"


def _gpu_utilization(worker: WorkerView) -> str:
    return ",".join(f"{gpu.utilization_percent}%" for gpu in worker.gpus) or "-"


def _worker_rows(workers: Sequence[WorkerView], now: datetime) -> list[list[str]]:
    return [
        [
            worker.worker_id,
            worker.worker_type,
            worker.state,
            format_duration((now - worker.state_since).total_seconds()) if worker.state_since else "-",
            f"{worker.slots - worker.free_slots}/{worker.slots}",
            _gpu_memory(worker),
            _gpu_utilization(worker),
            f"{worker.cpu_percent:.0f}%",
            worker.state_reason or "-",
        ]
        for worker in workers
    ]


def render_frame(snapshot: Snapshot, width: int | None = None) -> list[str]:
    """The frame's lines: a header naming the leader, the queue table with any warnings, a
    summary of the workers by state, and the worker table. Lines are cut to ``width``."""
    taken = snapshot.taken_at.astimezone().strftime("%H:%M:%S")
    states: dict[str, int] = {}
    for worker in snapshot.workers:
        states[worker.state] = states.get(worker.state, 0) + 1
    by_state = ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "none"
    lines = [f"switchyard top  leader {snapshot.leader}  at {taken}"]
    if snapshot.error:
        lines.append(f"! {snapshot.error}")
    lines += ["", *format_table(
        ["QUEUE", "STATE", "PENDING", "RUNNING", "RETRYING", "WAIT P50", "WAIT P95", "IN/S", "OUT/S", "ERR",
         "DEAD", "WORKERS"],
        _queue_rows(snapshot.queues),
    ).splitlines()]
    lines += [f"warning: {queue.name}: {warning}" for queue in snapshot.queues for warning in queue.warnings]
    lines += ["", f"workers: {len(snapshot.workers)} ({by_state})"]
    if snapshot.workers:
        lines += format_table(
            ["WORKER", "TYPE", "STATE", "FOR", "SLOTS", "GPU MEM", "GPU UTIL", "CPU", "REASON"],
            _worker_rows(snapshot.workers, snapshot.taken_at),
        ).splitlines()
    if width is not None:
        lines = [line[:width] for line in lines]
    return lines


class _Screen:
    """The terminal while ``top`` runs: alternate screen, hidden cursor, keys read one by one
    without echo; all of it undone on exit.

    Ctrl-C (SIGINT) is taken as a key: its handler only notes it and wakes the wait for keys,
    rather than raising KeyboardInterrupt wherever the main thread is, which could be inside a
    blocking gRPC call (whose channel then may not close: grpc/grpc#19973). A call in flight
    finishes first; a second Ctrl-C before then interrupts it (a scheduler being failed over can
    hold a call for up to ``--failover-timeout``)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.keys_fd: int | None = None
        self._saved: Any = None
        """The terminal's attributes before (termios.tcgetattr), to restore."""
        self._wake: tuple[int, int] | None = None
        """The pipe SIGINT writes to (signal.set_wakeup_fd), read end first."""
        self._restore_signals: list[Any] = []
        self.interrupted = False

    def __enter__(self) -> _Screen:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if sys.stdin.isatty():
                self.keys_fd = sys.stdin.fileno()
                self._saved = termios.tcgetattr(self.keys_fd)
                tty.setcbreak(self.keys_fd)
        self._take_interrupts()
        self.out.write(_ENTER)
        self.out.flush()
        return self

    def _take_interrupts(self) -> None:
        try:
            read_end, write_end = os.pipe()
        except OSError:  # out of descriptors: Ctrl-C stays a KeyboardInterrupt
            return
        os.set_blocking(write_end, False)
        try:
            previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
            os.close(read_end)
            os.close(write_end)
            return
        previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        self._wake = (read_end, write_end)
        self._restore_signals = [previous_fd, previous_handler]

    def _on_interrupt(self, _signum: int, _frame: Any) -> None:
        if self.interrupted:  # the second one: the first is still waiting for a call to end
            raise KeyboardInterrupt
        self.interrupted = True

    def __exit__(self, *_exc: object) -> None:
        if self._wake is not None:
            previous_fd, previous_handler = self._restore_signals
            signal.signal(signal.SIGINT, previous_handler)
            signal.set_wakeup_fd(previous_fd)
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        self.out.write(_LEAVE)
        self.out.flush()
        if self.keys_fd is not None and self._saved is not None:
            termios.tcsetattr(self.keys_fd, termios.TCSADRAIN, self._saved)

    def draw(self, lines: list[str]) -> None:
        self.out.write(_HOME + "".join(f"{line}{_CLEAR_TO_EOL}\r\n" for line in lines) + _CLEAR_BELOW)
        self.out.flush()

    def keys(self, timeout: float) -> Iterator[str]:
        """Keys pressed within ``timeout`` seconds (returns at the first one, or when it runs
        out); Ctrl-C as ``\\x03``, however it came."""
        watched = [fd for fd in (self.keys_fd, self._wake[0] if self._wake else None) if fd is not None]
        ready: list[int] = []
        if not self.interrupted:
            ready, _, _ = select.select(watched, [], [], timeout)
        if self._wake is not None and self._wake[0] in ready:
            os.read(self._wake[0], 64)
        if self.interrupted:
            yield _INTERRUPT
        if self.keys_fd is not None and self.keys_fd in ready:
            yield from os.read(self.keys_fd, 64).decode(errors="replace")


def top(client: SchedulerClient, options: argparse.Namespace, out: TextIO) -> int:
    """``top``: redraw the view every ``--interval`` seconds until q or Ctrl-C; ``--once``
    prints one frame."""
    if options.once:
        print("\n".join(render_frame(take_snapshot(client))), file=out)
        return EXIT_OK
    if not _is_terminal(out):
        print("error: switchyard top draws on a terminal; use --once to print one frame", file=sys.stderr)
        return EXIT_USAGE
    snapshot: Snapshot | None = None
    try:
        with _Screen(out) as screen:
            while True:
                try:
                    snapshot = take_snapshot(client)
                except SwitchyardError as exc:
                    stale = snapshot or Snapshot((), (), client.current_address, datetime.now(UTC))
                    snapshot = Snapshot(stale.queues, stale.workers, stale.leader, stale.taken_at, str(exc))
                size = shutil.get_terminal_size()
                screen.draw(render_frame(snapshot, size.columns)[: max(1, size.lines - 1)])
                if any(key in "qQ" + _INTERRUPT for key in screen.keys(options.interval)):
                    return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
