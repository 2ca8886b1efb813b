"""Prometheus metrics of the scheduler, on their own registry (served at /metrics by api/http_api.py).

Every family is documented in docs/metrics.md (a unit test keeps the two equal). Engine-owned
gauges (queues, workers) are exported by the leading scheduler only: a standby clears them when
its term ends (engine/gauges.py), so summing over schedulers never counts a queue twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduler.core.model import TERMINAL_STATES, TaskState

OUTCOMES = tuple(state.value for state in TaskState if state in TERMINAL_STATES)
"""Values of the `outcome` label of `switchyard_tasks_finished_total`: the terminal task states
(succeeded, failed, dead_lettered, cancelled). The `state` label of `switchyard_workers` takes
the values of `scheduler.fleet.OPERATOR_STATES`."""

WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Seconds from submission to start: milliseconds on an idle fleet, up to an hour behind a backlog."""

RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
"""Seconds a task ran: from quick CPU tasks to the hours a long GPU job may take (time limits go
up to several hours in the example configurations)."""

GRPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Prometheus' default buckets, as go-grpc-prometheus uses for grpc_server_handling_seconds."""

MIB = 1024 * 1024
"""Agents report GPU memory in MiB; the metrics are in bytes."""


class _CallbackCounter(Collector):
    """A counter whose value is kept elsewhere and read when scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())


class _CallbackGauge(Collector):
    """A 0/1 gauge read when scraped from a source set later (no sample until it is set)."""

    def __init__(self, name: str, documentation: str) -> None:
        self._name, self._documentation = name, documentation
        self.source: Callable[[], bool] | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation)
        if self.source is not None:
            family.add_metric([], 1.0 if self.source() else 0.0)
        yield family


class QueueSeries:
    """The series of one queue that every task feeds (see `Metrics.of_queue`)."""

    __slots__ = ("finished", "retries", "run", "to_dispatch", "wait")

    def __init__(self, metrics: Metrics, queue: str) -> None:
        self.wait = metrics.queue_wait.labels(queue)
        self.run = metrics.run_time.labels(queue)
        self.to_dispatch = metrics.submit_to_dispatch.labels(queue)
        self.retries = metrics.retries.labels(queue)
        self.finished = {outcome: metrics.finished.labels(queue, outcome) for outcome in OUTCOMES}


class Metrics:
    """The scheduler's metric families (every one listed in docs/metrics.md); the engine, the
    leadership loop and the gRPC interceptor (scheduler/api/grpc_metrics.py) feed them.

    Label values are bounded: queue names and worker types come from the configuration, worker
    ids from the fleet (a worker's series go when it is lost), states and outcomes from fixed
    sets, gRPC services and methods from the services this server registers. Counters are named
    without `_total` here: the client library adds it.
    """

    def __init__(self) -> None:
        self._queue_series: dict[str, QueueSeries] = {}
        # No `*_created` series beside every counter and histogram: Prometheus would store each
        # as a series of its own, doubling the series count for nothing a query here reads.
        # (A process-wide switch of the client library; the scheduler has one registry.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        # The client library's own collectors: CPU, memory and file descriptors of the process,
        # the Python version, garbage collection.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._queues()
        self._tasks()
        self._workers()
        self._scheduler()
        self._grpc()

    def _queues(self) -> None:
        registry = self.registry
        self.queue_depth = Gauge(
            "switchyard_queue_depth", "Tasks pending in a logical queue (paused or not, every priority).",
            ["queue"], registry=registry,
        )
        self.queue_processing = Gauge(
            "switchyard_queue_processing", "Tasks dispatched or running, by logical queue.", ["queue"],
            registry=registry,
        )
        self.queue_paused = Gauge(
            "switchyard_queue_paused", "1 while a logical queue is paused.", ["queue"], registry=registry
        )
        self.queue_servable_workers = Gauge(
            "switchyard_queue_servable_workers",
            "Workers that could take the queue's class of work now: accepting work, not quarantined, "
            "of a type that runs it (through the queue's fallback chain too). Task-specific needs "
            "(labels, GPU memory, registered task names) are not counted.",
            ["queue"], registry=registry,
        )

    def _tasks(self) -> None:
        registry = self.registry
        self.submitted = Counter(
            "switchyard_tasks_submitted", "Tasks accepted (a deduplicated resubmission is not counted).",
            ["queue"], registry=registry,
        )
        self.finished = Counter(
            "switchyard_tasks_finished", "Tasks that reached a terminal state, by outcome "
            "(succeeded, failed, cancelled, dead_lettered).", ["queue", "outcome"], registry=registry,
        )
        self.retries = Counter(
            "switchyard_task_retries", "Failed attempts the retry policy scheduled another attempt for.",
            ["queue"], registry=registry,
        )
        self.requeued = Counter(
            "switchyard_tasks_requeued", "Attempts moved back to pending off a lost worker, after a missed "
            "start deadline, or when a running attempt's outcome never arrived.", registry=registry,
        )
        self.queue_wait = Histogram(
            "switchyard_task_queue_wait_seconds", "Seconds from submission to the start of an attempt, "
            "observed when the attempt ends.", ["queue"], registry=registry, buckets=WAIT_BUCKETS,
        )
        self.run_time = Histogram(
            "switchyard_task_run_seconds", "Seconds an attempt ran (start to success or failure), observed "
            "when it ends.", ["queue"], registry=registry, buckets=RUN_BUCKETS,
        )
        self.submit_to_dispatch = Histogram(
            "switchyard_submit_to_dispatch_seconds", "Seconds from submission to hand-out to a worker.",
            ["queue"], registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.stale_reports = Counter(
            "switchyard_stale_reports", "Worker reports dropped because their attempt was not current.",
            registry=registry,
        )
        self.placement_rounds = Counter(
            "switchyard_placement_rounds", "Placement rounds that considered pending work and free slots.",
            registry=registry,
        )

    def _workers(self) -> None:
        registry = self.registry
        self.workers = Gauge(
            "switchyard_workers", "Workers by type and state (ready, draining, drained, quarantined, lost); "
            "every state of every type is exported, 0 included.", ["type", "state"], registry=registry,
        )
        self.slots_free = Gauge(
            "switchyard_slots_free", "Free task slots on ready workers (accepting work, not quarantined), by type.",
            ["type"], registry=registry,
        )
        self.worker_slots_free = Gauge(
            "switchyard_worker_slots_free", "Free task slots per connected worker.", ["worker_id"], registry=registry
        )
        self.gpu_memory_free = Gauge(
            "switchyard_worker_gpu_memory_free_bytes", "Free memory per GPU from the worker's last heartbeat.",
            ["worker_id", "gpu"], registry=registry,
        )
        self.gpu_memory_total = Gauge(
            "switchyard_worker_gpu_memory_total_bytes", "Total memory per GPU, as the worker reported it.",
            ["worker_id", "gpu"], registry=registry,
        )
        self.gpu_utilization = Gauge(
            "switchyard_worker_gpu_utilization_ratio", "GPU utilisation (0 to 1) from the worker's last heartbeat.",
            ["worker_id", "gpu"], registry=registry,
        )
        self.workers_lost = Counter(
            "switchyard_workers_lost", "Workers declared lost.", registry=registry
        )

    def _scheduler(self) -> None:
        self.leader = Gauge(
            "switchyard_leader", "1 while this scheduler leads (holds the lease and serves), else 0.",
            registry=self.registry,
        )
        self.state_store_up = _CallbackGauge(
            "switchyard_state_store_up", "1 while this scheduler's last attempt to reach the state store "
            "(Redis) succeeded, 0 during an outage.",
        )
        self.registry.register(self.state_store_up)

    def _grpc(self) -> None:
        # Names, labels and meaning of go-grpc-prometheus (and py-grpc-prometheus), so dashboards
        # and alerts written for those work unchanged.
        registry = self.registry
        method = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter(
            "grpc_server_started", "Total number of RPCs started on the server.", method, registry=registry
        )
        self.grpc_handled = Counter(
            "grpc_server_handled", "Total number of RPCs completed on the server, regardless of success or failure.",
            [*method, "grpc_code"], registry=registry,
        )
        self.grpc_handling_seconds = Histogram(
            "grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.", method, registry=registry, buckets=GRPC_BUCKETS,
        )
        self.grpc_msg_received = Counter(
            "grpc_server_msg_received", "Total number of RPC stream messages received on the server.", method,
            registry=registry,
        )
        self.grpc_msg_sent = Counter(
            "grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.", method,
            registry=registry,
        )

    def declare_queues(self, queues: Iterable[str]) -> None:
        """Create every per-queue series at 0, so `rate()` and `increase()` see a queue's first
        submission, failure or dead letter (a series born at 1 shows no increase)."""
        for queue in queues:
            self.submitted.labels(queue)
            self.retries.labels(queue)
            self.queue_wait.labels(queue)
            self.run_time.labels(queue)
            self.submit_to_dispatch.labels(queue)
            for outcome in OUTCOMES:
                self.finished.labels(queue, outcome)

    def attempt_ended(self, queue: str, state: str, waited_seconds: float, ran_seconds: float) -> None:
        """An attempt ended (a success or failure report the store applied) leaving its task in
        `state`: observe its wait and run time, and count the retry or the task's outcome."""
        series = self.of_queue(queue)
        series.wait.observe(waited_seconds)
        series.run.observe(ran_seconds)
        if state == "retrying":
            series.retries.inc()
        elif state in OUTCOMES:
            series.finished[state].inc()

    def of_queue(self, queue: str) -> QueueSeries:
        """The queue's per-task series, looked up once (a `labels()` call costs about as much as
        the observation itself, and these are fed for every task)."""
        series = self._queue_series.get(queue)
        if series is None:
            series = self._queue_series[queue] = QueueSeries(self, queue)
        return series

    def count_round_trips(self, read: Callable[[], int]) -> None:
        """Expose a process-wide count of state-store round trips, read at scrape time."""
        self.registry.register(_CallbackCounter(
            "switchyard_state_round_trips", "Requests (commands, pipelines, scripts) sent to the state store.", read,
        ))

    def count_submit_replica_timeouts(self, read: Callable[[], int]) -> None:
        """Expose how many submissions were acknowledged before `submit_wait_replicas` replicas
        had them (the WAIT ran out), read at scrape time."""
        self.registry.register(_CallbackCounter(
            "switchyard_submit_replica_timeouts",
            "Submissions acknowledged before the replicas submit_wait_replicas asks for had them.", read,
        ))
