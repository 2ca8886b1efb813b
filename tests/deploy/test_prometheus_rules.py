"""deploy/prometheus/alerts.yml is a valid rule file (`promtool check rules`) and every alert
fires as its unit tests in alerts_test.yml say (`promtool test rules`): on the series it is meant
for, after its `for`, with its annotations rendered, and not on the near misses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.prometheus import binary

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"
ALERT_TESTS = RULES_DIR / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], cwd=RULES_DIR, capture_output=True, text=True,
                          timeout=120, check=False)


def test_promtool_accepts_the_rule_file() -> None:
    checked = promtool("check", "rules", ALERTS.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    tested = promtool("test", "rules", ALERT_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    rules = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    fired = {check["alertname"] for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
             for check in test.get("alert_rule_test", []) if check.get("exp_alerts")}
    assert rules - fired == set(), "alerts no test sees firing"
