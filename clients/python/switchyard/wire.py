"""The scheduler ↔ worker wire contract in code: every rule both sides must agree on, once.

Imported by the scheduler (`scheduler/`), the agent and the Celery-side hooks (`worker_agent/`)
and the tests; it imports nothing of theirs. docs/wire-contract.md is the prose version:

* per-worker Celery queues (`sy.w.<worker_id>`) and the Switchyard message headers;
* the Redis key layout under a prefix (`Keys`), built here and nowhere else, so that a later
  move to Redis Cluster (hash tags per queue) changes one class;
* the worker-id and label-key rules;
* the lifecycle event types and fence values;
* the claim script (a `.lua` file shipped in this package) the worker runs before user code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

WORKER_QUEUE_PREFIX = "sy.w."
"""Each worker consumes exactly one Celery queue: this prefix plus its worker id."""

DEFAULT_KEY_PREFIX = "sy"
"""Prefix of every Redis key Switchyard writes (the scheduler's `key_prefix` setting)."""

WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
WORKER_ID_RULE = "1-128 letters, digits, '_', '.', '-', starting with a letter or digit"

LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")
LABEL_KEY_RULE = "1-63 letters, digits, '_', '.', '/', '-', starting with a letter or digit"

HEADER_TASK_ID = "sy_task_id"
HEADER_ATTEMPT = "sy_attempt"
HEADER_WORKER_ID = "sy_worker_id"
HEADER_PAYLOAD_REF = "sy_payload_ref"
"""`1` when args/kwargs are not in the message but stored once in the task's hash; the claim
returns them."""

DEFAULT_SCHEDULER_PORT = 50051
"""The scheduler's gRPC port unless configured otherwise; clients and agents dial it when an
address names a host only."""

LEADER_METADATA_KEY = "switchyard-leader"
"""Trailing metadata of an UNAVAILABLE answer from a scheduler that does not lead: the leader's
address (HOST:PORT), absent when no leader is known. Clients and agents follow it."""

AUTHORIZATION_METADATA_KEY = "authorization"
"""Request metadata carrying the caller's token, as `BEARER_PREFIX + token` (docs/security.md)."""
BEARER_PREFIX = "Bearer "
"""How the value of `AUTHORIZATION_METADATA_KEY` starts (RFC 6750)."""
TOKEN_ENV = "SWITCHYARD_TOKEN"
"""Environment variable the client, the CLI and the agent read their token from."""
TOKEN_FILE_ENV = "SWITCHYARD_TOKEN_FILE"
"""Environment variable naming a file that holds the token (a mounted Kubernetes Secret)."""

EVENTS_GROUP = "scheduler"
"""Consumer group the scheduler reads the lifecycle stream with."""

EVENT_STARTED = "started"
EVENT_PROGRESS = "progress"
EVENT_SUCCEEDED = "succeeded"
EVENT_FAILED = "failed"
EVENT_TYPES = (EVENT_STARTED, EVENT_PROGRESS, EVENT_SUCCEEDED, EVENT_FAILED)

PAYLOAD_FIELDS = ("args_json", "kwargs_json")
"""Fields of the task hash holding its payload, stored once at submission."""

FENCE_FIELD = "fence"
"""Field of the task hash holding which attempt may start (written by every scheduler transition)."""
FENCE_STARTED_SUFFIX = ":started"
"""A fence of `<attempt>:started` means that attempt was claimed and runs."""
FENCE_CANCELLED = "cancelled"
FENCE_REQUEUED = "requeued"

TERMINAL_STATE_NAMES = frozenset({"succeeded", "failed", "dead_lettered", "cancelled"})
"""Task states after which nothing changes any more (the scheduler's TaskState values)."""


def worker_queue(worker_id: str) -> str:
    """The Celery queue, exchange and routing key a worker consumes."""
    return WORKER_QUEUE_PREFIX + worker_id


def worker_id_problem(worker_id: str) -> str | None:
    """Why `worker_id` is not a valid worker id, or None when it is."""
    if WORKER_ID_PATTERN.match(worker_id):
        return None
    return f"worker id {worker_id!r} is invalid: use {WORKER_ID_RULE}"


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key, or None when it is."""
    if LABEL_KEY_PATTERN.match(key):
        return None
    return f"label key {key!r} is invalid: use {LABEL_KEY_RULE}"


MAX_LABEL_VALUE_CHARS = 256
"""Longest label value, a task's or a worker's."""
MAX_WORKER_LABELS = 64
"""Most labels one worker may carry. A worker's labels travel in every ListWorkers answer and
are held by the scheduler; without a bound, one agent could make that answer too big to send."""


def worker_labels_problem(labels: Mapping[str, str]) -> str | None:
    """Why a worker may not carry `labels` (too many, a key against the rule, a value too long),
    or None when it may."""
    if len(labels) > MAX_WORKER_LABELS:
        return f"{len(labels)} labels: a worker may carry at most {MAX_WORKER_LABELS}"
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem is not None:
            return problem
        if len(value) > MAX_LABEL_VALUE_CHARS:
            return f"label {key!r}: its value is {len(value)} characters, at most {MAX_LABEL_VALUE_CHARS} are allowed"
    return None


def fence_started(attempt: int | str) -> str:
    """The fence value of a claimed (running) attempt."""
    return f"{attempt}{FENCE_STARTED_SUFFIX}"


@dataclass(frozen=True)
class Keys:
    """Every Redis key Switchyard uses, under one prefix. Nothing else builds key names.

    ======================  ======  =====================================================
    key                     type    holds
    ======================  ======  =====================================================
    P:task:<id>             hash    task metadata, state, fence, and its payload (args_json,
                                    kwargs_json), stored once
    P:pending               zset    pending task ids, scored by submission sequence
    P:tasks                 zset    every kept task id, scored by submission sequence (ListTasks
                                    pages through it newest first; an entry whose task hash
                                    expired or was purged is swept away later)
    P:seq                   string  global submission sequence
    P:inflight:<worker>     set     task ids dispatched to or running on a worker
    P:events                stream  lifecycle reports from workers (group "scheduler")
    P:notify                pubsub  "started <task_id> <attempt> <worker_id>" from each claim
                                    of a watched task (task hash field watched = 1)
    P:idem:<key>            string  task id of an idempotency key (expires)
    P:paused                set     paused queue names
    P:workers               hash    worker id -> last registration (JSON), for restarts
    P:retry                 zset    retrying task ids, scored by when they are due
    P:dlq                   zset    dead-lettered task ids, scored by when
    P:stats:<queue>         hash    completed/failed/cancelled counters, wait/run sums
    P:leader                string  the leader lease "<token> <holder> <address>" (expires)
    P:leader:epoch          string  last fencing token handed out (only ever grows)
    P:instance              string  id of this state store's data set; a new one means the
                                    data was lost (Redis came back empty)
    ======================  ======  =====================================================
    """

    prefix: str = DEFAULT_KEY_PREFIX

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def inflight(self, worker_id: str) -> str:
        return f"{self.prefix}:inflight:{worker_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def stats(self, queue: str) -> str:
        return f"{self.prefix}:stats:{queue}"

    @property
    def inflight_pattern(self) -> str:
        """SCAN pattern matching every in-flight ledger."""
        return f"{self.prefix}:inflight:*"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def notify(self) -> str:
        """Pub/sub channel of claims (fire-and-forget: the task hash holds the truth)."""
        return f"{self.prefix}:notify"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def tasks(self) -> str:
        """Index of every kept task by submission sequence (written by the submit script)."""
        return f"{self.prefix}:tasks"

    @property
    def paused(self) -> str:
        return f"{self.prefix}:paused"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def retry(self) -> str:
        return f"{self.prefix}:retry"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:dlq"

    @property
    def leader(self) -> str:
        return f"{self.prefix}:leader"

    @property
    def leader_epoch(self) -> str:
        return f"{self.prefix}:leader:epoch"

    @property
    def instance(self) -> str:
        return f"{self.prefix}:instance"


def claim_script() -> str:
    """Source of the worker's fenced claim (KEYS: task hash, notify channel; ARGV: attempt, worker,
    task, ts, '1' to return the payload)."""
    return resources.files("switchyard").joinpath("lua/claim.lua").read_text(encoding="utf-8")
