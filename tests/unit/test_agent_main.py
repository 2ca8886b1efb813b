"""The agent's command line: validation with actionable messages, env defaults, reconnect backoff."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from switchyard.v1 import worker_pb2

from worker_agent.main import ConfigError, parse_args, parse_labels, resolve_worker_type
from worker_agent.probe import Capabilities, parse_simulate_spec
from worker_agent.stream import backoff_delays

CELERY = ["--", "celery", "-A", "app", "worker"]


def test_full_command_line() -> None:
    config = parse_args(["--scheduler", "sched:50051", "--worker-id", "gpu-01", "--type", "hybrid",
                         "--simulate-gpu", "1xA100:40960", "--labels", "zone=eu,model=whisper-large",
                         "--state-redis-url", "redis://r:6379/1", "--reconnect-max-seconds", "2",
                         "--log-level", "debug", *CELERY, "-c", "2"], environ={})
    assert config.schedulers == ("sched:50051",) and config.worker_id == "gpu-01"
    assert config.worker_type == "hybrid" and config.simulate_gpu == "1xA100:40960"
    assert config.labels == {"zone": "eu", "model": "whisper-large"}
    assert config.state_redis_url == "redis://r:6379/1" and config.reconnect_max_seconds == 2
    assert config.log_level == "DEBUG"
    assert config.celery_command == ("celery", "-A", "app", "worker", "-c", "2")


def test_environment_supplies_defaults() -> None:
    config = parse_args(CELERY, environ={
        "SWITCHYARD_SCHEDULER": "s:1", "SWITCHYARD_WORKER_ID": "cpu-7", "SWITCHYARD_WORKER_TYPE": "cpu",
        "SWITCHYARD_SIMULATE_GPU": "2xT4:16384", "SWITCHYARD_LABELS": "rack=r1",
    })
    assert (config.schedulers, config.worker_id, config.worker_type, config.simulate_gpu, config.labels) == (
        ("s:1",), "cpu-7", "cpu", "2xT4:16384", {"rack": "r1"})


def test_several_scheduler_addresses_from_flag_or_environment() -> None:
    config = parse_args(["--scheduler", " a:1, b:2 ,a:1", "--worker-id", "w", *CELERY], environ={})
    assert config.schedulers == ("a:1", "b:2")
    config = parse_args(["--worker-id", "w", *CELERY], environ={"SWITCHYARD_SCHEDULER": "[::1]:50051,c:3"})
    assert config.schedulers == ("[::1]:50051", "c:3")


def test_a_scheduler_address_without_a_port_gets_the_schedulers_port() -> None:
    config = parse_args(["--scheduler", "sched,[::1],c:3", "--worker-id", "w", *CELERY], environ={})
    assert config.schedulers == ("sched:50051", "[::1]:50051", "c:3")


@pytest.mark.parametrize(("value", "fragment"), [
    (":50051", "invalid scheduler address ':50051': expected HOST:PORT"),
    ("a:1,b:x", "invalid scheduler address 'b:x': port 'x' is not a number"),
    ("a:70000", "port '70000' is not a number from 1 to 65535"),
    ("::1:50051", "IPv6 host in brackets"),
    (",", "no scheduler address given"),
])
def test_bad_scheduler_addresses_named(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        parse_args(["--scheduler", value, "--worker-id", "w", *CELERY], environ={})


@pytest.mark.parametrize("worker_id", ["_leading-underscore", "has space", "a/b", "x" * 129, "ü"])
def test_bad_worker_ids_rejected(worker_id: str) -> None:
    with pytest.raises(ConfigError, match="invalid worker id"):
        parse_args(["--scheduler", "s:1", "--worker-id", worker_id, *CELERY], environ={})


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--worker-id", "w", *CELERY], r"--scheduler HOST:PORT\[,HOST:PORT\.\.\.\] is required"),
        (["--scheduler", "s:1", *CELERY], "--worker-id is required"),
        (["--scheduler", "s:1", "--worker-id", "w"], "after '--'"),
    ],
)
def test_missing_settings_named(argv: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_args(argv, environ={})


@pytest.mark.parametrize("labels", ["zone", "=eu", "zone=eu,bad", "sp ace=1"])
def test_bad_labels_rejected(labels: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_labels(labels)


def test_labels_the_scheduler_would_refuse_are_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="invalid --labels: label 'zone': its value is 300 characters, at most 256"):
        parse_labels("zone=" + "x" * 300)
    with pytest.raises(ConfigError, match="65 labels: a worker may carry at most 64"):
        parse_labels(",".join(f"k{i}=v" for i in range(65)))


def test_worker_type_follows_gpus_unless_declared() -> None:
    cpu_only = Capabilities(cpu_count=4, memory_total_mb=1024, hostname="h")
    with_gpu = Capabilities(cpu_count=4, memory_total_mb=1024, hostname="h",
                            gpus=parse_simulate_spec("1xT4:16384"), gpu_simulated=True)
    assert resolve_worker_type(None, cpu_only) == worker_pb2.WORKER_TYPE_CPU
    assert resolve_worker_type(None, with_gpu) == worker_pb2.WORKER_TYPE_GPU
    assert resolve_worker_type("hybrid", cpu_only) == worker_pb2.WORKER_TYPE_HYBRID


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    delays = backoff_delays(0.2, 5.0, random.Random(7))
    values = [next(delays) for _ in range(10)]
    ceilings = [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert all(ceiling / 2 <= value <= ceiling for value, ceiling in zip(values, ceilings, strict=True))
    assert len(set(values)) == len(values)


def test_the_run_directory_is_in_memory_when_it_can_be(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tempfile

    from worker_agent import main as agent_main

    memory = tmp_path / "shm"
    memory.mkdir()
    monkeypatch.setattr(agent_main, "RUN_DIR_BASES", (str(tmp_path / "missing"), str(memory)))
    chosen = agent_main.make_run_dir("w-1")
    assert chosen.parent == memory and chosen.name.startswith("sy-agent-w-1-") and chosen.is_dir()
    monkeypatch.setattr(agent_main, "RUN_DIR_BASES", (str(tmp_path / "missing"),))
    fallback = agent_main.make_run_dir("w-1")
    assert fallback.parent == Path(tempfile.gettempdir()) and fallback.is_dir()
    fallback.rmdir()


def test_a_runtime_label_the_scheduler_would_refuse_raises_in_the_task_and_is_not_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker_agent.labels import read_runtime_labels, set_label

    monkeypatch.setenv("SWITCHYARD_RUN_DIR", str(tmp_path))
    set_label("model", "whisper-large")
    with pytest.raises(ValueError, match=r"set_label\('model name', \.\.\.\): label key 'model name' is invalid"):
        set_label("model name", "x")
    with pytest.raises(ValueError, match="its value is 257 characters"):
        set_label("model", "x" * 257)
    assert read_runtime_labels(tmp_path) == {"model": "whisper-large"}


def test_runtime_labels_count_the_agents_own_labels_as_the_scheduler_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchyard.wire import MAX_WORKER_LABELS

    from worker_agent.labels import read_runtime_labels, set_label, write_agent_labels

    monkeypatch.setenv("SWITCHYARD_RUN_DIR", str(tmp_path))
    write_agent_labels(tmp_path, {f"static-{n}": "x" for n in range(MAX_WORKER_LABELS - 1)})
    set_label("static-0", "changed")  # overlays a --labels key: still 63 labels
    set_label("model", "whisper-large")  # the 64th
    with pytest.raises(ValueError, match=f"{MAX_WORKER_LABELS + 1} labels: a worker may carry at most"):
        set_label("gpu-class", "h200")
    assert read_runtime_labels(tmp_path) == {"static-0": "changed", "model": "whisper-large"}
