"""A real Prometheus scrapes a live scheduler every second while tasks run: its PromQL answers
(queue depth, tasks finished by outcome, queue-wait histogram quantiles, workers by state, gRPC
and process metrics) match what the test did; the dead-letter alert of deploy/prometheus/alerts.yml
fires from the real series; and every query of the Grafana dashboard and the alert rules runs.

Prometheus comes from the Debian package `prometheus` (`make deps-prometheus`); where it is not
installed the test is skipped, saying how to install it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.prometheus import PrometheusServer, Vector, binary, close_to, value_of
from tests.support.stack import S, Stack, pb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "switchyard.json"
CPU = "cpu_standard"
HELD = "gpu_priority"


@pytest.fixture()
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[PrometheusServer]:
    binary("prometheus")  # skips, saying how to install it, where it is missing
    server = PrometheusServer(tmp_path, [f"127.0.0.1:{stack.metrics_port}"], rule_files=[ALERTS])
    try:
        yield server.start()
    except AssertionError:
        raise AssertionError(f"prometheus failed: {server.log_tail()}") from None
    finally:
        server.stop()


def one(expected: float) -> Callable[[Vector], bool]:
    """Accept an answer of exactly one series with this value."""
    return lambda answer: len(answer) == 1 and close_to(answer[0][1], expected)


def by(label: str, answer: Vector) -> dict[str, float]:
    return {series.get(label, ""): value for series, value in answer}


@pytest.mark.scheduler_env(SWITCHYARD_DEFAULT_RETRY_POLICY="none")
def test_prometheus_answers_match_what_ran(stack: Stack, prometheus: PrometheusServer) -> None:
    prom = prometheus
    prom.wait_query('up{job="switchyard"}', one(1), what="the scheduler scraped")
    prom.wait_query("sum(switchyard_leader)", one(1), what="one leading scheduler")
    # The outcome counters exist at 0 before anything ends, so increase() sees the first one.
    prom.wait_query(f'switchyard_tasks_finished_total{{queue="{CPU}", outcome="dead_lettered"}}', one(0))

    stack.add_worker("cpu1", "cpu", concurrency=3)
    stack.wait_workers_connected(["cpu1"])
    stack.pause(HELD)
    held = [stack.submit("e2e.sleep", [0.1, f"held-{i}"], content_type="video").task_id for i in range(4)]
    ok = [stack.submit("e2e.sleep", [0.2, f"ok-{i}"], content_type="text").task_id for i in range(4)]
    failed = [stack.submit("e2e.fail", [f"boom-{i}"], content_type="text").task_id for i in range(2)]
    # The built-in "default" policy retries twice, then dead-letters.
    doomed = stack.stub.SubmitTask(pb.SubmitTaskRequest(
        task_name="e2e.fail", args_json='["doomed"]', kwargs_json="{}", content_type="text",
        retry_policy="default"), timeout=30).task_id
    stack.cancel(held[0])
    stack.wait_all(ok, S.TASK_STATE_SUCCEEDED, timeout=60)
    stack.wait_all(failed, S.TASK_STATE_FAILED, timeout=60)
    stack.wait_all([doomed], S.TASK_STATE_DEAD_LETTERED, timeout=60)

    prom.wait_query(f'switchyard_queue_depth{{queue="{HELD}"}}', one(3), what="three tasks held in the paused queue")
    outcomes = prom.wait_query(
        f'sum by (outcome) (switchyard_tasks_finished_total{{queue="{CPU}"}})',
        lambda answer: by("outcome", answer) == {"succeeded": 4, "failed": 2, "dead_lettered": 1, "cancelled": 0},
        what="tasks finished by outcome")
    assert len(outcomes) == 4
    prom.wait_query(f'switchyard_tasks_finished_total{{queue="{HELD}", outcome="cancelled"}}', one(1))
    prom.wait_query(f'switchyard_task_retries_total{{queue="{CPU}"}}', one(2))
    # Every ended attempt was timed: 4 + 2 + the dead-lettered task's 3.
    prom.wait_query(f'switchyard_task_queue_wait_seconds_count{{queue="{CPU}"}}', one(9))
    prom.wait_query(f'switchyard_task_run_seconds_count{{queue="{CPU}"}}', one(9))

    median = prom.query(
        f'histogram_quantile(0.5, sum by (le) (switchyard_task_queue_wait_seconds_bucket{{queue="{CPU}"}}))')
    assert len(median) == 1 and 0 <= median[0][1] <= 10, median  # waits are short on an idle worker
    p95 = prom.wait_query(
        "histogram_quantile(0.95, sum by (queue, le) (rate(switchyard_task_queue_wait_seconds_bucket[1m])))",
        lambda answer: (value := value_of(answer, queue=CPU)) is not None and not math.isnan(value),
        what="a 95th percentile of the queue wait over the last minute")
    assert 0 <= (value_of(p95, queue=CPU) or 0) <= 30, p95
    run_p50 = prom.query(
        f'histogram_quantile(0.5, sum by (le) (switchyard_task_run_seconds_bucket{{queue="{CPU}"}}))')
    assert len(run_p50) == 1 and 0 <= run_p50[0][1] <= 10, run_p50

    workers = prom.query("switchyard_workers")
    assert len(workers) == 15, "every state of every worker type, 0 included"
    assert value_of(workers, type="cpu", state="ready") == 1.0
    assert sum(value for _labels, value in workers) == 1.0
    prom.wait_query('switchyard_worker_slots_free{worker_id="cpu1"}', one(3))
    prom.wait_query("switchyard_state_store_up", one(1))

    submits = prom.wait_query(
        'sum(grpc_server_handled_total{grpc_service="switchyard.v1.Scheduler", grpc_method="SubmitTask", '
        'grpc_code="OK", grpc_type="unary"})', lambda answer: bool(answer) and answer[0][1] >= 11)
    assert submits[0][1] == 11
    prom.wait_query('grpc_server_started_total{grpc_method="Connect", grpc_type="bidi_stream"}',
                    lambda answer: bool(answer) and answer[0][1] >= 1, what="the agent's stream counted as started")
    assert prom.query("process_resident_memory_bytes")[0][1] > 0
    assert prom.query("python_info")

    # The alert rule, evaluated by this Prometheus every second over the real series.
    prom.wait_query(
        'ALERTS{alertname="SwitchyardDeadLettersGrowing", alertstate="firing"}',
        lambda answer: [labels.get("queue") for labels, _value in answer] == [CPU],
        what="the dead-letter alert firing for cpu_standard")


def test_every_dashboard_and_alert_query_runs_on_prometheus(stack: Stack, prometheus: PrometheusServer) -> None:
    prometheus.wait_query('up{job="switchyard"}', one(1), what="the scheduler scraped")
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    variables = {"$__rate_interval": "1m", "$queue": ".*", "$worker": ".*", "$job": ".*"}
    for expr in queries:
        for name, value in variables.items():
            expr = expr.replace(name, value)
        prometheus.query(expr)  # raises with Prometheus' parse or execution error
    depth = prometheus.query('sum by (queue) (switchyard_queue_depth{queue=~".*"})')
    assert set(by("queue", depth)) == {"gpu_priority", "gpu_fallback", "cpu_standard"}
    assert prometheus.query('{job="switchyard", __name__=~".+_created"}') == [], "no *_created series"
