"""Progress reports from inside a task, without a Celery result backend.

    from worker_agent.progress import report
    report(0.4, "transcribed 4 of 10 chunks")

Inside a Switchyard attempt this appends a `progress` event to the lifecycle stream; anywhere
else (plain Celery, tests, a shell) it does nothing, so tasks stay runnable outside Switchyard.
"""

from __future__ import annotations

from worker_agent.celery_hooks import report_progress

__all__ = ["report"]


def report(progress: float, message: str = "") -> None:
    """Report `progress` (0..1, clamped) and an optional message for the running attempt."""
    report_progress(progress, message)
