"""Worker labels are bounded: a hello carrying labels the scheduler will not hold is refused with
a message naming the label, and a heartbeat's label change that breaks the bounds is refused
(said once in the log) while the worker keeps its labels. A worker's labels travel in every
ListWorkers answer, so unbounded ones from one agent could make that answer too big to send."""

from __future__ import annotations

import logging

import pytest
from switchyard.wire import MAX_LABEL_VALUE_CHARS, MAX_WORKER_LABELS

from scheduler.errors import InvalidArgument
from tests.support.fakes import make_engine
from tests.unit.engine.drive import connect


@pytest.mark.parametrize(("labels", "said"), [
    ({"zone": "x" * (MAX_LABEL_VALUE_CHARS + 1)}, "label 'zone': its value is 257 characters, at most 256"),
    ({f"k{i}": "v" for i in range(MAX_WORKER_LABELS + 1)}, "65 labels: a worker may carry at most 64"),
    ({"has space": "v"}, "label key 'has space' is invalid"),
])
async def test_a_hello_with_labels_out_of_bounds_is_refused_naming_them(labels: dict[str, str], said: str) -> None:
    rig = make_engine()
    with pytest.raises(InvalidArgument, match="worker w1 labels: " + said):
        await connect(rig, "w1", labels=labels)
    assert rig.engine.shared.fleet.get("w1") is None
    await connect(rig, "w1", labels={"zone": "x" * MAX_LABEL_VALUE_CHARS})  # at the bounds: welcome


async def test_a_label_change_out_of_bounds_is_refused_once_and_the_labels_stay(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_engine()
    worker = await connect(rig, "w1", labels={"zone": "eu"})
    agents = rig.engine.agents
    agents.heartbeat("w1", worker.session, None, [], {"model": "big"}, False)
    assert worker.labels == {"zone": "eu", "model": "big"}
    with caplog.at_level(logging.WARNING, logger="switchyard.scheduler.engine.agents"):
        for _ in range(3):  # an agent keeps asking at every heartbeat
            agents.heartbeat("w1", worker.session, None, [], {"blob": "y" * 10_000}, False)
    assert worker.labels == {"zone": "eu", "model": "big"}
    refused = [r.getMessage() for r in caplog.records if "label change refused" in r.getMessage()]
    assert refused == ["worker w1: label change refused, its labels stay as they were: "
                       "label 'blob': its value is 10000 characters, at most 256 are allowed"]
    agents.heartbeat("w1", worker.session, None, [], {"zone": "us"}, True)  # a good change goes through again
    assert worker.labels == {"zone": "us"} and worker.refused_labels == ""
