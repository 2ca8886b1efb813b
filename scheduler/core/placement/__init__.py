"""Placement: filter, then score, then book — which pending task goes to which worker, and why.

policy.py holds what placement is given (`PlacementPolicy`, `PlacementContext`), filters.py the
registry of filters, scoring.py the score terms, verdicts.py one task judged against one worker
(`evaluate`, `explain`, `wait_reason`), decisions.py a placement round (`plan`), which finds
workers through the shape index (shapes.py, booking.py); reference.py keeps the worker-by-worker
scan the index is tested against. This package's public face re-exports what the rest of the
scheduler uses.
"""

from scheduler.core.placement.decisions import plan
from scheduler.core.placement.filters import FILTER_NAMES
from scheduler.core.placement.policy import (
    PlacementContext,
    PlacementPolicy,
    ScoringWeights,
    Strategy,
)
from scheduler.core.placement.shapes import ShapeVerdicts
from scheduler.core.placement.verdicts import Verdict, evaluate, explain, rejection, wait_reason

__all__ = [
    "FILTER_NAMES",
    "PlacementContext",
    "PlacementPolicy",
    "ScoringWeights",
    "ShapeVerdicts",
    "Strategy",
    "Verdict",
    "evaluate",
    "explain",
    "plan",
    "rejection",
    "wait_reason",
]
