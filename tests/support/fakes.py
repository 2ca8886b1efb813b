"""In-memory stand-ins for the engine's other dependencies, and an engine built over them.

`FakeClock` only moves when a test moves it; `make_engine` builds an `Engine` over a `FakeState`
(tests/support/fake_state.py), whose hand-outs land as real Celery messages on per-worker
queues (`FakeState.take` fetches them as a worker's consumer would), so a test drives every loop
by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.engine import Engine
from scheduler.settings import Settings
from tests.support.celery_queue import messages
from tests.support.fake_state import FakeState


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
    clock: FakeClock


def make_engine(
    settings: Settings | None = None, *, state: FakeState | None = None, clock: FakeClock | None = None,
) -> EngineRig:
    """An engine over fakes; pass `state` of an earlier rig to restart over the same state."""
    state = state or FakeState()
    clock = clock or FakeClock()
    engine = Engine(settings or Settings(), state, messages(), clock=clock, monotonic=clock)
    return EngineRig(engine, state, clock)
