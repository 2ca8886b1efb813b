"""Crash points: named steps where a test can make the scheduler die as if SIGKILLed.

`SWITCHYARD_CRASH_AT=<point>:<n>` (read once at import) makes the process exit at once, with
no clean-up and status 137, the n-th time it reaches `<point>`. Unset (always, outside the
crash tests), `reached` is one dictionary lookup. The points are the steps of the hot path
where a crash could lose or duplicate work if the protocol were wrong: before and after each
round trip that commits submissions, hand-outs (a placement round's, or those made in the same
round trip as a submission or as the reports that freed their slots) and lifecycle reports;
then the steps around them (answering submitters, memory following a commit, promoting a due
retry, losing a worker, replaying a dead letter, cancelling) and each stage of recovery at
start. tests/chaos/test_scheduler_crash_points.py crashes the scheduler at every one of them.
"""

from __future__ import annotations

import os

HOT_PATH_POINTS = (
    "submit:before", "submit:after",
    "dispatch:before", "dispatch:after",
    "apply:before", "apply:after",
)
"""The points around the hot path's commits, which any stream of submissions reaches
(tests/e2e/test_crash_points.py crashes at each of them)."""

POINTS = (
    *HOT_PATH_POINTS,
    # Admission: the submitters have their answers, the same round trip's hand-outs not yet followed.
    "submit:answered",
    # Hand-out: memory has followed a round's hand-outs, watchers not yet told.
    "handout:followed",
    # Lifecycle: reports read but not applied; applied and followed, watchers not yet told.
    "report:read", "report:followed",
    # Retries: a due retry's promotion back to pending.
    "retry:promote:before", "retry:promote:after",
    # Liveness: a lost worker marked lost in memory; each attempt re-queued; its Celery queue purged.
    "lost:marked", "lost:requeued", "lost:purge:before", "lost:purge:after",
    # Recovery at start: before anything is read; pending rebuilt; in-flight ledgers rebuilt.
    "recover:start", "recover:pending", "recover:ledgers",
    # Dead letters: a replay back to pending; a purge.
    "deadletter:replay:before", "deadletter:replay:after", "deadletter:purge:before",
    # Cancel: before and after the store's cancel.
    "cancel:before", "cancel:after",
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
