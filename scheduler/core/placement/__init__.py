"""Placement: filter, then score, then book — which pending task goes to which worker, and why.

policy.py holds what placement is given (`PlacementPolicy`, `PlacementContext`), filters.py the
registry of filters, scoring.py the score terms, decisions.py the decisions (`evaluate`, `plan`,
`explain`, `wait_reason`). This package's public face re-exports what the rest of the scheduler
uses.
"""

from scheduler.core.placement.decisions import (
    Verdict,
    evaluate,
    explain,
    plan,
    rejection,
    wait_reason,
)
from scheduler.core.placement.filters import FILTER_NAMES
from scheduler.core.placement.policy import (
    PlacementContext,
    PlacementPolicy,
    ScoringWeights,
    Strategy,
)

__all__ = [
    "FILTER_NAMES",
    "PlacementContext",
    "PlacementPolicy",
    "ScoringWeights",
    "Strategy",
    "Verdict",
    "evaluate",
    "explain",
    "plan",
    "rejection",
    "wait_reason",
]
