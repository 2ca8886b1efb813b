"""The metrics' documentation, dashboard and alerts cannot drift from the registry: docs/metrics.md
lists exactly the metrics the scheduler exports (with their types and labels), and every PromQL
expression in deploy/grafana/switchyard.json and deploy/prometheus/alerts.yml names only
metrics that exist."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "switchyard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "bool", "offset", "inf", "nan"}


def exported() -> dict[str, tuple[str, frozenset[str]]]:
    """Every metric a running scheduler exports: exposed name -> (type, label names)."""
    metrics = Metrics()
    # The collectors the wiring (scheduler/main.py) adds read process-wide figures at scrape time.
    for name in dir(metrics):
        if name.startswith("count_"):
            getattr(metrics, name)(lambda: 0)
    metrics.state_store_up.source = lambda: True
    metrics.declare_queues(["q"])
    metrics.workers.labels("cpu", "ready")
    for gauge in (metrics.queue_depth, metrics.queue_processing, metrics.queue_paused,
                  metrics.queue_servable_workers):
        gauge.labels("q")
    metrics.slots_free.labels("cpu")
    metrics.worker_slots_free.labels("w")
    for gauge in (metrics.gpu_memory_free, metrics.gpu_memory_total, metrics.gpu_utilization):
        gauge.labels("w", "0")
    labels = ("unary", "s", "m")
    for counter in (metrics.grpc_started, metrics.grpc_msg_received, metrics.grpc_msg_sent):
        counter.labels(*labels)
    metrics.grpc_handled.labels(*labels, "OK")
    metrics.grpc_handling_seconds.labels(*labels)
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for family in metrics.registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        label_names = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
        found[name] = (family.type, frozenset(label_names))
    return found


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """Rows of the tables in docs/metrics.md: | `name` | type | `label`, ... | meaning |."""
    rows: dict[str, tuple[str, frozenset[str]]] = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"`[a-z_:][a-z0-9_:]*`", cells[0]):
            continue
        name = cells[0].strip("`")
        assert name not in rows, f"{name} is documented twice"
        rows[name] = (cells[1], frozenset(re.findall(r"`([a-z_]+)`", cells[2])))
    return rows


def test_docs_list_exactly_the_exported_metrics_with_their_types_and_labels() -> None:
    docs, registry = documented(), exported()
    if not Path("/proc/self/stat").exists():  # the process collector reads /proc
        docs = {name: row for name, row in docs.items() if not name.startswith("process_")}
    assert sorted(registry.keys() - docs.keys()) == [], "exported but not in docs/metrics.md"
    assert sorted(docs.keys() - registry.keys()) == [], "in docs/metrics.md but not exported"
    wrong = {name: (docs[name], registry[name]) for name in docs if docs[name] != registry[name]}
    assert wrong == {}, "documented (type, labels) differ from the registry's"


def test_counters_end_in_total_and_units_are_base_units() -> None:
    for name, (kind, _labels) in exported().items():
        assert (kind == "counter") == name.endswith("_total"), name
        assert not re.search(r"_(mb|mib|percent|ms|milliseconds)(_|$)", name), name


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, grouping clauses, durations,
    strings and function names taken out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"(?<![\w:])\d[\d.e+]*(ms|[smhdwy])?", "", text)  # numbers and durations (5m)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word, rest = match.group(), text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def known(name: str, registry: dict[str, tuple[str, frozenset[str]]]) -> bool:
    if name in registry:
        return True
    for suffix in HISTOGRAM_SERIES:
        base = name.removesuffix(suffix)
        if base != name and registry.get(base, ("", frozenset()))[0] == "histogram":
            return True
    return False


def test_metric_names_are_read_out_of_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (queue, le) (rate(a_bucket{queue=~"$queue"}[$__rate_interval])))'
            ' > 300 and on (queue) b == 0 unless c offset 5m')
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(METRIC, LABEL): the metric is what must exist.
            metric = re.fullmatch(r"label_values\((\w+)\s*,\s*\w+\)", variable["definition"])
            assert metric, f"variable {variable['name']}: expected label_values(metric, label)"
            yield f"variable {variable['name']}", metric.group(1)


def test_the_dashboard_is_a_grafana_dashboard_over_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "switchyard" and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} queries nothing"
    registry = exported()
    unknown = {(where, name) for where, expr in dashboard_exprs() for name in metric_names(expr)
               if not known(name, registry)}
    assert unknown == set()
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("queue depth", "queue wait", "run time", "outcomes", "workers by state", "gpu memory",
                  "gpu utilisation", "leader", "grpc errors"):
        assert topic in titles, f"the dashboard has no panel on {topic}"


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_reads_existing_metrics_and_carries_a_runbook(rule: dict[str, Any]) -> None:
    registry = exported()
    names = metric_names(str(rule["expr"]))
    assert names and all(known(name, registry) for name in names), names
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    assert {"summary", "description", "runbook"} <= annotations.keys()
    assert len(annotations["runbook"]) > 100, "a runbook says what to check and how to fix it"
    assert isinstance(rule.get("labels"), dict) and rule["labels"]["severity"] in ("critical", "warning")


def test_the_alerts_cover_what_operators_asked_for() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {"SwitchyardNoLeader", "SwitchyardSchedulerMetricsAbsent", "SwitchyardStateStoreUnreachable",
                     "SwitchyardQueueWaitHigh", "SwitchyardDeadLettersGrowing", "SwitchyardWorkerLost",
                     "SwitchyardGpuWorkerQuarantined", "SwitchyardQueueUnservable"}


def test_the_queue_level_filters_are_registered_placement_filters() -> None:
    from scheduler.core.placement.filters import FILTER_NAMES
    from scheduler.engine.gauges import QUEUE_LEVEL_FILTERS

    assert set(QUEUE_LEVEL_FILTERS) <= set(FILTER_NAMES)
