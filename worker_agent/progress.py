"""Progress reports from inside a task, without a Celery result backend.

    from worker_agent.progress import report
    report(0.4, "transcribed 4 of 10 chunks")

Inside a Switchyard attempt this appends a `progress` event to the lifecycle stream; anywhere
else (plain Celery, tests, a shell) it does nothing, so tasks stay runnable outside Switchyard.
`task.update_state(state="PROGRESS", meta=...)` reaches the same place through
`worker_agent.celery_hooks`, which reads the fraction with `progress_fraction`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchyard.wire import EVENT_PROGRESS

from worker_agent.attempts import current_attempt
from worker_agent.state_client import state_store

__all__ = ["progress_fraction", "report"]


def report(progress: float, message: str = "") -> None:
    """Report `progress` (0..1, clamped) and an optional message for the running attempt."""
    attempt = current_attempt()
    if attempt is None:
        return
    state_store().emit(EVENT_PROGRESS, attempt, progress=repr(_clamp(float(progress))), message=message)


def progress_fraction(meta: Mapping[str, Any]) -> float | None:
    """Progress in 0..1 from `{"progress": p}` or `{"current": c, "total": t}`; None if absent."""
    try:
        if meta.get("progress") is not None:
            fraction = float(meta["progress"])
        elif meta.get("current") is not None and meta.get("total"):
            fraction = float(meta["current"]) / float(meta["total"])
        else:
            return None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return _clamp(fraction)


def _clamp(fraction: float) -> float:
    return min(1.0, max(0.0, fraction))
