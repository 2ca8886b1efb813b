"""The `retry_policies` section: named backoff policies.

Two are built in (scheduler.core.retry.BUILTIN_RETRY_POLICIES): "none" (no retry, end failed),
which cannot change, and "default" (the policy tasks get out of the box), which a file may
redefine; the keys such a redefinition leaves out keep the built-in default's values.
"""

from __future__ import annotations

import re
from typing import Any

from scheduler.config.queues import QUEUE_NAME_PATTERN
from scheduler.config.yaml_lines import FileReader, join_path, kind
from scheduler.core.retry import BUILTIN_RETRY_POLICIES, NO_RETRY, Backoff, RetryPolicy

_EXCEPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

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


def parse_retry_policies(r: FileReader, raw: Any, line: int) -> dict[str, RetryPolicy]:
    """Read `retry_policies` (at `line`); the result always holds the built-in policies too."""
    section = r.mapping(raw, line, "retry_policies", "a mapping of policy name -> settings")
    policies: dict[str, RetryPolicy] = dict(BUILTIN_RETRY_POLICIES)
    for name, body in section.items():
        key_line = section.key_lines[name]
        path = f"retry_policies.{name}"
        # Policy names follow the queue-name rule: both are short identifiers users type.
        if not isinstance(name, str) or not QUEUE_NAME_PATTERN.match(name):
            raise r.error(key_line, "retry_policies", f"{name!r} is not a valid policy name")
        if name == NO_RETRY.name:
            raise r.error(
                key_line, path, "'none' is built in (no retry, end failed) and cannot be redefined"
            )
        m = r.mapping(body, key_line, path)
        r.keys(m, path, _POLICY_KEYS)
        # Redefining "default" tunes the out-of-the-box policy: what it leaves out stays built in.
        base = BUILTIN_RETRY_POLICIES.get(name) or RetryPolicy(name)
        backoff = r.choice(m, "backoff", path, [b.value for b in Backoff])
        base_delay = r.number(m, "base_delay_seconds", path, base.base_delay_seconds)
        max_delay = r.number(m, "max_delay_seconds", path, max(base.max_delay_seconds, base_delay))
        if max_delay < base_delay:
            raise r.error(
                m.key_lines.get("max_delay_seconds", m.line),
                join_path(path, "max_delay_seconds"),
                f"{max_delay:g} is below base_delay_seconds {base_delay:g}",
            )
        multiplier = r.number(m, "multiplier", path, base.multiplier, positive=True)
        if multiplier < 1:
            raise r.error(
                m.key_lines["multiplier"],
                join_path(path, "multiplier"),
                f"{multiplier:g} must be >= 1",
            )
        policies[name] = RetryPolicy(
            name=name,
            max_retries=r.integer(m, "max_retries", path, base.max_retries),
            backoff=Backoff(backoff) if backoff else base.backoff,
            base_delay_seconds=base_delay,
            multiplier=multiplier,
            max_delay_seconds=max_delay,
            jitter=r.number(m, "jitter", path, base.jitter, high=1.0),
            non_retryable=_non_retryable(r, m, path),
            dead_letter=r.boolean(m, "dead_letter", path, base.dead_letter),
        )
    return policies


def _non_retryable(r: FileReader, m: Any, path: str) -> frozenset[str]:
    """The exception type names (dotted or bare) that end a task at once, without retry."""
    if "non_retryable" not in m:
        return frozenset()
    items = r.sequence(
        m["non_retryable"],
        m.key_lines["non_retryable"],
        join_path(path, "non_retryable"),
        "a list of exception type names",
    )
    for index, item in enumerate(items):
        if not isinstance(item, str) or not _EXCEPTION_NAME.match(item):
            raise r.error(
                items.item_lines[index],
                f"{path}.non_retryable[{index}]",
                f"{kind(item)} is not an exception type name",
            )
    return frozenset(items)
