"""Typed settings of the scheduler process, loaded once at start-up.

Precedence: command-line flag > `SWITCHYARD_*` environment variable > `--config` file > default.
The config file (YAML) also holds everything structured: queues, classification rules, retry
policies, fallback chains, aging, placement weights and rate limits; see docs/configuration.md.
It is validated in full at start-up and every error names the file, the line and the key path.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from scheduler.core.classify import DEFAULT_CONTENT_CLASSES, ClassificationRules
from scheduler.core.model import MAX_PRIORITY, MIN_PRIORITY, GpuNeed, QueueSpec, TaskClass
from scheduler.core.policy import (
    NO_RETRY,
    AgingPolicy,
    Backoff,
    ClassificationRule,
    FallbackChain,
    PlacementPolicy,
    RateLimit,
    RetryPolicy,
    ScoringWeights,
    Strategy,
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
            queues=self.queues,
            class_queues=self.class_queues,
            content_classes=self.content_classes,
            rules=self.rules,
            default_retry_policy=self.default_retry_policy,
        )

    def queue(self, name: str) -> QueueSpec | None:
        for spec in self.queues:
            if spec.name == name:
                return spec
        return None


_STRUCTURED = (
    "queues",
    "class_queues",
    "content_classes",
    "rules",
    "retry_policies",
    "fallback_chains",
    "aging",
    "placement",
    "rate_limits",
)
_SCALARS = {f.name: f for f in fields(Settings) if f.name not in _STRUCTURED}
_FILE_SCALARS = tuple(name for name in _SCALARS if name != "config_file")
_FILE_KEYS = (
    *_FILE_SCALARS,
    "queues",
    "class_queues",
    "content_types",
    "rules",
    "retry_policies",
    "fallback_chains",
    "aging",
    "placement",
    "rate_limits",
)


def _coerce(name: str, raw: Any) -> Any:
    """Convert one scalar setting from flag or environment text."""
    kind = type(getattr(Settings(), name))
    try:
        if kind is float:
            value: Any = float(raw)
            if not value > 0:
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


# --- YAML with line numbers ---------------------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    """A YAML sequence that remembers its own line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _MarkedError(Exception):
    """A problem found while reading the YAML, before paths are known."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers and reject duplicate keys."""


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise _MarkedError(line, "a key must be a plain word, not a list or mapping") from None
        if key in result:
            raise _MarkedError(
                line, f"duplicate key {key!r} (first given on line {result.key_lines[key]})"
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    if isinstance(value, _Map):
        return "a mapping"
    if isinstance(value, _Seq):
        return "a list"
    if value is None:
        return "empty"
    return repr(value)


class _FileReader:
    """Validates the parsed file; every error names the file, the line and the key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, line: int, path: str, message: str) -> ConfigError:
        where = f"config file {self.file} line {line}"
        return ConfigError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    # structure

    def mapping(self, value: Any, line: int, path: str, what: str = "a mapping") -> _Map:
        if not isinstance(value, _Map):
            raise self.error(line, path, f"must be {what}, got {_kind(value)}")
        return value

    def sequence(self, value: Any, line: int, path: str, what: str = "a list") -> _Seq:
        if not isinstance(value, _Seq):
            raise self.error(line, path, f"must be {what}, got {_kind(value)}")
        return value

    def keys(
        self, m: _Map, path: str, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> None:
        """Reject unknown keys (suggesting the nearest known one) and missing required ones."""
        for key in m:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
                hint = (
                    f" (did you mean {close[0]!r}?)"
                    if close
                    else f"; known keys: {', '.join(allowed)}"
                )
                raise self.error(m.key_lines[key], path, f"unknown key {key!r}{hint}")
        for key in required:
            if key not in m:
                raise self.error(m.line, path, f"missing required key {key!r}")

    # typed values; each reads m[key] at m.key_lines[key]

    def integer(
        self, m: _Map, key: str, path: str, default: int, low: int = 0, high: int | None = None
    ) -> int:
        if key not in m:
            return default
        value = m[key]
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < low
            or (high is not None and value > high)
        ):
            bounds = f"{low}-{high}" if high is not None else f">= {low}"
            raise self.error(
                m.key_lines[key], _join(path, key), f"{_kind(value)} must be an integer {bounds}"
            )
        return value

    def number(
        self,
        m: _Map,
        key: Any,
        path: str,
        default: float,
        *,
        positive: bool = False,
        high: float | None = None,
    ) -> float:
        if key not in m:
            return default
        value = m[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok and (value <= 0 if positive else value < 0):
            ok = False
        if ok and high is not None and value > high:
            ok = False
        if not ok:
            bounds = "> 0" if positive else ">= 0"
            if high is not None:
                bounds = f"between 0 and {high:g}"
            raise self.error(
                m.key_lines[key], _join(path, key), f"{_kind(value)} must be a number {bounds}"
            )
        return float(value)

    def boolean(self, m: _Map, key: str, path: str, default: bool) -> bool:
        if key not in m:
            return default
        value = m[key]
        if not isinstance(value, bool):
            raise self.error(
                m.key_lines[key], _join(path, key), f"{_kind(value)} must be true or false"
            )
        return value

    def text(self, m: _Map, key: str, path: str, default: str, *, empty_ok: bool = True) -> str:
        if key not in m:
            return default
        value = m[key]
        if not isinstance(value, str) or (not empty_ok and not value):
            need = "a non-empty string" if not empty_ok else "a string"
            raise self.error(m.key_lines[key], _join(path, key), f"{_kind(value)} must be {need}")
        return value

    def choice(self, m: _Map, key: str, path: str, options: Sequence[str]) -> str | None:
        if key not in m:
            return None
        value = m[key]
        if value not in options:
            raise self.error(
                m.key_lines[key],
                _join(path, key),
                f"{_kind(value)} must be one of {', '.join(options)}",
            )
        return str(value)

    def queue_ref(self, m: _Map, key: str, path: str, known: Sequence[str]) -> str:
        name = self.text(m, key, path, "", empty_ok=False)
        if name not in known:
            raise self.error(m.key_lines[key], _join(path, key), _unknown_queue(name, known))
        return name

    def policy_ref(self, m: _Map, key: str, path: str, known: Mapping[str, RetryPolicy]) -> str:
        name = self.text(m, key, path, "", empty_ok=False)
        if name not in known:
            raise self.error(m.key_lines[key], _join(path, key), _unknown_policy(name, known))
        return name


def _unknown_queue(name: str, known: Sequence[str]) -> str:
    return f"queue {name!r} is not defined in queues ({', '.join(known)})"


def _unknown_policy(name: str, known: Mapping[str, RetryPolicy]) -> str:
    return f"retry policy {name!r} is not defined in retry_policies ({', '.join(known)})"


_TASK_CLASSES = tuple(c.value for c in TaskClass)
_GPU_NEEDS = (GpuNeed.NONE.value, GpuNeed.PREFERRED.value, GpuNeed.REQUIRED.value)
_EXCEPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")

_QUEUE_KEYS = (
    "name",
    "class",
    "default_priority",
    "paused",
    "max_tasks_per_worker",
    "soft_time_limit_seconds",
    "hard_time_limit_seconds",
    "max_depth",
    "max_error_rate",
    "retry_policy",
)
_POLICY_KEYS = (
    "max_retries",
    "backoff",
    "base_delay_seconds",
    "multiplier",
    "max_delay_seconds",
    "jitter",
    "non_retryable",
    "dead_letter",
)
_RULE_KEYS = ("name", "match", "then")
_MATCH_KEYS = ("task_name", "content_types", "min_gpu_memory_mb")
_THEN_KEYS = ("queue", "class", "gpu", "priority", "retry_policy", "preferred_labels")
_CHAIN_KEYS = ("queues", "after_seconds")
_AGING_KEYS = ("enabled", "default_max_wait_seconds", "max_wait_seconds")
_PLACEMENT_KEYS = (
    "strategy",
    "weights",
    "preferred_gpu_wait_seconds",
    "quarantine_failures",
    "failure_window_seconds",
    "quarantine_seconds",
    "max_scored_workers",
)
_WEIGHT_KEYS = tuple(f.name for f in fields(ScoringWeights))


def _parse_retry_policies(r: _FileReader, raw: Any, line: int) -> dict[str, RetryPolicy]:
    section = r.mapping(raw, line, "retry_policies", "a mapping of policy name -> settings")
    policies: dict[str, RetryPolicy] = {"none": NO_RETRY}
    for name, body in section.items():
        key_line = section.key_lines[name]
        path = f"retry_policies.{name}"
        if not isinstance(name, str) or not _QUEUE_NAME.match(name):
            raise r.error(key_line, "retry_policies", f"{name!r} is not a valid policy name")
        if name == "none":
            raise r.error(
                key_line, path, "'none' is built in (no retry, end failed) and cannot be redefined"
            )
        m = r.mapping(body, key_line, path)
        r.keys(m, path, _POLICY_KEYS)
        base = RetryPolicy(name)
        backoff = r.choice(m, "backoff", path, [b.value for b in Backoff])
        base_delay = r.number(m, "base_delay_seconds", path, base.base_delay_seconds)
        max_delay = r.number(m, "max_delay_seconds", path, max(base.max_delay_seconds, base_delay))
        if max_delay < base_delay:
            raise r.error(
                m.key_lines.get("max_delay_seconds", m.line),
                _join(path, "max_delay_seconds"),
                f"{max_delay:g} is below base_delay_seconds {base_delay:g}",
            )
        multiplier = r.number(m, "multiplier", path, base.multiplier, positive=True)
        if multiplier < 1:
            raise r.error(
                m.key_lines["multiplier"], _join(path, "multiplier"), f"{multiplier:g} must be >= 1"
            )
        non_retryable: list[str] = []
        if "non_retryable" in m:
            items = r.sequence(
                m["non_retryable"],
                m.key_lines["non_retryable"],
                _join(path, "non_retryable"),
                "a list of exception type names",
            )
            for index, item in enumerate(items):
                if not isinstance(item, str) or not _EXCEPTION_NAME.match(item):
                    raise r.error(
                        items.item_lines[index],
                        f"{path}.non_retryable[{index}]",
                        f"{_kind(item)} is not an exception type name",
                    )
                non_retryable.append(item)
        policies[name] = RetryPolicy(
            name=name,
            max_retries=r.integer(m, "max_retries", path, base.max_retries),
            backoff=Backoff(backoff) if backoff else base.backoff,
            base_delay_seconds=base_delay,
            multiplier=multiplier,
            max_delay_seconds=max_delay,
            jitter=r.number(m, "jitter", path, base.jitter, high=1.0),
            non_retryable=frozenset(non_retryable),
            dead_letter=r.boolean(m, "dead_letter", path, base.dead_letter),
        )
    return policies


def _parse_queues(
    r: _FileReader, raw: Any, line: int, policies: Mapping[str, RetryPolicy]
) -> tuple[QueueSpec, ...]:
    items = r.sequence(raw, line, "queues", "a non-empty list of queues")
    if not items:
        raise r.error(line, "queues", "must list at least one queue")
    specs: list[QueueSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        path = f"queues[{index}]"
        m = r.mapping(item, items.item_lines[index], path)
        r.keys(m, path, _QUEUE_KEYS, required=("name",))
        name = m["name"]
        if not isinstance(name, str) or not _QUEUE_NAME.match(name):
            raise r.error(
                m.key_lines["name"],
                f"{path}.name",
                f"{_kind(name)} is not a valid queue name (letters, digits, _ . : -; at most 100)",
            )
        if name in seen:
            raise r.error(
                m.key_lines["name"],
                f"{path}.name",
                f"duplicate queue name {name!r} (first defined on line {seen[name]})",
            )
        seen[name] = m.key_lines["name"]
        task_class = r.choice(m, "class", path, _TASK_CLASSES) or TaskClass.CPU.value
        soft = r.number(m, "soft_time_limit_seconds", path, 0.0)
        hard = r.number(m, "hard_time_limit_seconds", path, 0.0)
        if soft and hard and soft > hard:
            raise r.error(
                m.key_lines["soft_time_limit_seconds"],
                f"{path}.soft_time_limit_seconds",
                f"{soft:g} exceeds hard_time_limit_seconds {hard:g}",
            )
        specs.append(
            QueueSpec(
                name=name,
                task_class=TaskClass(task_class),
                default_priority=r.integer(
                    m, "default_priority", path, 5, MIN_PRIORITY, MAX_PRIORITY
                ),
                paused=r.boolean(m, "paused", path, False),
                max_tasks_per_worker=r.integer(m, "max_tasks_per_worker", path, 0),
                soft_time_limit_seconds=soft,
                hard_time_limit_seconds=hard,
                max_depth=r.integer(m, "max_depth", path, 0),
                max_error_rate=r.number(m, "max_error_rate", path, 0.0, high=1.0),
                retry_policy=r.policy_ref(m, "retry_policy", path, policies)
                if "retry_policy" in m
                else "",
            )
        )
    return tuple(specs)


def _parse_class_queues(
    r: _FileReader, data: _Map, queue_names: Sequence[str]
) -> dict[TaskClass, str]:
    mapping: dict[TaskClass, str] = dict(Settings().class_queues)
    given: dict[TaskClass, int] = {}
    if "class_queues" in data:
        section = r.mapping(
            data["class_queues"],
            data.key_lines["class_queues"],
            "class_queues",
            "a mapping of task class -> queue name",
        )
        r.keys(section, "class_queues", _TASK_CLASSES)
        for cls_name in section:
            task_class = TaskClass(cls_name)
            mapping[task_class] = r.queue_ref(section, cls_name, "class_queues", queue_names)
            given[task_class] = section.key_lines[cls_name]
    for task_class in TaskClass:
        queue = mapping[task_class]
        if task_class not in given and queue not in queue_names:
            line = data.key_lines.get("class_queues", data.key_lines.get("queues", 1))
            raise r.error(
                line,
                f"class_queues.{task_class.value}",
                f"the default queue {queue!r} is not defined in queues ({', '.join(queue_names)}); "
                f"name a queue for class {task_class.value!r} under class_queues",
            )
    return mapping


def _parse_content_types(r: _FileReader, raw: Any, line: int) -> dict[str, TaskClass]:
    section = r.mapping(raw, line, "content_types", "a mapping of content type -> task class")
    classes = dict(DEFAULT_CONTENT_CLASSES)
    for content in section:
        if not isinstance(content, str) or not content.strip():
            raise r.error(
                section.key_lines[content],
                "content_types",
                f"{_kind(content)} is not a content type",
            )
        cls_name = r.choice(section, content, "content_types", _TASK_CLASSES)
        classes[content.strip().lower()] = TaskClass(str(cls_name))
    return classes


def _parse_rules(
    r: _FileReader,
    raw: Any,
    line: int,
    queue_names: Sequence[str],
    policies: Mapping[str, RetryPolicy],
) -> tuple[ClassificationRule, ...]:
    items = r.sequence(raw, line, "rules", "a list of rules")
    rules: list[ClassificationRule] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        path = f"rules[{index}]"
        m = r.mapping(item, items.item_lines[index], path)
        r.keys(m, path, _RULE_KEYS, required=("name", "then"))
        name = r.text(m, "name", path, "", empty_ok=False)
        if name in seen:
            raise r.error(
                m.key_lines["name"],
                f"{path}.name",
                f"duplicate rule name {name!r} (first on line {seen[name]})",
            )
        seen[name] = m.key_lines["name"]

        globs: list[str] = [""]
        content_types: tuple[str, ...] = ()
        min_gpu = 0
        if "match" in m:
            mpath = f"{path}.match"
            match = r.mapping(m["match"], m.key_lines["match"], mpath)
            r.keys(match, mpath, _MATCH_KEYS)
            if isinstance(match.get("task_name"), _Seq):
                gpath = f"{mpath}.task_name"
                listed_globs = match["task_name"]
                if not listed_globs:
                    raise r.error(
                        match.key_lines["task_name"], gpath, "must list at least one glob"
                    )
                for at, glob in enumerate(listed_globs):
                    if not isinstance(glob, str) or not glob:
                        raise r.error(
                            listed_globs.item_lines[at],
                            f"{gpath}[{at}]",
                            f"{_kind(glob)} must be a non-empty task-name glob",
                        )
                globs = list(listed_globs)
            elif "task_name" in match:
                globs = [r.text(match, "task_name", mpath, "", empty_ok=False)]
            if "content_types" in match:
                cpath = f"{mpath}.content_types"
                listed = r.sequence(
                    match["content_types"],
                    match.key_lines["content_types"],
                    cpath,
                    "a list of content types",
                )
                for at, content in enumerate(listed):
                    if not isinstance(content, str) or not content.strip():
                        raise r.error(
                            listed.item_lines[at],
                            f"{cpath}[{at}]",
                            f"{_kind(content)} is not a content type",
                        )
                content_types = tuple(c.strip().lower() for c in listed)
            min_gpu = r.integer(match, "min_gpu_memory_mb", mpath, 0)

        tpath = f"{path}.then"
        then = r.mapping(m["then"], m.key_lines["then"], tpath)
        r.keys(then, tpath, _THEN_KEYS)
        if not then:
            raise r.error(
                m.key_lines["then"], tpath, f"must set at least one of {', '.join(_THEN_KEYS)}"
            )
        cls_name = r.choice(then, "class", tpath, _TASK_CLASSES)
        gpu_name = r.choice(then, "gpu", tpath, _GPU_NEEDS)
        task_class = TaskClass(cls_name) if cls_name else None
        gpu = GpuNeed(gpu_name) if gpu_name else None
        if task_class is not None and gpu is not None and not _consistent(task_class, gpu):
            raise r.error(
                then.key_lines["gpu"],
                f"{tpath}.gpu",
                f"gpu={gpu.value} contradicts class {task_class.value}",
            )
        labels: dict[str, str] = {}
        if "preferred_labels" in then:
            lpath = f"{tpath}.preferred_labels"
            section = r.mapping(
                then["preferred_labels"],
                then.key_lines["preferred_labels"],
                lpath,
                "a mapping of label -> value",
            )
            for label, value in section.items():
                if not isinstance(label, str) or not _LABEL_KEY.match(label):
                    raise r.error(
                        section.key_lines[label], lpath, f"{_kind(label)} is not a valid label name"
                    )
                if not isinstance(value, str | int | float) or isinstance(value, bool):
                    raise r.error(
                        section.key_lines[label],
                        _join(lpath, label),
                        f"{_kind(value)} must be a string",
                    )
                labels[label] = str(value)
        queue = r.queue_ref(then, "queue", tpath, queue_names) if "queue" in then else ""
        priority = (
            r.integer(then, "priority", tpath, 0, MIN_PRIORITY, MAX_PRIORITY)
            if "priority" in then
            else 0
        )
        policy = (
            r.policy_ref(then, "retry_policy", tpath, policies) if "retry_policy" in then else ""
        )
        # A list of globs is one rule per glob, in order, all under the rule's name.
        rules.extend(
            ClassificationRule(
                name=name,
                task_name=glob,
                content_types=content_types,
                min_gpu_memory_mb=min_gpu,
                queue=queue,
                task_class=task_class,
                gpu=gpu,
                priority=priority,
                retry_policy=policy,
                preferred_labels=labels,
            )
            for glob in globs
        )
    return tuple(rules)


def _consistent(task_class: TaskClass, gpu: GpuNeed) -> bool:
    if task_class is TaskClass.GPU_INTENSIVE:
        return gpu is not GpuNeed.NONE
    if task_class in (TaskClass.CPU, TaskClass.IO):
        return gpu is GpuNeed.NONE
    return True


def _parse_fallback_chains(
    r: _FileReader, raw: Any, line: int, queue_names: Sequence[str]
) -> tuple[FallbackChain, ...]:
    items = r.sequence(raw, line, "fallback_chains", "a list of {queues, after_seconds}")
    chains: list[FallbackChain] = []
    spills_from: dict[str, int] = {}
    for index, item in enumerate(items):
        path = f"fallback_chains[{index}]"
        m = r.mapping(item, items.item_lines[index], path)
        r.keys(m, path, _CHAIN_KEYS, required=("queues",))
        qpath = f"{path}.queues"
        listed = r.sequence(m["queues"], m.key_lines["queues"], qpath, "a list of queue names")
        if len(listed) < 2:
            raise r.error(m.key_lines["queues"], qpath, "a chain needs at least two queues")
        names: list[str] = []
        for at, name in enumerate(listed):
            item_line = listed.item_lines[at]
            if not isinstance(name, str) or name not in queue_names:
                raise r.error(item_line, f"{qpath}[{at}]", _unknown_queue(str(name), queue_names))
            if name in names:
                raise r.error(
                    item_line, f"{qpath}[{at}]", f"queue {name!r} appears twice in the chain"
                )
            # A task's own queue picks its chain; only a chain's last queue may end several chains.
            if at < len(listed) - 1:
                if name in spills_from:
                    raise r.error(
                        item_line,
                        f"{qpath}[{at}]",
                        f"queue {name!r} already spills over in the chain on line {spills_from[name]}; "
                        "a queue may lead on in one chain only",
                    )
                spills_from[name] = item_line
            names.append(name)
        chains.append(FallbackChain(tuple(names), r.number(m, "after_seconds", path, 60.0)))
    return tuple(chains)


def _parse_aging(r: _FileReader, raw: Any, line: int) -> AgingPolicy:
    m = r.mapping(raw, line, "aging")
    r.keys(m, "aging", _AGING_KEYS)
    default = AgingPolicy()
    waits: dict[int, float] = {}
    if "max_wait_seconds" in m:
        wpath = "aging.max_wait_seconds"
        section = r.mapping(
            m["max_wait_seconds"],
            m.key_lines["max_wait_seconds"],
            wpath,
            "a mapping of priority level (1-10) -> seconds",
        )
        for level in section:
            if (
                not isinstance(level, int)
                or isinstance(level, bool)
                or not MIN_PRIORITY <= level <= MAX_PRIORITY
            ):
                raise r.error(
                    section.key_lines[level], wpath, f"level {level!r} must be an integer 1-10"
                )
            waits[level] = r.number(section, level, wpath, 0.0, positive=True)
    return AgingPolicy(
        enabled=r.boolean(m, "enabled", "aging", default.enabled),
        default_max_wait_seconds=r.number(
            m, "default_max_wait_seconds", "aging", default.default_max_wait_seconds, positive=True
        ),
        max_wait_seconds=waits,
    )


def _parse_placement(r: _FileReader, raw: Any, line: int) -> PlacementPolicy:
    m = r.mapping(raw, line, "placement")
    r.keys(m, "placement", _PLACEMENT_KEYS)
    default = PlacementPolicy()
    weights = default.weights
    if "weights" in m:
        section = r.mapping(m["weights"], m.key_lines["weights"], "placement.weights")
        r.keys(section, "placement.weights", _WEIGHT_KEYS)
        weights = ScoringWeights(
            **{
                name: r.number(section, name, "placement.weights", getattr(weights, name))
                for name in _WEIGHT_KEYS
            }
        )
    strategy = r.choice(m, "strategy", "placement", [s.value for s in Strategy])
    return PlacementPolicy(
        strategy=Strategy(strategy) if strategy else default.strategy,
        weights=weights,
        preferred_gpu_wait_seconds=r.number(
            m, "preferred_gpu_wait_seconds", "placement", default.preferred_gpu_wait_seconds
        ),
        quarantine_failures=r.integer(
            m, "quarantine_failures", "placement", default.quarantine_failures
        ),
        failure_window_seconds=r.number(
            m, "failure_window_seconds", "placement", default.failure_window_seconds, positive=True
        ),
        quarantine_seconds=r.number(
            m, "quarantine_seconds", "placement", default.quarantine_seconds, positive=True
        ),
        max_scored_workers=r.integer(
            m, "max_scored_workers", "placement", default.max_scored_workers
        ),
    )


def _parse_rate_limits(r: _FileReader, raw: Any, line: int) -> tuple[RateLimit, ...]:
    section = r.mapping(
        raw, line, "rate_limits", 'a mapping of task-name glob -> rate such as "10/m"'
    )
    limits: list[RateLimit] = []
    for pattern, text in section.items():
        key_line = section.key_lines[pattern]
        if not isinstance(pattern, str) or not pattern:
            raise r.error(key_line, "rate_limits", f"{_kind(pattern)} is not a task-name glob")
        if not isinstance(text, str):
            raise r.error(
                key_line, f"rate_limits.{pattern}", f'{_kind(text)} must be text such as "10/m"'
            )
        try:
            limits.append(RateLimit.parse(pattern, text))
        except ValueError as exc:
            raise r.error(key_line, f"rate_limits.{pattern}", str(exc)) from None
    return tuple(limits)


def _parse_scalar(r: _FileReader, data: _Map, name: str) -> Any:
    kind = type(getattr(Settings(), name))
    if kind is float:
        return r.number(data, name, "", 0.0, positive=True)
    if kind is int:
        return r.integer(data, name, "", 0)
    return r.text(data, name, "", "")


def _file_overrides(path: str) -> dict[str, Any]:
    """Read and validate the config file; return the Settings fields it sets."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    r = _FileReader(path)
    try:
        data = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except _MarkedError as exc:
        raise r.error(exc.line, "", exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise r.error(line, "", f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, _Map):
        raise r.error(1, "", "the top level must be a mapping of setting -> value")
    r.keys(data, "", _FILE_KEYS)

    overrides: dict[str, Any] = {}
    for name in _FILE_SCALARS:
        if name in data:
            overrides[name] = _parse_scalar(r, data, name)

    def at(key: str) -> tuple[Any, int]:
        return data[key], data.key_lines[key]

    policies = (
        _parse_retry_policies(r, *at("retry_policies"))
        if "retry_policies" in data
        else {"none": NO_RETRY}
    )
    overrides["retry_policies"] = policies
    if "default_retry_policy" in data:
        r.policy_ref(data, "default_retry_policy", "", policies)
    queues = _parse_queues(r, *at("queues"), policies) if "queues" in data else DEFAULT_QUEUES
    queue_names = [q.name for q in queues]
    if "queues" in data:
        overrides["queues"] = queues
    overrides["class_queues"] = _parse_class_queues(r, data, queue_names)
    if "content_types" in data:
        overrides["content_classes"] = _parse_content_types(r, *at("content_types"))
    if "rules" in data:
        overrides["rules"] = _parse_rules(r, *at("rules"), queue_names, policies)
    if "fallback_chains" in data:
        overrides["fallback_chains"] = _parse_fallback_chains(
            r, *at("fallback_chains"), queue_names
        )
    if "aging" in data:
        overrides["aging"] = _parse_aging(r, *at("aging"))
    if "placement" in data:
        overrides["placement"] = _parse_placement(r, *at("placement"))
    if "rate_limits" in data:
        overrides["rate_limits"] = _parse_rate_limits(r, *at("rate_limits"))
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags: one per scalar setting, plus --config."""
    parser = argparse.ArgumentParser(
        prog="switchyard-scheduler",
        description="Switchyard scheduler: gRPC API, agent gateway and Prometheus metrics.",
    )
    for name in _SCALARS:
        if name == "config_file":
            parser.add_argument(
                "--config", dest="config_file", metavar="FILE", help="YAML config file"
            )
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=name.split("_")[-1].upper(),
            help=f"env SWITCHYARD_{name.upper()}",
        )
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from flags, environment and the config file; raise ConfigError on bad values.

    Precedence for each scalar setting: flag > SWITCHYARD_* environment variable > file > default.
    Structured settings (queues, rules, policies ...) come from the file only.
    """
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.get("config_file") or environ.get("SWITCHYARD_CONFIG_FILE", "")
    if config_file:
        values.update(_file_overrides(config_file))
        values["config_file"] = config_file
    for name in _SCALARS:
        if name == "config_file":
            continue
        env_value = environ.get(f"SWITCHYARD_{name.upper()}")
        if env_value not in (None, ""):
            values[name] = _coerce(name, env_value)
        if args.get(name) not in (None, ""):
            values[name] = _coerce(name, args[name])
    settings = Settings(**values)
    if settings.default_retry_policy not in settings.retry_policies:
        raise ConfigError(
            f"setting default_retry_policy={settings.default_retry_policy!r}: "
            + _unknown_policy(settings.default_retry_policy, settings.retry_policies)
        )
    return settings
