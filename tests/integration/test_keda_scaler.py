"""KEDA's external scaler on the scheduler's gRPC port, called the way KEDA calls it: a client
built from KEDA's own contract (protos/externalscaler/externalscaler.proto) against the real
scheduler on real Redis."""

from __future__ import annotations

import grpc
import pytest
from externalscaler import externalscaler_pb2 as keda
from externalscaler import externalscaler_pb2_grpc as keda_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import scheduler_pb2 as pb
from switchyard.v1 import worker_pb2

from tests.support.redis_server import wait_until

GPU_POOL = {"workerType": "gpu", "slotsPerReplica": "2", "gpuMemoryMbPerReplica": "8000",
            "scalerAddress": "switchyard-scheduler.ml.svc:50051"}


def ref(**metadata: str) -> keda.ScaledObjectRef:
    return keda.ScaledObjectRef(name="gpu-workers", namespace="ml", scalerMetadata=metadata)


def scaler(sched) -> keda_grpc.ExternalScalerStub:
    return keda_grpc.ExternalScalerStub(sched.channel)


def submit_gpu_task(sched, memory_mb: int = 6_000) -> str:
    request = pb.SubmitTaskRequest(task_name="media.transcode", content_type="video", gpu_memory_mb=memory_mb,
                                   allow_unschedulable=True)
    return sched.stub.SubmitTask(request).task_id


def metric(stub: keda_grpc.ExternalScalerStub, metadata: dict[str, str]) -> keda.MetricValue:
    (value,) = stub.GetMetrics(keda.GetMetricsRequest(scaledObjectRef=ref(**metadata),
                                                      metricName="switchyard-gpu")).metricValues
    return value


def test_pending_gpu_work_makes_the_gpu_pool_active_with_the_replicas_it_needs(make_scheduler, make_worker):
    sched = make_scheduler()
    stub = scaler(sched)
    (spec,) = stub.GetMetricSpec(ref(**GPU_POOL)).metricSpecs
    assert (spec.metricName, spec.targetSize, spec.targetSizeFloat) == ("switchyard-gpu", 2, 2.0)
    assert stub.IsActive(ref(**GPU_POOL)).result is False
    idle = metric(stub, GPU_POOL)
    assert (idle.metricName, idle.metricValue, idle.metricValueFloat) == ("switchyard-gpu", 0, 0.0)

    for _ in range(3):
        submit_gpu_task(sched)
    sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name="text.summarize", content_type="text"))
    assert stub.IsActive(ref(**GPU_POOL)).result is True
    value = metric(stub, GPU_POOL)
    # 3 tasks: 1.5 replicas of 2 slots; 18,000 MiB: 2.25 replicas of 8,000 MiB. The memory need
    # wins: 2.25 x 2 slots = 4.5 against a target of 2, so the HPA asks for ceil(4.5 / 2) = 3.
    assert (value.metricValueFloat, value.metricValue) == (4.5, 5)
    # The CPU pool is not asked to run GPU work, only the text task; a pool with labels none of
    # the tasks' workers need still counts them (they require none).
    assert metric(stub, {"workerType": "cpu"}).metricValueFloat == 1.0
    assert stub.IsActive(ref(workerType="gpu", labels="zone=eu")).result is True

    # A GPU worker joins and runs one: the pool's demand is the same work, one of it running.
    worker = make_worker(sched, "g1", worker_type=worker_pb2.WORKER_TYPE_GPU, gpus=(8_000,), slots=1,
                         labels={"zone": "eu"})
    delivery = wait_until(lambda: worker.deliveries and worker.deliveries[0], message="a hand-out to g1")
    assert worker.claim(delivery)
    assert metric(stub, GPU_POOL).metricValueFloat == 4.5
    # A pool whose workers carry another label does not count g1's running task.
    assert metric(stub, {**GPU_POOL, "labels": "zone=us"}).metricValueFloat == 3.0


def test_no_demand_is_inactive_so_the_pool_can_scale_to_zero(make_scheduler):
    sched = make_scheduler()
    stub = scaler(sched)
    sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name="text.summarize", content_type="text"))
    assert stub.IsActive(ref(**GPU_POOL)).result is False
    assert metric(stub, GPU_POOL).metricValue == 0
    task_id = submit_gpu_task(sched)
    assert stub.IsActive(ref(**GPU_POOL)).result is True
    sched.stub.CancelTask(pb.CancelTaskRequest(task_id=task_id))
    assert stub.IsActive(ref(**GPU_POOL)).result is False


def test_the_stream_sends_the_answer_at_once_and_after_each_change(make_scheduler):
    sched = make_scheduler()
    stream = scaler(sched).StreamIsActive(ref(**GPU_POOL), timeout=30)
    try:
        assert next(stream).result is False
        task_id = submit_gpu_task(sched)
        assert next(stream).result is True
        sched.stub.CancelTask(pb.CancelTaskRequest(task_id=task_id))
        assert next(stream).result is False
    finally:
        stream.cancel()


def test_bad_metadata_is_invalid_argument_and_the_service_is_health_checked(make_scheduler):
    sched = make_scheduler()
    stub = scaler(sched)
    with pytest.raises(grpc.RpcError) as missing:
        stub.IsActive(ref(slotsPerReplica="2"))
    assert missing.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert missing.value.details() == "scalerMetadata.workerType is required: cpu, gpu, hybrid"
    with pytest.raises(grpc.RpcError) as unknown_queue:
        stub.GetMetricSpec(ref(workerType="gpu", queue="nope"))
    assert unknown_queue.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "queue 'nope', which is not configured" in unknown_queue.value.details()
    with pytest.raises(grpc.RpcError) as bad_stream:
        next(stub.StreamIsActive(ref(workerType="tpu"), timeout=10))
    assert bad_stream.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    health = health_pb2_grpc.HealthStub(sched.channel).Check(
        health_pb2.HealthCheckRequest(service="externalscaler.ExternalScaler"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
