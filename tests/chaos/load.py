"""A steady stream of submissions from a background thread, every answer kept in a ledger."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tests.chaos.ledger import Ledger
from tests.support.stack import Stack


class SteadyLoad:
    """Submits `e2e.sleep(seconds, tag)` at `rate` per second until stopped (a context manager).

    The pace is kept against the clock, not by sleeping a fixed gap after each call, so a slow
    answer is caught up on; while the scheduler refuses calls (it is down) the refusals are
    counted in the ledger and the stream goes on.
    """

    def __init__(self, stack: Stack, ledger: Ledger, *, rate: float, seconds: float,
                 prefix: str = "load", fields: Callable[[int], dict[str, Any]] | None = None) -> None:
        self.stack = stack
        self.ledger = ledger
        self.rate = rate
        self.seconds = seconds
        self.prefix = prefix
        self.fields = fields
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"the load generator crashed: {self.error!r}") from self.error

    def _run(self) -> None:
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                due = started + self.sent / self.rate
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                tag = f"{self.prefix}-{self.sent:05d}"
                extra = self.fields(self.sent) if self.fields else {}
                self.ledger.submit(self.stack, "e2e.sleep", [self.seconds, tag], tag=tag,
                                   content_type="text", **extra)
                self.sent += 1
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
