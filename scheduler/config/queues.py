"""The `queues` section: the logical queues, their limits, alert thresholds and retry policy."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scheduler.config.yaml_lines import FileReader, kind
from scheduler.core.model import MAX_PRIORITY, MIN_PRIORITY, QueueSpec, TaskClass
from scheduler.core.retry import RetryPolicy

QUEUE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
"""A queue (or retry policy) name: letters, digits, _ . : -; at most 100 characters."""

TASK_CLASS_NAMES = tuple(c.value for c in TaskClass)
"""The task classes as the file spells them."""

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
    "serializer",
)

SERIALIZER_NAMES = ("json", "msgpack")
"""Encodings a queue's Celery messages may use (docs/arguments.md)."""


def parse_queues(
    r: FileReader, raw: Any, line: int, policies: Mapping[str, RetryPolicy]
) -> tuple[QueueSpec, ...]:
    """Read `queues` (at `line`); a queue's retry_policy must be among `policies`."""
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
        if not isinstance(name, str) or not QUEUE_NAME_PATTERN.match(name):
            raise r.error(
                m.key_lines["name"],
                f"{path}.name",
                f"{kind(name)} is not a valid queue name (letters, digits, _ . : -; at most 100)",
            )
        if name in seen:
            raise r.error(
                m.key_lines["name"],
                f"{path}.name",
                f"duplicate queue name {name!r} (first defined on line {seen[name]})",
            )
        seen[name] = m.key_lines["name"]
        task_class = r.choice(m, "class", path, TASK_CLASS_NAMES) or TaskClass.CPU.value
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
                serializer=r.choice(m, "serializer", path, SERIALIZER_NAMES) or "json",
            )
        )
    return tuple(specs)
