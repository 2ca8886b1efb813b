"""The scheduler process tunes the garbage collector before it serves (scheduler/main.py)."""

from __future__ import annotations

import gc

from scheduler.main import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_what_is_loaded_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0  # start-up's objects are out of every collection
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
