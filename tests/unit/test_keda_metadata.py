"""The KEDA scaler's trigger metadata (scheduler/api/keda.py): the pool it names, the metric's
name, and one clear message for each mistake."""

from __future__ import annotations

import logging

import pytest

from scheduler.api.keda import metric_name, pool_of
from scheduler.core.demand import Pool
from scheduler.core.model import WorkerType
from scheduler.errors import InvalidArgument


def test_metadata_names_a_pool() -> None:
    pool = pool_of({"workerType": "GPU", "labels": "zone=eu, tier = a ", "queue": "gpu_priority",
                    "slotsPerReplica": "2", "gpuMemoryMbPerReplica": "24000",
                    "scalerAddress": "switchyard:50051"})
    assert pool == Pool(WorkerType.GPU, {"zone": "eu", "tier": "a"}, "gpu_priority", 2, 24_000)
    assert metric_name(pool) == "switchyard-gpu-gpu-priority"
    assert pool_of({"workerType": "cpu"}) == Pool(WorkerType.CPU)
    assert metric_name(pool_of({"workerType": "cpu"})) == "switchyard-cpu"


@pytest.mark.parametrize(("metadata", "message"), [
    ({}, "scalerMetadata.workerType is required: cpu, gpu, hybrid"),
    ({"workerType": "tpu"}, "scalerMetadata.workerType 'tpu' is not one of cpu, gpu, hybrid"),
    ({"workerType": "gpu", "slotsPerReplica": "0"}, "scalerMetadata.slotsPerReplica must be a whole number >= 1; got '0'"),
    ({"workerType": "gpu", "slotsPerReplica": "two"}, "scalerMetadata.slotsPerReplica must be a whole number >= 1; got 'two'"),
    ({"workerType": "gpu", "gpuMemoryMbPerReplica": "-1"},
     "scalerMetadata.gpuMemoryMbPerReplica must be a whole number >= 0; got '-1'"),
    ({"workerType": "cpu", "gpuMemoryMbPerReplica": "1000"},
     "scalerMetadata.gpuMemoryMbPerReplica is for gpu and hybrid pools; a cpu pool's replicas have no GPU"),
    ({"workerType": "gpu", "labels": "zone"}, "scalerMetadata.labels must be k=v,k2=v2; 'zone' has no '='"),
    ({"workerType": "gpu", "labels": "bad key=x"}, "scalerMetadata.labels: label key 'bad key' is invalid"),
])
def test_each_mistake_gets_one_message(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        pool_of(metadata)
    assert str(caught.value).startswith(message)


def test_a_key_nobody_reads_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="switchyard.scheduler.api.keda"):
        pool_of({"workerType": "gpu", "slotPerReplica": "4", "tlsCertFile": "/x"})
        pool_of({"workerType": "gpu", "slotPerReplica": "4"})
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "'slotPerReplica'" in warned[0]
