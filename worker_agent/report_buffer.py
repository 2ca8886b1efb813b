"""Lifecycle reports on their way to the state Redis, kept in order while it cannot be reached.

A task that ends while the state Redis is down (restarting, failing over, cut off) must not lose
its `succeeded` or `failed` report — the scheduler would see the task running forever — and must
not block or fail either. `ReportBuffer.send` writes a report at once when it can; when the write
fails it keeps the report in memory and a background thread writes the backlog, oldest first,
as soon as Redis answers again, retrying with a capped exponential backoff (no busy loop: the
thread sleeps while there is nothing to write). While a backlog exists every new report joins
its end, so the reports of one attempt (progress, then its outcome) reach the stream in order.

The backlog is bounded (10,000 reports per process by default): past that the oldest report is
dropped, with one warning per outage. Delivery is at least once: a batch cut off mid-write may
be written again, which the scheduler tolerates (a second report of an attempt that already
ended is stale and dropped). What is still buffered when the process exits is lost; the Celery
hooks give it a few seconds (`flush`) at shutdown.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger("switchyard.worker.report_buffer")

Report = Mapping[str, str]
"""One lifecycle report: the fields of its stream entry."""

DEFAULT_LIMIT = 10_000
"""Most reports one process keeps while Redis is unreachable; the oldest go first."""
BATCH_SIZE = 200
"""Reports written per round trip when the backlog drains."""
RETRY_INITIAL_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0


class ReportBuffer:
    """Writes reports through `write`, buffering them in order while it raises `unreachable`."""

    def __init__(
        self,
        write: Callable[[Sequence[Report]], None],
        unreachable: tuple[type[BaseException], ...],
        limit: int = DEFAULT_LIMIT,
        retry_initial_seconds: float = RETRY_INITIAL_SECONDS,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
    ) -> None:
        if limit < 1:
            raise ValueError("the report buffer must hold at least one report")
        self._write = write
        self._unreachable = unreachable
        self.limit = limit
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        # (sequence number, report): the number tells the flusher which reports it wrote even
        # when the oldest were dropped from under it meanwhile.
        self._backlog: collections.deque[tuple[int, Report]] = collections.deque()
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        # Per outage, for its two log lines.
        self._outage_logged = False
        self._written_late = 0
        self._dropped = 0

    def send(self, report: Report) -> None:
        """Write `report` now, or buffer it (in order) when Redis cannot be reached."""
        with self._lock:
            if self._backlog:
                self._keep(report, None)
                return
        try:
            self._write([report])
        except self._unreachable as exc:
            with self._lock:
                self._keep(report, exc)

    @property
    def pending(self) -> int:
        """Reports buffered and not yet written."""
        with self._lock:
            return len(self._backlog)

    @property
    def dropped(self) -> int:
        """Reports dropped (buffer full) in the current outage."""
        with self._lock:
            return self._dropped

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the backlog to be written; True when it is empty."""
        with self._lock:
            if self._backlog:
                self._wake.set()
            return self._drained.wait_for(lambda: not self._backlog, timeout)

    def close(self) -> None:
        """Stop the background writer (what is buffered stays unwritten)."""
        self._closed.set()
        self._wake.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(5)

    def _keep(self, report: Report, error: BaseException | None) -> None:
        """Append to the backlog (lock held) and make sure the writer runs."""
        if len(self._backlog) >= self.limit:
            _, oldest = self._backlog.popleft()
            self._dropped += 1
            if self._dropped == 1:
                log.warning(
                    "report buffer full (%d reports): dropping the oldest, starting with a %s report "
                    "of task %s attempt %s", self.limit, oldest.get("type", "?"),
                    oldest.get("task_id", "?"), oldest.get("attempt", "?"),
                )
        self._backlog.append((next(self._numbers), report))
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "state Redis unreachable (%s): keeping lifecycle reports in memory, in order, until it "
                "answers (at most %d); running tasks go on", _describe(error), self.limit,
            )
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._run, name="switchyard-report-flusher", daemon=True)
            self._flusher.start()
        self._wake.set()

    def _run(self) -> None:
        delay = self._retry_initial
        while not self._closed.is_set():
            with self._lock:
                batch = list(itertools.islice(self._backlog, BATCH_SIZE))
            if not batch:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                self._write([report for _, report in batch])
            except self._unreachable as exc:
                log.debug("buffered reports not written yet (%s); retrying in %.2f s", _describe(exc), delay)
                self._closed.wait(delay)
                delay = min(self._retry_max, delay * 2)
                continue
            except Exception:
                # A bug must not end the writer, or every later report would wait forever.
                log.exception("could not write buffered reports; retrying in %.2f s", delay)
                self._closed.wait(delay)
                delay = min(self._retry_max, delay * 2)
                continue
            delay = self._retry_initial
            self._written(batch[-1][0], len(batch))

    def _written(self, last_number: int, count: int) -> None:
        with self._lock:
            while self._backlog and self._backlog[0][0] <= last_number:
                self._backlog.popleft()
            self._written_late += count
            if self._backlog:
                return
            dropped = f"; {self._dropped} older report(s) were dropped (buffer full)" if self._dropped else ""
            log.warning("state Redis answers again: wrote %d buffered report(s)%s", self._written_late, dropped)
            self._outage_logged = False
            self._written_late = 0
            self._dropped = 0
            self._drained.notify_all()


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "earlier reports still waiting"
    return f"{type(error).__name__}: {error}"
