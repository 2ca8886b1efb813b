"""deploy/compose/compose.yaml: valid by the Compose specification, and a stack that would work.

The schema check is check-jsonschema with the Compose specification's schema it ships
(`--builtin-schema vendor.compose-spec`), offline. The rest reads the file the way the
processes would: each agent's command line and environment go through the agent's own parser,
the scheduler's configuration file through the scheduler's own loader, and every file the
stack mounts must exist where the compose file says.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from scheduler.config.load import load_settings
from scheduler.core.model import TaskClass
from scheduler.main import Security, exposure_problem
from tests.deploy.tools import COMPOSE_FILE, DOCKERFILE, as_environ, load_yaml, run, tool
from worker_agent.main import parse_args
from worker_agent.supervise import rewrite_worker_command

COMPOSE_DIR = COMPOSE_FILE.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = load_yaml(COMPOSE_FILE)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _schedulers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if _command(s)[:1] == ["switchyard-scheduler"]}


def _agents(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if _command(s)[:1] == ["switchyard-agent"]}


def _bind_sources(service: dict[str, Any]) -> dict[str, Path]:
    """target -> host path of the service's bind mounts (long syntax)."""
    return {
        volume["target"]: (COMPOSE_DIR / volume["source"]).resolve()
        for volume in service.get("volumes", [])
        if isinstance(volume, dict) and volume.get("type") == "bind"
    }


def test_valid_against_the_compose_specification_schema() -> None:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    # Guards the check above against passing vacuously (a wrong schema name, an empty schema).
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  redis:\n    image: redis\n    restart: sometimes\n    bogus: 1\n")
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)])
    assert result.returncode != 0 and "bogus" in result.stdout + result.stderr, result.stdout


def test_every_mounted_file_exists(services: dict[str, dict[str, Any]]) -> None:
    mounts = [(name, target, source) for name, service in services.items()
              for target, source in _bind_sources(service).items()]
    # Two scheduler configurations, Prometheus' config and rules, Grafana's provisioning and dashboard.
    assert len(mounts) >= 6, mounts
    for name, target, source in mounts:
        assert source.exists(), f"service {name} mounts {source} at {target}, which does not exist"


def test_redis_keeps_its_data_in_an_append_only_file(services: dict[str, dict[str, Any]]) -> None:
    command = _command(services["redis"])
    assert command[:1] == ["redis-server"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(volume).endswith(":/data") for volume in services["redis"]["volumes"])


def test_two_schedulers_share_one_redis_and_load_a_seed_pipeline(services: dict[str, dict[str, Any]]) -> None:
    schedulers = _schedulers(services)
    assert len(schedulers) == 2, sorted(schedulers)
    settings = {}
    for name, service in schedulers.items():
        environ = as_environ(service["environment"])
        # The configuration file is a seed pipeline's own file, mounted where the setting points.
        mounts = _bind_sources(service)
        config_target = environ["SWITCHYARD_CONFIG_FILE"]
        assert mounts[config_target].parent.name == "examples", mounts
        environ["SWITCHYARD_CONFIG_FILE"] = str(mounts[config_target])
        settings[name] = load_settings([], environ)
        assert urlsplit(settings[name].redis_url).hostname in services, settings[name].redis_url
        # A standby names the leader by this address: it must be the service's own name.
        host, _, port = settings[name].advertise_address.rpartition(":")
        assert host == name and port == settings[name].listen.rpartition(":")[2], settings[name].advertise_address
    first, second = settings.values()
    assert first.redis_url == second.redis_url and first.key_prefix == second.key_prefix
    assert first.queues == second.queues


def test_agents_parse_follow_both_schedulers_and_use_their_redis_as_broker(services: dict[str, dict[str, Any]]) -> None:
    schedulers = _schedulers(services)
    advertised = {as_environ(s["environment"])["SWITCHYARD_ADVERTISE_ADDRESS"] for s in schedulers.values()}
    redis_urls = {as_environ(s["environment"])["SWITCHYARD_REDIS_URL"] for s in schedulers.values()}
    agents = _agents(services)
    types = {}
    for name, service in agents.items():
        environ = as_environ(service["environment"])
        config = parse_args(_command(service)[1:], environ)
        assert set(config.schedulers) == advertised, (name, config.schedulers)
        # The agent refuses to start a worker whose broker is not the scheduler's Redis.
        assert {environ["CELERY_BROKER_URL"]} == redis_urls, name
        command = rewrite_worker_command(config.celery_command, config.worker_id)
        assert command.slots >= 1
        types[config.worker_type] = config
        assert set(service["depends_on"]) <= set(services), name
    assert set(types) == {"gpu", "cpu"}, types
    assert types["gpu"].simulate_gpu, "the GPU worker needs a (simulated) GPU on a machine without one"


def test_worker_slots_follow_the_pipeline_queues(services: dict[str, dict[str, Any]]) -> None:
    scheduler = next(iter(_schedulers(services).values()))
    environ = as_environ(scheduler["environment"])
    environ["SWITCHYARD_CONFIG_FILE"] = str(_bind_sources(scheduler)[environ["SWITCHYARD_CONFIG_FILE"]])
    settings = load_settings([], environ)
    # A GPU worker's main queue is GPU-intensive work's, a CPU worker's is CPU work's.
    queue_of = {"gpu": settings.class_queues[TaskClass.GPU_INTENSIVE], "cpu": settings.class_queues[TaskClass.CPU]}
    for service in _agents(services).values():
        config = parse_args(_command(service)[1:], as_environ(service["environment"]))
        slots = rewrite_worker_command(config.celery_command, config.worker_id).slots
        spec = settings.queue(queue_of[str(config.worker_type)])
        assert spec is not None and slots == spec.max_tasks_per_worker, (config.worker_id, slots, spec)


def test_prometheus_scrapes_both_schedulers_and_loads_the_alert_rules(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mounts = _bind_sources(prometheus)
    config = load_yaml(mounts["/etc/prometheus/prometheus.yml"])
    alerts_target = next(target for target, source in mounts.items() if source.name == "alerts.yml")
    assert mounts[alerts_target].parent.name == "prometheus", "the alert rules are deploy/prometheus/alerts.yml"
    assert alerts_target in config["rule_files"], config["rule_files"]
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for name, scheduler in _schedulers(services).items():
        port = as_environ(scheduler["environment"])["SWITCHYARD_METRICS_LISTEN"].rpartition(":")[2]
        assert f"{name}:{port}" in targets, (name, targets)


def test_grafana_provisions_the_dashboard_from_prometheus(services: dict[str, dict[str, Any]]) -> None:
    mounts = _bind_sources(services["grafana"])
    dashboard_target = next(target for target, source in mounts.items() if source.name == "switchyard.json")
    assert mounts[dashboard_target].parent.name == "grafana", "the dashboard is deploy/grafana/switchyard.json"
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = load_yaml(provisioning / "dashboards" / "switchyard.yaml")["providers"]
    assert any(Path(dashboard_target).parent == Path(p["options"]["path"]) for p in providers), providers
    sources = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert [urlsplit(s["url"]).hostname for s in sources] == ["prometheus"]


def test_flower_watches_the_fleet_broker(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    assert f"AS {flower['build']['target']}" in DOCKERFILE.read_text()
    redis_urls = {as_environ(s["environment"])["SWITCHYARD_REDIS_URL"] for s in _schedulers(services).values()}
    assert {flower["environment"]["CELERY_BROKER_URL"]} == redis_urls


def test_schedulers_listening_beyond_loopback_say_why_they_may(services: dict[str, dict[str, Any]]) -> None:
    # Inside its container a scheduler listens on 0.0.0.0 for the other containers; without TLS and
    # tokens it refuses to start there unless told --insecure (docs/security.md), which this demo
    # is, its ports being published on the host's 127.0.0.1 only.
    for name, service in _schedulers(services).items():
        environ = as_environ(service["environment"])
        environ["SWITCHYARD_CONFIG_FILE"] = str(_bind_sources(service)[environ["SWITCHYARD_CONFIG_FILE"]])
        settings = load_settings([], environ)
        assert not settings.listen.startswith("127."), settings.listen
        assert exposure_problem(settings, Security.from_settings(settings)) is None, name
        assert settings.insecure and not settings.tls_cert_file, name
        published = [port for port in service.get("ports", []) if isinstance(port, str)]
        assert published and all(port.startswith("127.0.0.1:") for port in published), published
