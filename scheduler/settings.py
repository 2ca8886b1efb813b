"""The scheduler's typed settings: one frozen object per process, built once at start-up.

Only the shape and the defaults live here; scheduler/config/ reads flags, environment and the
YAML file into it (precedence flag > `SWITCHYARD_*` environment variable > file > default) and
validates them. Every module may import this one; it imports nothing but core types.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.core.classify import DEFAULT_CONTENT_CLASSES, ClassificationRules
from scheduler.core.model import QueueSpec, TaskClass
from scheduler.core.ordering import AgingPolicy
from scheduler.core.placement import PlacementPolicy
from scheduler.core.ratelimit import RateLimit
from scheduler.core.retry import BUILTIN_RETRY_POLICIES, DEFAULT_RETRY, RetryPolicy
from scheduler.core.routing import ClassificationRule, FallbackChain

DEFAULT_QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec("gpu_priority", TaskClass.GPU_INTENSIVE, default_priority=8),
    QueueSpec("gpu_fallback", TaskClass.MIXED, default_priority=6),
    QueueSpec("cpu_standard", TaskClass.CPU, default_priority=5),
)
"""The queues of a scheduler started without a config file (or one without `queues`)."""

DEFAULT_CLASS_QUEUES: Mapping[TaskClass, str] = {
    TaskClass.GPU_INTENSIVE: "gpu_priority",
    TaskClass.MIXED: "gpu_fallback",
    TaskClass.CPU: "cpu_standard",
    TaskClass.IO: "cpu_standard",
}
"""Queue of each task class unless `class_queues` says otherwise (all among DEFAULT_QUEUES)."""


EVENT_LOOPS = ("auto", "uvloop", "asyncio")
"""What the `event_loop` setting takes."""
SUBMIT_WAIT_MAX_SECONDS = 5.0
"""Longest submit_wait_timeout_seconds: a waiting submission holds a Redis connection (whose
reply timeout is 15 s) and its callers' group commit."""


@dataclass(frozen=True)
class Settings:
    """Everything the scheduler process is configured with."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding the scheduler's durable state (tasks, ledgers, lifecycle stream). It is also
    the Celery broker: a hand-out's commit and its Celery message are written by one script.
    `redis://`, `rediss://`, `unix://`, or `redis+sentinel://HOST:PORT,.../MASTER_NAME[/DB]` for
    a Sentinel-managed Redis (`switchyard.redis_urls`)."""
    submit_wait_replicas: int = 0
    """Replicas an accepted submission waits for (Redis WAIT) before it is acknowledged, so a
    failover to one of them keeps it; 0 does not wait. 1 is the choice with one replica or more."""
    submit_wait_timeout_seconds: float = 1.0
    """How long a submission waits for those replicas (at most SUBMIT_WAIT_MAX_SECONDS); after
    it, it is acknowledged all the same, counted and logged as not yet replicated."""
    listen: str = "127.0.0.1:50051"
    """gRPC address (host:port) for the Scheduler and AgentGateway services. A non-loopback
    address needs TLS and authentication, or `insecure`."""
    metrics_listen: str = "127.0.0.1:9108"
    """HTTP address (host:port) for Prometheus /metrics; empty disables it."""
    advertise_address: str = ""
    """HOST:PORT other schedulers, clients and agents reach this one at (a standby names the
    leader by it); empty means the listen address with the bound port, the host name standing in
    for a wildcard host."""
    auth_tokens_file: str = ""
    """YAML file listing the tokens callers present (`authorization: Bearer <token>`) by name, role
    (client, admin, agent) and SHA-256 digest; empty turns tokens off. Re-read when it changes
    (scheduler/api/auth.py, docs/security.md)."""
    tls_cert_file: str = ""
    """PEM certificate chain the gRPC port (and the HTTP listener) present; with tls_key_file it
    turns TLS on. Re-read when it changes, so a rotated certificate needs no restart."""
    tls_key_file: str = ""
    """PEM private key of tls_cert_file."""
    tls_client_ca_file: str = ""
    """PEM certificate authorities client certificates must chain to; set, every gRPC caller must
    present one (mTLS), and an agent without a token connects only as its certificate's CN."""
    insecure: bool = False
    """Allow listening on a non-loopback address without TLS and authentication (a warning is
    logged at start). Without it such a scheduler refuses to start."""
    reflection: bool = True
    """Serve gRPC server reflection (grpcurl); with tokens on it needs a valid token of any role."""
    keda_scaler_open: bool = False
    """With tokens on, let KEDA's external scaler service answer callers with neither a token nor a
    client certificate (KEDA sends no token; the service only tells demand counts). Prefer mTLS."""
    leader_lease_seconds: float = 3.0
    """Time-to-live of the leader lease: a standby takes over about this long after the leader
    died (renewed every lease/3 seconds; a leader that cannot renew in time stops writing)."""
    key_prefix: str = "sy"
    """Prefix of every Redis key the scheduler owns."""
    heartbeat_interval_seconds: float = 2.0
    """How often agents send heartbeats (told to them in the welcome)."""
    heartbeat_timeout_seconds: float = 10.0
    """A worker whose heartbeats stop for this long is declared lost."""
    lost_grace_seconds: float = 15.0
    """A worker whose stream dropped and did not come back within this is declared lost."""
    start_deadline_seconds: float = 60.0
    """A task handed out to a worker that has a free slot for it, but not started there within
    this long, goes back to pending (the worker's slot is taken back; its Celery message, if the
    worker ever consumes it, is refused by the fenced claim)."""
    start_deadline_returns: int = 3
    """Times a task may go back to pending for missing its start deadline; the next miss ends it
    failed, with a reason (0: the first miss fails it)."""
    unreported_running_seconds: float = 30.0
    """A task running on a worker whose agent, heartbeating all the while, has left it out of its
    running attempts for this long, and whose outcome has not arrived, goes back to pending under
    a new attempt: its outcome report was lost (a Redis failover within the replication lag).
    Agents older than this field send no running attempts; their tasks are never taken back so."""
    max_payload_bytes: int = 16 * 1024 * 1024
    """Largest args_json + kwargs_json accepted; larger gets RESOURCE_EXHAUSTED."""
    inline_payload_bytes: int = 256 * 1024
    """Payloads up to this size travel inside the Celery message; larger ones by reference."""
    commit_linger_seconds: float = 0.005
    """Longest a submission's commit waits for more submissions to share its round trip, and
    only while callers have lately had several outstanding at once and submissions arrive at
    least 4 per linger on average (a lone caller, or a lighter load, never waits):
    under a flood of SubmitTask calls it turns one script call per call into one per several
    (scheduler/engine/admission.py). 0 turns it off."""
    dispatch_prefetch: int = 0
    """Tasks a worker may be handed beyond its free slots (hides the hand-out round trip)."""
    state_redis_url_for_workers: str = ""
    """State Redis URL told to agents; empty means redis_url (set it when workers see Redis at another address)."""
    log_level: str = "INFO"
    """Python logging level."""
    event_loop: str = "auto"
    """The asyncio event loop: "uvloop" (libuv's: less CPU per call), "asyncio" (the standard
    library's), or "auto" (uvloop where it is installed, which it is on Linux and macOS)."""
    config_file: str = ""
    """YAML file with queues and settings."""
    queues: tuple[QueueSpec, ...] = DEFAULT_QUEUES
    """Logical queues, in the order ListQueues shows them."""
    class_queues: Mapping[TaskClass, str] = field(
        default_factory=lambda: dict(DEFAULT_CLASS_QUEUES)
    )
    """Queue each task class goes to unless the submitter names one."""
    content_classes: Mapping[str, TaskClass] = field(
        default_factory=lambda: dict(DEFAULT_CONTENT_CLASSES)
    )
    """Content type -> task class."""
    rules: tuple[ClassificationRule, ...] = ()
    """Classification rules, first match wins; an explicit request field still wins over a rule."""
    retry_policies: Mapping[str, RetryPolicy] = field(
        default_factory=lambda: dict(BUILTIN_RETRY_POLICIES)
    )
    """Named retry policies; the built-in "none" (no retry, end failed) and "default" always exist."""
    default_retry_policy: str = DEFAULT_RETRY.name
    """Policy of tasks whose submission, rule and queue name none: out of the box "default"
    (retries with exponential backoff and jitter, then dead-letters); "none" opts out."""
    fallback_chains: tuple[FallbackChain, ...] = ()
    """Queues a waiting task may spill into (gpu=required work never leaves GPU workers)."""
    aging: AgingPolicy = field(default_factory=AgingPolicy)
    """Priority aging."""
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)
    """Filtering and scoring of workers."""
    rate_limits: tuple[RateLimit, ...] = ()
    """Hand-out rate limits per task-name glob."""
    result_ttl_seconds: float = 7 * 86400.0
    """Finished tasks (and their payloads) are purged this long after they end."""
    dead_letter_max: int = 10_000
    """Most dead letters kept; the oldest go first."""
    dead_letter_ttl_seconds: float = 7 * 86400.0
    """Dead letters are purged this long after they were dead-lettered."""
    idempotency_ttl_seconds: float = 86400.0
    """How long an idempotency key keeps returning its task."""

    @property
    def worker_state_redis_url(self) -> str:
        """The state Redis URL agents are told to use (their view of redis_url)."""
        return self.state_redis_url_for_workers or self.redis_url

    def classification_rules(self) -> ClassificationRules:
        """The part of the settings that classification reads, as the core's own type."""
        return ClassificationRules(
            queues=self.queues,
            class_queues=self.class_queues,
            content_classes=self.content_classes,
            rules=self.rules,
            default_retry_policy=self.default_retry_policy,
        )

    def queue(self, name: str) -> QueueSpec | None:
        """The configured queue called `name`, or None when there is none."""
        return self._queues_by_name.get(name)

    @functools.cached_property
    def _queues_by_name(self) -> dict[str, QueueSpec]:
        # Frozen, so computed once (cached_property writes the instance __dict__ directly);
        # the first spec of a name wins, as a scan would find it.
        by_name: dict[str, QueueSpec] = {}
        for spec in self.queues:
            by_name.setdefault(spec.name, spec)
        return by_name
