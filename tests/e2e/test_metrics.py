"""Acceptance item 11: /metrics exposes queue depth, tasks by outcome, submit-to-dispatch latency,
ready workers by type and free slots, with values that match what the test set up (the names
are those of docs/metrics.md; tests/e2e/test_prometheus.py reads them through a real Prometheus)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.redis_server import wait_until
from tests.support.stack import S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _samples(stack: Stack) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the exposition, by sample name."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(stack.metrics_text()):
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return by_name


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float | None:
    for sample_labels, value in samples.get(name, []):
        if all(_norm(sample_labels.get(k, "")) == v for k, v in labels.items()):
            return value
    return None


def _norm(label: str) -> str:
    """`gpu` for `gpu`, `GPU` or `WORKER_TYPE_GPU`; other labels pass through lower-cased."""
    return label.lower().removeprefix("worker_type_").removeprefix("task_state_")


def test_metrics_reflect_queues_tasks_latency_and_workers(stack: Stack) -> None:
    stack.add_worker("gpu1", "gpu", concurrency=2)
    stack.add_worker("cpu1", "cpu", concurrency=3)
    stack.wait_workers_connected(["gpu1", "cpu1"])

    stack.pause("gpu_priority")
    held = [
        stack.submit("e2e.sleep", [0.1, f"held-{i}"], content_type="video").task_id
        for i in range(3)
    ]
    ran = [
        stack.submit("e2e.sleep", [0.1, f"ran-{i}"], content_type="text").task_id for i in range(4)
    ]
    stack.wait_all(ran, timeout=30)

    def settled() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        samples = _samples(stack)
        ok = (
            _value(samples, "switchyard_queue_depth", queue="gpu_priority") == 3
            and _value(samples, "switchyard_queue_depth", queue="cpu_standard") == 0
            and _value(samples, "switchyard_workers", type="gpu", state="ready") == 1
            and _value(samples, "switchyard_workers", type="cpu", state="ready") == 1
            and _value(samples, "switchyard_slots_free", type="gpu") == 2
            and _value(samples, "switchyard_slots_free", type="cpu") == 3
        )
        return samples if ok else None

    try:
        samples = wait_until(
            settled, timeout=15, interval=0.5, message="metrics to match the stack"
        )
    except AssertionError:
        samples = _samples(stack)
        interesting = {k: v for k, v in samples.items() if k.startswith("switchyard_")}
        raise AssertionError(
            f"metrics never matched the stack; switchyard samples: {interesting}"
        ) from None

    assert _value(samples, "switchyard_queue_depth", queue="gpu_fallback") == 0
    # The held tasks are pending (queue depth, above) and the others finished, counted by outcome.
    succeeded = _value(samples, "switchyard_tasks_finished_total", queue="cpu_standard", outcome="succeeded")
    assert succeeded is not None and succeeded >= 4, samples.get("switchyard_tasks_finished_total")
    count = _value(samples, "switchyard_submit_to_dispatch_seconds_count", queue="cpu_standard")
    assert count is not None and count >= 4, samples.get(
        "switchyard_submit_to_dispatch_seconds_count"
    )
    buckets = [
        v
        for labels, v in samples.get("switchyard_submit_to_dispatch_seconds_bucket", [])
        if labels.get("queue") == "cpu_standard"
    ]
    assert buckets and max(buckets) == count, (
        "histogram +Inf bucket differs from its count"
    )

    stack.resume("gpu_priority")
    stack.wait_all(held, S.TASK_STATE_SUCCEEDED, timeout=30)
    wait_until(
        lambda: _value(_samples(stack), "switchyard_queue_depth", queue="gpu_priority") == 0,
        timeout=15,
        interval=0.5,
        message="gpu_priority depth back to 0 after resume",
    )
