"""Prometheus metrics of the scheduler, on their own registry and HTTP port."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class _CallbackCounter(Collector):
    """A counter whose value is kept elsewhere and read when scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())


class Metrics:
    """The scheduler's metric families; the engine feeds them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            "switchyard_queue_depth", "Tasks pending in a logical queue.", ["queue"], registry=self.registry
        )
        self.queue_processing = Gauge(
            "switchyard_queue_processing", "Tasks dispatched or running, by logical queue.", ["queue"],
            registry=self.registry,
        )
        self.queue_paused = Gauge(
            "switchyard_queue_paused", "1 while a logical queue is paused.", ["queue"], registry=self.registry
        )
        self.submit_to_dispatch = Histogram(
            "switchyard_submit_to_dispatch_seconds", "Seconds from submission to hand-out to a worker.",
            ["queue"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.workers_connected = Gauge(
            "switchyard_workers_connected", "Connected workers (including draining ones), by type.",
            ["worker_type"], registry=self.registry,
        )
        self.free_slots = Gauge(
            "switchyard_free_slots", "Free task slots on workers accepting work, by worker type.",
            ["worker_type"], registry=self.registry,
        )
        self.worker_free_slots = Gauge(
            "switchyard_worker_free_slots", "Free task slots per worker.", ["worker_id"], registry=self.registry
        )
        self.gpu_memory_free = Gauge(
            "switchyard_gpu_memory_free_mb", "Free GPU memory per device from the last heartbeat.",
            ["worker_id", "gpu"], registry=self.registry,
        )
        self.gpu_utilization = Gauge(
            "switchyard_gpu_utilization_percent", "GPU utilisation per device from the last heartbeat.",
            ["worker_id", "gpu"], registry=self.registry,
        )
        self.submitted = Counter(
            "switchyard_tasks_submitted", "Tasks accepted.", ["queue"], registry=self.registry
        )
        self.finished = Counter(
            "switchyard_tasks_finished", "Tasks that reached a terminal state, by outcome "
            "(succeeded, failed, cancelled, dead_lettered).", ["queue", "outcome"], registry=self.registry,
        )
        self.workers_lost = Counter(
            "switchyard_workers_lost", "Workers declared lost.", registry=self.registry
        )
        self.requeued = Counter(
            "switchyard_tasks_requeued", "Attempts moved off a lost worker.", registry=self.registry
        )
        self.placement_rounds = Counter(
            "switchyard_placement_rounds", "Placement rounds that considered pending work and free slots.",
            registry=self.registry,
        )
        self.leader = Gauge(
            "switchyard_leader", "1 while this scheduler leads (holds the lease and serves), else 0.",
            registry=self.registry,
        )
        self.stale_reports = Counter(
            "switchyard_stale_reports", "Worker reports dropped because their attempt was not current.",
            registry=self.registry,
        )

    def count_round_trips(self, read: Callable[[], int]) -> None:
        """Expose a process-wide count of state-store round trips, read at scrape time."""
        self.registry.register(_CallbackCounter(
            "switchyard_state_round_trips", "Requests (commands, pipelines, scripts) sent to the state store.", read,
        ))

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP on a daemon thread; returns the bound port (port 0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
