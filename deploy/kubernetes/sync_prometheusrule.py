"""Write deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/alerts.yml.

    .venv/bin/python deploy/kubernetes/sync_prometheusrule.py

The alert rules live in one file, deploy/prometheus/alerts.yml (what Prometheus loads, what
`promtool` checks and tests). The Prometheus Operator wants the same groups inside a
PrometheusRule object, and kustomize cannot build one from a rule file, so this script writes
it; tests/deploy/test_kubernetes.py fails while the two differ. Run it after editing the rules.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1]
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus/alerts.yml by deploy/kubernetes/sync_prometheusrule.py: edit
# the rules there and run the script (tests/deploy/test_kubernetes.py fails while they differ).
# The Prometheus Operator loads these groups into every Prometheus whose ruleSelector matches.
"""


class _BlockStrings(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, runbook text) as `|` blocks, as they read in alerts.yml."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStrings.add_representer(str, _string)


def rule_groups(alerts_path: Path = ALERTS) -> list[dict[str, Any]]:
    """The `groups` of a Prometheus rule file."""
    document = yaml.safe_load(alerts_path.read_text())
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError(f"{alerts_path}: expected a Prometheus rule file with a `groups:` list")
    groups: list[dict[str, Any]] = document["groups"]
    return groups


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The PrometheusRule object holding `groups`."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "switchyard",
            "labels": {"app.kubernetes.io/name": "switchyard", "app.kubernetes.io/component": "scheduler"},
        },
        "spec": {"groups": groups},
    }


def render(alerts_path: Path = ALERTS) -> str:
    """The text of prometheusrule.yaml for the rules in `alerts_path`."""
    body = yaml.dump(prometheus_rule(rule_groups(alerts_path)), Dumper=_BlockStrings,
                     sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def main() -> int:
    """Rewrite prometheusrule.yaml; exit 1 with one line when alerts.yml cannot be read."""
    try:
        text = render()
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"sync_prometheusrule: error: {exc}", file=sys.stderr)
        return 1
    PROMETHEUS_RULE.write_text(text)
    print(f"wrote {PROMETHEUS_RULE.relative_to(DEPLOY.parent)} from {ALERTS.relative_to(DEPLOY.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
