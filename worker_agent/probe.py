"""Capability probing: what GPUs, CPUs and memory this machine offers, and how loaded it is.

Real GPUs come from NVML (pynvml). Any NVML failure — library absent, no driver, a device
that errors — degrades to a CPU-only answer, logged once, never a traceback: a CPU worker on
a machine without NVIDIA software is a normal case, not an error. `--simulate-gpu` replaces
NVML entirely with devices described by a spec, and those are always flagged as simulated so
the scheduler can never mistake a demo box for real hardware.

Probing returns plain dataclasses; `to_capabilities_proto` / `to_load_proto` map them to the
wire messages, so the probing logic is testable without protobuf in the way.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import psutil
from switchyard.v1 import worker_pb2

log = logging.getLogger("switchyard.agent.probe")

SIMULATE_SPEC_FORM = "COUNTxMODEL:MIB[,COUNTxMODEL:MIB...] (e.g. 1xA100:40960 or 1xA100:40960,2xT4:16384)"
_SPEC_ITEM = re.compile(r"^(?P<count>[0-9]+)x(?P<model>[A-Za-z0-9][A-Za-z0-9 _.+-]*):(?P<mib>[0-9]+)$")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as probed (or simulated), with memory in MiB."""

    index: int
    """NVML device index (0-based)."""
    name: str
    """Model name, e.g. "NVIDIA A100-SXM4-40GB" or "A100 (simulated)"."""
    uuid: str
    """NVML UUID ("GPU-...") or "SIM-GPU-<n>" for simulated devices."""
    memory_total_mb: int
    memory_free_mb: int
    utilization_percent: int


@dataclass(frozen=True)
class Capabilities:
    """What this machine can do, probed once at agent start."""

    cpu_count: int
    memory_total_mb: int
    hostname: str
    gpus: tuple[GpuInfo, ...] = ()
    gpu_simulated: bool = False
    """True when `gpus` come from --simulate-gpu; never true for real hardware."""
    driver_version: str = ""
    """NVIDIA driver version; empty when NVML is absent or GPUs are simulated."""


@dataclass(frozen=True)
class Load:
    """Current load, sampled for each heartbeat."""

    active_tasks: int
    cpu_percent: float
    memory_percent: float
    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)


def parse_simulate_spec(spec: str) -> tuple[GpuInfo, ...]:
    """Turn `1xA100:40960,2xT4:16384` into simulated devices numbered from 0.

    Raises ValueError naming the expected form for anything else, so a typo on the command
    line fails the agent at start instead of registering a worker with odd hardware.
    """
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        raise ValueError(f"invalid --simulate-gpu spec {spec!r}: expected {SIMULATE_SPEC_FORM}")
    devices: list[GpuInfo] = []
    for item in items:
        match = _SPEC_ITEM.match(item)
        if match is None:
            raise ValueError(
                f"invalid --simulate-gpu item {item!r} in {spec!r}: expected {SIMULATE_SPEC_FORM}"
            )
        count, model, mib = int(match["count"]), match["model"].strip(), int(match["mib"])
        if count < 1 or mib < 1:
            raise ValueError(
                f"invalid --simulate-gpu item {item!r}: count and MiB must be at least 1; "
                f"expected {SIMULATE_SPEC_FORM}"
            )
        for _ in range(count):
            index = len(devices)
            devices.append(
                GpuInfo(
                    index=index,
                    name=f"{model} (simulated)",
                    uuid=f"SIM-GPU-{index}",
                    memory_total_mb=mib,
                    memory_free_mb=mib,
                    utilization_percent=0,
                )
            )
    return tuple(devices)


class GpuProber:
    """Reads GPUs through NVML, or reports simulated ones; owns NVML's init state.

    NVML is initialised at most once per process; after a failure the prober stays CPU-only
    (and silent) instead of retrying and logging on every heartbeat.
    """

    def __init__(self, simulate_gpu: str | None = None) -> None:
        self.simulated: tuple[GpuInfo, ...] | None = (
            parse_simulate_spec(simulate_gpu) if simulate_gpu else None
        )
        self._nvml: Any = None
        self._nvml_failed = False
        self.driver_version = ""

    def _init_nvml(self) -> Any:
        """The pynvml module after a successful nvmlInit, or None (logged once)."""
        if self._nvml is not None or self._nvml_failed:
            return self._nvml
        try:
            import pynvml

            pynvml.nvmlInit()
            driver = pynvml.nvmlSystemGetDriverVersion()
            self.driver_version = driver.decode() if isinstance(driver, bytes) else str(driver)
            self._nvml = pynvml
        except Exception as exc:  # ImportError, NVMLError_*, OSError: all mean "no GPUs here"
            self._nvml_failed = True
            log.info("NVML unavailable (%s); reporting CPU-only capabilities", _describe(exc))
        return self._nvml

    def read_gpus(self) -> tuple[GpuInfo, ...]:
        """Current GPUs with free memory and utilisation; empty when there are none."""
        if self.simulated is not None:
            return self.simulated
        nvml = self._init_nvml()
        if nvml is None:
            return ()
        try:
            devices: list[GpuInfo] = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                try:
                    utilization = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                except nvml.NVMLError:
                    # Some devices (MIG slices, vGPUs) do not report utilisation.
                    utilization = 0
                devices.append(
                    GpuInfo(
                        index=index,
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                        memory_total_mb=int(memory.total) // (1024 * 1024),
                        memory_free_mb=int(memory.free) // (1024 * 1024),
                        utilization_percent=utilization,
                    )
                )
            return tuple(devices)
        except Exception as exc:
            # A GPU falling off the bus mid-run: report none rather than crash the agent.
            log.warning("NVML query failed (%s); reporting no GPUs this time", _describe(exc))
            return ()


def probe_capabilities(simulate_gpu: str | None = None, prober: GpuProber | None = None) -> Capabilities:
    """Probe CPUs, memory, hostname and GPUs (NVML, or simulated from `simulate_gpu`)."""
    prober = prober or GpuProber(simulate_gpu)
    gpus = prober.read_gpus()
    simulated = prober.simulated is not None
    return Capabilities(
        cpu_count=psutil.cpu_count(logical=True) or 1,
        memory_total_mb=int(psutil.virtual_memory().total) // (1024 * 1024),
        hostname=socket.gethostname(),
        gpus=gpus,
        gpu_simulated=simulated,
        driver_version="" if simulated else prober.driver_version,
    )


def sample_load(prober: GpuProber, active_tasks: int) -> Load:
    """Current CPU/memory use and GPU refresh, for one heartbeat.

    `psutil.cpu_percent(None)` measures since the previous call, so calling this once per
    heartbeat yields the average over the heartbeat interval without blocking.
    """
    return Load(
        active_tasks=active_tasks,
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        memory_percent=float(psutil.virtual_memory().percent),
        gpus=prober.read_gpus(),
    )


def _gpu_proto(gpu: GpuInfo) -> worker_pb2.GpuDevice:
    return worker_pb2.GpuDevice(
        index=gpu.index,
        name=gpu.name,
        uuid=gpu.uuid,
        memory_total_mb=gpu.memory_total_mb,
        memory_free_mb=gpu.memory_free_mb,
        utilization_percent=gpu.utilization_percent,
    )


def to_capabilities_proto(capabilities: Capabilities) -> worker_pb2.WorkerCapabilities:
    """Map probed capabilities to the wire message."""
    return worker_pb2.WorkerCapabilities(
        cpu_count=capabilities.cpu_count,
        memory_total_mb=capabilities.memory_total_mb,
        gpus=[_gpu_proto(gpu) for gpu in capabilities.gpus],
        gpu_simulated=capabilities.gpu_simulated,
        driver_version=capabilities.driver_version,
        hostname=capabilities.hostname,
    )


def to_load_proto(load: Load) -> worker_pb2.WorkerLoad:
    """Map a load sample to the wire message."""
    return worker_pb2.WorkerLoad(
        active_tasks=load.active_tasks,
        cpu_percent=load.cpu_percent,
        memory_percent=load.memory_percent,
        gpus=[_gpu_proto(gpu) for gpu in load.gpus],
    )


def _text(value: object) -> str:
    # Older pynvml returned bytes, newer returns str.
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
