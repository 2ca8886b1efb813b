"""Capability probing: simulated GPU specs, and the clean CPU-only answer where NVML is absent."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from worker_agent.probe import (
    SIMULATE_SPEC_FORM,
    GpuProber,
    parse_simulate_spec,
    probe_capabilities,
    sample_load,
    to_capabilities_proto,
    to_load_proto,
)


def test_single_simulated_device() -> None:
    (gpu,) = parse_simulate_spec("1xA100:40960")
    assert gpu.name == "A100 (simulated)"
    assert gpu.uuid == "SIM-GPU-0"
    assert gpu.memory_total_mb == gpu.memory_free_mb == 40960
    assert gpu.utilization_percent == 0


def test_list_of_simulated_devices_numbered_in_order() -> None:
    gpus = parse_simulate_spec("1xA100:40960, 2xT4:16384")
    assert [(g.index, g.name, g.uuid, g.memory_total_mb) for g in gpus] == [
        (0, "A100 (simulated)", "SIM-GPU-0", 40960),
        (1, "T4 (simulated)", "SIM-GPU-1", 16384),
        (2, "T4 (simulated)", "SIM-GPU-2", 16384),
    ]


@pytest.mark.parametrize(
    "spec",
    ["", "A100", "1xA100", "A100:40960", "0xA100:40960", "1xA100:0", "1xA100:40GB", "-1xA100:1",
     "1xA100:40960,", ",1xA100:40960", "1x:40960", "2 x T4:16384"],
)
def test_bad_specs_are_rejected_with_the_expected_form(spec: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_simulate_spec(spec)
    assert SIMULATE_SPEC_FORM in str(raised.value)
    assert repr(spec) in str(raised.value) or spec == ""


def test_simulated_capabilities_are_always_flagged_simulated() -> None:
    capabilities = probe_capabilities("2xH100:81920")
    message = to_capabilities_proto(capabilities)
    assert message.gpu_simulated is True
    assert [g.uuid for g in message.gpus] == ["SIM-GPU-0", "SIM-GPU-1"]
    assert message.driver_version == ""
    assert message.cpu_count >= 1 and message.memory_total_mb > 0 and message.hostname


def test_no_nvml_on_this_machine_gives_clean_cpu_only_result(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.agent.probe")
    prober = GpuProber()
    capabilities = probe_capabilities(prober=prober)
    assert capabilities.gpus == ()
    assert capabilities.gpu_simulated is False
    assert capabilities.driver_version == ""
    # Later heartbeats neither retry nor log again.
    assert sample_load(prober, active_tasks=0).gpus == ()
    nvml_logs = [r for r in caplog.records if "NVML unavailable" in r.getMessage()]
    assert len(nvml_logs) == 1
    assert nvml_logs[0].levelno == logging.INFO
    assert nvml_logs[0].exc_info is None


class _FakeNvmlError(Exception):
    pass


def test_nvml_error_at_init_degrades_to_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")
    fake.NVMLError = _FakeNvmlError  # type: ignore[attr-defined]

    def failing_init() -> None:
        raise _FakeNvmlError("Driver Not Loaded")

    fake.nvmlInit = failing_init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert probe_capabilities(prober=GpuProber()).gpus == ()


def test_real_nvml_devices_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")
    fake.NVMLError = _FakeNvmlError  # type: ignore[attr-defined]
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlSystemGetDriverVersion = lambda: "550.54.15"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda handle: b"NVIDIA A100-SXM4-40GB"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda handle: "GPU-1234"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=40960 * 1024 * 1024, free=10240 * 1024 * 1024)
    fake.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(gpu=73)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    capabilities = probe_capabilities(prober=GpuProber())
    assert capabilities.gpu_simulated is False
    assert capabilities.driver_version == "550.54.15"
    (gpu,) = capabilities.gpus
    assert (gpu.name, gpu.uuid, gpu.memory_total_mb, gpu.memory_free_mb, gpu.utilization_percent) == (
        "NVIDIA A100-SXM4-40GB", "GPU-1234", 40960, 10240, 73)


def test_load_sample_carries_gpus_and_active_tasks() -> None:
    load = to_load_proto(sample_load(GpuProber("1xT4:16384"), active_tasks=3))
    assert load.active_tasks == 3
    assert 0.0 <= load.cpu_percent <= 100.0 and 0.0 < load.memory_percent <= 100.0
    assert [(g.uuid, g.memory_free_mb) for g in load.gpus] == [("SIM-GPU-0", 16384)]
