"""Crash points: named steps where a test can make the scheduler die as if SIGKILLed.

`SWITCHYARD_CRASH_AT=<point>:<n>` (read once at import) makes the process exit at once, with
no clean-up and status 137, the n-th time it reaches `<point>`. Unset (always, outside the
crash tests), `reached` is one dictionary lookup. The points are the steps of the hot path
where a crash could lose or duplicate work if the protocol were wrong: before and after each
round trip that commits submissions, hand-outs (a placement round's, or those made in the same
round trip as a submission or as the reports that freed their slots) and lifecycle reports.
"""

from __future__ import annotations

import os

POINTS = (
    "submit:before", "submit:after",
    "dispatch:before", "dispatch:after",
    "apply:before", "apply:after",
)
"""Every crash point in the code (tests iterate over them)."""

CRASH_EXIT_STATUS = 137
"""What the process exits with at a crash point (as if killed by SIGKILL)."""


def _armed() -> dict[str, int]:
    spec = os.environ.get("SWITCHYARD_CRASH_AT", "")
    if not spec:
        return {}
    point, _, count = spec.rpartition(":")
    if point not in POINTS or not count.isdigit():
        raise SystemExit(f"SWITCHYARD_CRASH_AT={spec!r}: use <point>:<n> with a point of {', '.join(POINTS)}")
    return {point: int(count)}


_countdown = _armed()


def reached(point: str) -> None:
    """Die here if this is the armed point's n-th visit."""
    if point in _countdown:
        _countdown[point] -= 1
        if _countdown[point] <= 0:
            os._exit(CRASH_EXIT_STATUS)
