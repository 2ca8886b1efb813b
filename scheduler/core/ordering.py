"""Priority and aging: the order in which pending tasks are offered to workers.

Placement takes tasks highest effective priority first, then oldest first (`PendingTask.order_key`
at zero wait). Waiting raises the effective priority one level at a time, so nothing starves.
The time waited is passed in; nothing here reads the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.core.model import MAX_PRIORITY, MIN_PRIORITY


def clamp_priority(value: int) -> int:
    """Keep a priority inside 1-10."""
    return max(MIN_PRIORITY, min(MAX_PRIORITY, value))


@dataclass(frozen=True)
class AgingPolicy:
    """Waiting raises a task's effective priority one level at a time, so nothing starves."""

    enabled: bool = True
    default_max_wait_seconds: float = 300.0
    """Wait at a level before moving up one, unless the level has its own."""
    max_wait_seconds: Mapping[int, float] = field(default_factory=dict)
    """Per base level (1-9): wait before moving up one level."""

    def wait_at(self, level: int) -> float:
        """Seconds a task waits at `level` before it moves up one."""
        return max(0.001, self.max_wait_seconds.get(level, self.default_max_wait_seconds))

    def effective_priority(self, base: int, waited_seconds: float) -> int:
        """Base priority raised by one level for each level's maximum wait spent (at most 10)."""
        if not self.enabled or waited_seconds <= 0:
            return base
        level, remaining = base, waited_seconds
        while level < MAX_PRIORITY:
            step = self.wait_at(level)
            if remaining < step:
                break
            remaining -= step
            level += 1
        return level
