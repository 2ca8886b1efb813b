"""KEDA's external scaler (`externalscaler.ExternalScaler`), served on the scheduler's gRPC port
so that a ScaledObject trigger of `type: external` (or `external-push`) can point at it.

The trigger's metadata (`ScaledObjectRef.scalerMetadata`) names the pool of workers to scale:

    workerType             gpu | cpu | hybrid (required)
    labels                 k=v,k2=v2 — labels every worker of the pool has (optional)
    queue                  count only this logical queue's tasks (optional)
    slotsPerReplica        task slots one replica runs (default 1)
    gpuMemoryMbPerReplica  GPU memory one replica offers, MiB (default 0: not weighed)

KEDA adds keys of its own (scalerAddress, TLS settings); keys neither side knows are logged once.

The answers (the demand itself: scheduler/core/demand.py):

* GetMetricSpec: one metric, `switchyard-<workerType>[-<queue>]`, with target
  `slotsPerReplica` (targetSize and targetSizeFloat);
* GetMetrics: the demand in slots, `replicas x slotsPerReplica` where replicas =
  max(slots / slotsPerReplica, GPU MiB / gpuMemoryMbPerReplica), so that value / target — what
  the HPA computes for an AverageValue metric, KEDA's default for external scalers — is the
  number of replicas needed. metricValueFloat carries it exactly, metricValue rounded up
  (KEDA reads the integer when the float is 0);
* IsActive: whether the pool has any demand; false lets KEDA scale the pool to zero;
* StreamIsActive: that answer at once, then each time it flips (engine/autoscale.py says how
  changes are noticed).

Only the leader answers (a standby answers UNAVAILABLE naming the leader, as every RPC does);
a stream open on a scheduler that stops leading ends with UNAVAILABLE, and KEDA reconnects.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from externalscaler import externalscaler_pb2, externalscaler_pb2_grpc
from switchyard.wire import label_key_problem

from scheduler.api.servicers import (
    Context,
    EngineSource,
    LeaderBound,
    _abort_for,
    _rpc,
    _until_stopped,
)
from scheduler.core.demand import Pool
from scheduler.core.model import WorkerType
from scheduler.errors import InvalidArgument

log = logging.getLogger("switchyard.scheduler.api.keda")

SERVICE_NAME = externalscaler_pb2.DESCRIPTOR.services_by_name["ExternalScaler"].full_name
"""`externalscaler.ExternalScaler` (health checks and reflection list it)."""

KNOWN_KEYS = frozenset({"workerType", "labels", "queue", "slotsPerReplica", "gpuMemoryMbPerReplica"})
"""The scaler metadata Switchyard reads."""
KEDA_KEYS = frozenset({"scalerAddress", "caCert", "tlsCertFile", "tlsClientCert", "tlsClientKey",
                       "unsafeSsl", "enableTLS"})
"""Keys KEDA itself puts into an external trigger's metadata (never warned about)."""
_warned_keys: set[str] = set()


def _whole_number(metadata: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    text = metadata.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise InvalidArgument(f"scalerMetadata.{key} must be a whole number >= {minimum}; got {text!r}")
    return value


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgument(f"scalerMetadata.labels must be k=v,k2=v2; {item!r} has no '='")
        problem = label_key_problem(key)
        if problem:
            raise InvalidArgument(f"scalerMetadata.labels: {problem}")
        labels[key] = value.strip()
    return labels


def pool_of(metadata: Mapping[str, str]) -> Pool:
    """The pool a trigger's metadata names (see the module docstring); InvalidArgument saying
    which key is wrong and what it takes."""
    for key in sorted(set(metadata) - KNOWN_KEYS - KEDA_KEYS - _warned_keys):
        _warned_keys.add(key)
        log.warning("KEDA scaler metadata key %r is not one Switchyard reads (it reads %s); ignored",
                    key, ", ".join(sorted(KNOWN_KEYS)))
    kind = metadata.get("workerType", "").strip().lower()
    valid = ", ".join(t.value for t in WorkerType)
    if not kind:
        raise InvalidArgument(f"scalerMetadata.workerType is required: {valid}")
    try:
        worker_type = WorkerType(kind)
    except ValueError:
        raise InvalidArgument(f"scalerMetadata.workerType {kind!r} is not one of {valid}") from None
    memory = _whole_number(metadata, "gpuMemoryMbPerReplica", 0, 0)
    if memory and worker_type is WorkerType.CPU:
        raise InvalidArgument("scalerMetadata.gpuMemoryMbPerReplica is for gpu and hybrid pools; "
                              "a cpu pool's replicas have no GPU")
    return Pool(
        worker_type=worker_type,
        labels=_labels(metadata.get("labels", "")),
        queue=metadata.get("queue", "").strip(),
        slots_per_replica=_whole_number(metadata, "slotsPerReplica", 1, 1),
        gpu_memory_mb_per_replica=memory,
    )


def metric_name(pool: Pool) -> str:
    """The pool's metric: `switchyard-<workerType>[-<queue>]`, lower-case letters, digits and '-'
    (what a Kubernetes metric name allows)."""
    name = f"switchyard-{pool.worker_type.value}" + (f"-{pool.queue}" if pool.queue else "")
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


class ExternalScalerServicer(LeaderBound, externalscaler_pb2_grpc.ExternalScalerServicer):
    """KEDA's external scaler over the engine's pool demand (engine/autoscale.py)."""

    @_rpc
    async def IsActive(self, request: externalscaler_pb2.ScaledObjectRef, context: Context) -> externalscaler_pb2.IsActiveResponse:
        demand = await self.engine.autoscale.demand(pool_of(request.scalerMetadata))
        return externalscaler_pb2.IsActiveResponse(result=demand.tasks > 0)

    async def StreamIsActive(self, request: externalscaler_pb2.ScaledObjectRef, context: Context) -> AsyncIterator[externalscaler_pb2.IsActiveResponse]:
        try:
            engine = self.engine
            activity = engine.autoscale.activity(pool_of(request.scalerMetadata))
            async for active in _until_stopped(engine, activity):
                yield externalscaler_pb2.IsActiveResponse(result=active)
        except Exception as exc:
            await _abort_for(exc, context)

    @_rpc
    async def GetMetricSpec(self, request: externalscaler_pb2.ScaledObjectRef, context: Context) -> externalscaler_pb2.GetMetricSpecResponse:
        pool = pool_of(request.scalerMetadata)
        self.engine.autoscale.check(pool)
        return externalscaler_pb2.GetMetricSpecResponse(metricSpecs=[externalscaler_pb2.MetricSpec(
            metricName=metric_name(pool), targetSize=pool.slots_per_replica,
            targetSizeFloat=float(pool.slots_per_replica),
        )])

    @_rpc
    async def GetMetrics(self, request: externalscaler_pb2.GetMetricsRequest, context: Context) -> externalscaler_pb2.GetMetricsResponse:
        pool = pool_of(request.scaledObjectRef.scalerMetadata)
        value = (await self.engine.autoscale.demand(pool)).slot_equivalents(pool)
        return externalscaler_pb2.GetMetricsResponse(metricValues=[externalscaler_pb2.MetricValue(
            metricName=request.metricName or metric_name(pool), metricValue=math.ceil(value),
            metricValueFloat=value,
        )])


def add_to_server(engines: EngineSource, server: Any) -> None:
    """Serve the external scaler on `server` (the scheduler's gRPC server)."""
    externalscaler_pb2_grpc.add_ExternalScalerServicer_to_server(ExternalScalerServicer(engines), server)  # type: ignore[no-untyped-call]
