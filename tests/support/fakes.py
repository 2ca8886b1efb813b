"""In-memory stand-ins for the engine's other dependencies, and an engine built over them.

`FakeDispatcher` keeps what would have been published on each worker's Celery queue;
`FakeClock` only moves when a test moves it; `make_engine` builds an `Engine` over a
`FakeState` (tests/support/fake_state.py) and both, so a test drives every loop by hand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.dispatch import HandOut
from scheduler.engine import Engine
from scheduler.settings import Settings
from tests.support.fake_state import FakeState


class FakeDispatcher:
    """Keeps hand-outs on per-worker queues instead of publishing them to Celery."""

    def __init__(self) -> None:
        self.queues: dict[str, list[HandOut]] = defaultdict(list)
        """What waits in each worker's queue (a worker takes it with `take`)."""
        self.published: list[HandOut] = []
        """Every publication ever made, in order."""
        self.failing = False
        """While True every publication fails (nothing is published, as when the broker is down)."""
        self.purged: list[str] = []
        """Workers whose queues were purged (lost workers), in order."""

    async def publish(self, hand_outs: Sequence[HandOut]) -> list[str]:
        if self.failing:
            return []
        for hand_out in hand_outs:
            self.queues[hand_out.worker_id].append(hand_out)
            self.published.append(hand_out)
        return [hand_out.task_id for hand_out in hand_outs]

    async def purge_worker_queue(self, worker_id: str) -> int:
        self.purged.append(worker_id)
        return len(self.queues.pop(worker_id, []))

    def take(self, worker_id: str) -> list[HandOut]:
        """What the worker's Celery consumer would fetch now (its queue is then empty)."""
        return self.queues.pop(worker_id, [])


class FakeClock:
    """A clock that only moves when told to (serves as both wall and monotonic clock)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class EngineRig:
    """An engine and the fakes it runs on."""

    engine: Engine
    state: FakeState
    dispatcher: FakeDispatcher
    clock: FakeClock


def make_engine(
    settings: Settings | None = None, *, state: FakeState | None = None,
    dispatcher: FakeDispatcher | None = None, clock: FakeClock | None = None,
) -> EngineRig:
    """An engine over fakes; pass `state` of an earlier rig to restart over the same state."""
    state = state or FakeState()
    dispatcher = dispatcher or FakeDispatcher()
    clock = clock or FakeClock()
    engine = Engine(settings or Settings(), state, dispatcher, clock=clock, monotonic=clock)
    return EngineRig(engine, state, dispatcher, clock)
