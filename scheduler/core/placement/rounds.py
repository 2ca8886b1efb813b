"""What one placement round is made of: a picker that chooses and books workers, and its choices.

`plan` (decisions.py) walks the pending tasks and asks a `Picker` for the best worker for each.
Two pickers exist: the shape index (shapes.py), which `plan` uses, and the worker-by-worker scan
(reference.py), kept as the specification the shape index is tested against. Both book what they
hand out, so later tasks of the round see the slots, per-queue counts and GPU memory taken.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from scheduler.core.model import PendingTask, WorkerType


@dataclass(frozen=True, slots=True)
class Choice:
    """The worker a picker chose for a task, and what the assignment's reason says about it."""

    worker_id: str
    worker_type: WorkerType
    score: float
    served_queue: str
    """Queue the task is served under there (its own, or one reached by fallback)."""
    gpu_index: int | None
    """Device its GPU memory is reserved on, when it asked for some on a GPU worker."""


class Picker(Protocol):
    """Chooses workers for one round and books them; see the module docstring."""

    def has_open(self) -> bool:
        """Whether some accepting worker still has a free slot (prefetch included)."""
        ...

    def best(self, task: PendingTask, key: tuple[Hashable, ...], turn: int) -> Choice | None:
        """The highest-scoring eligible worker (ties to the smaller worker id), or None.

        `key` is the task's memo key; `turn` counts the tasks examined so far this round.
        """
        ...

    def book(self, task: PendingTask, choice: Choice) -> None:
        """Take a slot, a count of the served queue and the task's GPU memory on the chosen worker."""
        ...

    def wait_reason(self, task: PendingTask) -> str:
        """`wait_reason` for a task no worker takes, over the fleet as the round has booked it."""
        ...
