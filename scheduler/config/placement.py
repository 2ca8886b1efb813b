"""Where and when work runs: the `fallback_chains`, `aging`, `placement` and `rate_limits` sections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from scheduler.config.yaml_lines import FileReader, kind, unknown_queue
from scheduler.core.model import MAX_PRIORITY, MIN_PRIORITY
from scheduler.core.ordering import AgingPolicy
from scheduler.core.placement import PlacementPolicy, ScoringWeights, Strategy
from scheduler.core.ratelimit import RateLimit
from scheduler.core.routing import FallbackChain

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


def parse_fallback_chains(
    r: FileReader, raw: Any, line: int, queue_names: Sequence[str]
) -> tuple[FallbackChain, ...]:
    """Read `fallback_chains` (at `line`); every queue must be among `queue_names`."""
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
                raise r.error(item_line, f"{qpath}[{at}]", unknown_queue(str(name), queue_names))
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


def parse_aging(r: FileReader, raw: Any, line: int) -> AgingPolicy:
    """Read `aging` (at `line`); levels not named keep the default wait."""
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


def parse_placement(r: FileReader, raw: Any, line: int) -> PlacementPolicy:
    """Read `placement` (at `line`): strategy, scoring weights, quarantine and scan limits."""
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


def parse_rate_limits(r: FileReader, raw: Any, line: int) -> tuple[RateLimit, ...]:
    """Read `rate_limits` (at `line`): task-name glob -> rate text such as "10/m"."""
    section = r.mapping(
        raw, line, "rate_limits", 'a mapping of task-name glob -> rate such as "10/m"'
    )
    limits: list[RateLimit] = []
    for pattern, text in section.items():
        key_line = section.key_lines[pattern]
        if not isinstance(pattern, str) or not pattern:
            raise r.error(key_line, "rate_limits", f"{kind(pattern)} is not a task-name glob")
        if not isinstance(text, str):
            raise r.error(
                key_line, f"rate_limits.{pattern}", f'{kind(text)} must be text such as "10/m"'
            )
        try:
            limits.append(RateLimit.parse(pattern, text))
        except ValueError as exc:
            raise r.error(key_line, f"rate_limits.{pattern}", str(exc)) from None
    return tuple(limits)
