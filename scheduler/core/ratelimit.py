"""Rate limits per task name: a token bucket per limit, refilled from the time passed in."""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """At most `per_second` hand-outs per second (with `burst`) for task names matching `pattern`."""

    pattern: str
    """Glob on the Celery task name, e.g. "auteur.tasks.generate.*"."""
    per_second: float
    burst: int = 1
    """Hand-outs allowed at once after a quiet spell (the bucket's size)."""

    @staticmethod
    def parse(pattern: str, text: str) -> RateLimit:
        """From Celery-style text: "10/m", "100/s", "5/h"."""
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"rate {text!r} must look like 10/s, 10/m or 10/h")
        count, unit = float(match.group(1)), match.group(2)
        if count <= 0:
            raise ValueError(f"rate {text!r} must be positive")
        return RateLimit(pattern, count / _PER[unit], burst=max(1, math.ceil(count / 60)) if unit != "s" else max(1, int(count)))

    def matches(self, task_name: str) -> bool:
        """Whether the limit applies to tasks of this name."""
        return fnmatch.fnmatchcase(task_name, self.pattern)


@dataclass(frozen=True)
class Bucket:
    """Token bucket state of one rate limit."""

    tokens: float
    updated_at: float


def refill(limit: RateLimit, bucket: Bucket | None, now: float) -> Bucket:
    """The bucket at `now`: full when new, else topped up for the time passed (never above burst)."""
    if bucket is None:
        return Bucket(float(limit.burst), now)
    tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated_at) * limit.per_second)
    return Bucket(tokens, now)
