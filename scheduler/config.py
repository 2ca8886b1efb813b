"""Typed settings of the scheduler process, loaded once at start-up.

Precedence: command-line flag > `SWITCHYARD_*` environment variable > `--config` file > default.
The config file (YAML) may also define the logical queues; see docs/configuration.md.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from scheduler.core.classify import DEFAULT_CONTENT_CLASSES, ClassificationRules
from scheduler.core.model import MAX_PRIORITY, MIN_PRIORITY, QueueSpec, TaskClass
from scheduler.core.policy import (
    NO_RETRY,
    AgingPolicy,
    ClassificationRule,
    FallbackChain,
    PlacementPolicy,
    RateLimit,
    RetryPolicy,
)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the bad setting."""


DEFAULT_QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec("gpu_priority", TaskClass.GPU_INTENSIVE, default_priority=8),
    QueueSpec("gpu_fallback", TaskClass.MIXED, default_priority=6),
    QueueSpec("cpu_standard", TaskClass.CPU, default_priority=5),
)

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


@dataclass(frozen=True)
class Settings:
    """Everything the scheduler process is configured with."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding the scheduler's durable state (tasks, ledgers, lifecycle stream)."""
    broker_url: str = ""
    """Celery broker the tasks are published to; empty means the same as redis_url."""
    listen: str = "127.0.0.1:50051"
    """gRPC address (host:port) for the Scheduler and AgentGateway services."""
    metrics_listen: str = "127.0.0.1:9108"
    """HTTP address (host:port) for Prometheus /metrics; empty disables it."""
    key_prefix: str = "sy"
    """Prefix of every Redis key the scheduler owns."""
    heartbeat_interval_seconds: float = 2.0
    """How often agents send heartbeats (told to them in the welcome)."""
    heartbeat_timeout_seconds: float = 10.0
    """A worker whose heartbeats stop for this long is declared lost."""
    lost_grace_seconds: float = 15.0
    """A worker whose stream dropped and did not come back within this is declared lost."""
    max_payload_bytes: int = 16 * 1024 * 1024
    """Largest args_json + kwargs_json accepted; larger gets RESOURCE_EXHAUSTED."""
    inline_payload_bytes: int = 256 * 1024
    """Payloads up to this size travel inside the Celery message; larger ones by reference."""
    dispatch_prefetch: int = 0
    """Tasks a worker may be handed beyond its free slots (hides the hand-out round trip)."""
    state_redis_url_for_workers: str = ""
    """State Redis URL told to agents; empty means redis_url (set it when workers see Redis at another address)."""
    log_level: str = "INFO"
    """Python logging level."""
    config_file: str = ""
    """YAML file with queues and settings."""
    queues: tuple[QueueSpec, ...] = DEFAULT_QUEUES
    """Logical queues, in the order ListQueues shows them."""
    class_queues: Mapping[TaskClass, str] = field(
        default_factory=lambda: {
            TaskClass.GPU_INTENSIVE: "gpu_priority",
            TaskClass.MIXED: "gpu_fallback",
            TaskClass.CPU: "cpu_standard",
            TaskClass.IO: "cpu_standard",
        }
    )
    """Queue each task class goes to unless the submitter names one."""
    content_classes: Mapping[str, TaskClass] = field(
        default_factory=lambda: dict(DEFAULT_CONTENT_CLASSES)
    )
    """Content type -> task class."""
    rules: tuple[ClassificationRule, ...] = ()
    """Classification rules, first match wins; an explicit request field still wins over a rule."""
    retry_policies: Mapping[str, RetryPolicy] = field(default_factory=lambda: {"none": NO_RETRY})
    """Named retry policies ("none" always exists: no retry, end failed)."""
    default_retry_policy: str = "none"
    """Policy of tasks whose submission, rule and queue name none."""
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
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def worker_state_redis_url(self) -> str:
        return self.state_redis_url_for_workers or self.redis_url

    def classification_rules(self) -> ClassificationRules:
        return ClassificationRules(
            queues=self.queues, class_queues=self.class_queues, content_classes=self.content_classes,
            rules=self.rules, default_retry_policy=self.default_retry_policy,
        )

    def queue(self, name: str) -> QueueSpec | None:
        for spec in self.queues:
            if spec.name == name:
                return spec
        return None


_STRUCTURED = ("queues", "class_queues", "content_classes", "rules", "retry_policies",
               "fallback_chains", "aging", "placement", "rate_limits")
_SCALARS = {f.name: f for f in fields(Settings) if f.name not in _STRUCTURED}


def _coerce(name: str, raw: Any) -> Any:
    kind = type(getattr(Settings(), name))
    try:
        if kind is float:
            value: Any = float(raw)
            if value <= 0:
                raise ValueError("must be positive")
            return value
        if kind is int:
            value = int(raw)
            if value < 0:
                raise ValueError("must not be negative")
            return value
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}={raw!r}: {exc}") from None


def _parse_queues(raw: Any) -> tuple[QueueSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("queues: must be a non-empty list of {name, class, default_priority}")
    specs: list[QueueSpec] = []
    for index, item in enumerate(raw):
        where = f"queues[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a mapping")
        unknown = set(item) - {"name", "class", "default_priority", "paused"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        name = str(item.get("name", ""))
        if not _QUEUE_NAME.match(name):
            raise ConfigError(f"{where}.name: {name!r} is not a valid queue name")
        try:
            task_class = TaskClass(str(item.get("class", "cpu")))
        except ValueError:
            raise ConfigError(
                f"{where}.class: {item.get('class')!r}; use one of {[c.value for c in TaskClass]}"
            ) from None
        priority = item.get("default_priority", 5)
        if not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ConfigError(f"{where}.default_priority: {priority!r} must be an integer 1-10")
        specs.append(QueueSpec(name, task_class, priority, bool(item.get("paused", False))))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError("queues: names must be unique")
    return tuple(specs)


def _file_overrides(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    overrides: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "queues":
            overrides["queues"] = _parse_queues(raw)
        elif key == "class_queues":
            if not isinstance(raw, dict):
                raise ConfigError("class_queues: must map a task class to a queue name")
            mapping: dict[TaskClass, str] = {}
            for cls_name, queue in raw.items():
                try:
                    mapping[TaskClass(cls_name)] = str(queue)
                except ValueError:
                    raise ConfigError(f"class_queues.{cls_name}: unknown task class") from None
            overrides["class_queues"] = mapping
        elif key == "content_types":
            if not isinstance(raw, dict):
                raise ConfigError("content_types: must map a content type to a task class")
            classes = dict(DEFAULT_CONTENT_CLASSES)
            for content, cls_name in raw.items():
                try:
                    classes[str(content).lower()] = TaskClass(cls_name)
                except ValueError:
                    raise ConfigError(f"content_types.{content}: unknown task class {cls_name!r}") from None
            overrides["content_classes"] = classes
        elif key in _SCALARS:
            overrides[key] = _coerce(key, raw)
        else:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchyard-scheduler",
        description="Switchyard scheduler: gRPC API, agent gateway and Prometheus metrics.",
    )
    for name in _SCALARS:
        if name == "config_file":
            parser.add_argument("--config", dest="config_file", metavar="FILE", help="YAML config file")
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, metavar=name.split("_")[-1].upper(),
            help=f"env SWITCHYARD_{name.upper()}",
        )
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from flags, environment and the config file; raise ConfigError on bad values."""
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.get("config_file") or environ.get("SWITCHYARD_CONFIG_FILE", "")
    if config_file:
        values.update(_file_overrides(config_file))
        values["config_file"] = config_file
    for name in _SCALARS:
        env_value = environ.get(f"SWITCHYARD_{name.upper()}")
        if env_value not in (None, ""):
            values[name] = _coerce(name, env_value)
        if args.get(name) not in (None, ""):
            values[name] = _coerce(name, args[name])
    settings = Settings(**values)
    known = {q.name for q in settings.queues}
    for task_class in TaskClass:
        queue = settings.class_queues.get(task_class)
        if queue is None or queue not in known:
            raise ConfigError(
                f"class_queues.{task_class.value}: queue {queue!r} is not defined in queues {sorted(known)}"
            )
    return settings
