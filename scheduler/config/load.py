"""Building Settings: command-line flags, `SWITCHYARD_*` environment variables and the YAML file.

Precedence for each scalar setting: flag > environment variable > file > default. Structured
settings (queues, rules, policies ...) come from the file only; the section parsers live in
the sibling modules and run in dependency order (policies before the queues that name them,
queues before everything that names a queue).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from switchyard.redis_urls import RedisUrlError, check_url

from scheduler.config.errors import ConfigError
from scheduler.config.placement import (
    parse_aging,
    parse_fallback_chains,
    parse_placement,
    parse_rate_limits,
)
from scheduler.config.queues import parse_queues
from scheduler.config.retry import parse_retry_policies
from scheduler.config.rules import parse_class_queues, parse_content_types, parse_rules
from scheduler.config.yaml_lines import FileReader, LineMap, read_yaml, unknown_policy
from scheduler.core.retry import BUILTIN_RETRY_POLICIES
from scheduler.settings import DEFAULT_QUEUES, EVENT_LOOPS, SUBMIT_WAIT_MAX_SECONDS, Settings

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


_ZERO_MEANS_OFF = frozenset({"commit_linger_seconds"})
"""Durations where 0 is a choice (off), not a mistake: every other one must be positive."""

_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def _coerce(name: str, raw: Any) -> Any:
    """Convert one scalar setting from flag or environment text (a bool flag arrives as a bool)."""
    setting_type = type(getattr(Settings(), name))
    try:
        if setting_type is bool:
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower()
            if word not in _TRUE_WORDS + _FALSE_WORDS:
                raise ValueError(f"must be one of {', '.join(_TRUE_WORDS)} or {', '.join(_FALSE_WORDS)}")
            return word in _TRUE_WORDS
        if setting_type is float:
            value: Any = float(raw)
            if name in _ZERO_MEANS_OFF:
                if not (value >= 0 and math.isfinite(value)):
                    raise ValueError("must be 0 (off) or a positive number of seconds")
            elif not (value > 0 and math.isfinite(value)):
                raise ValueError("must be a positive number")
            return value
        if setting_type is int:
            value = int(raw)
            if value < 0:
                raise ValueError("must not be negative")
            return value
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}={raw!r}: {exc}") from None


def _parse_scalar(r: FileReader, data: LineMap, name: str) -> Any:
    """One scalar setting from the file, typed like its Settings default."""
    setting_type = type(getattr(Settings(), name))
    if setting_type is bool:
        return r.boolean(data, name, "", bool(getattr(Settings(), name)))
    if setting_type is float:
        return r.number(data, name, "", 0.0, positive=name not in _ZERO_MEANS_OFF)
    if setting_type is int:
        return r.integer(data, name, "", 0)
    return r.text(data, name, "", "")


def _file_overrides(path: str) -> dict[str, Any]:
    """Read and validate the config file; return the Settings fields it sets."""
    r, data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, LineMap):
        raise r.error(1, "", "the top level must be a mapping of setting -> value")
    r.keys(data, "", _FILE_KEYS)

    overrides: dict[str, Any] = {}
    for name in _FILE_SCALARS:
        if name in data:
            overrides[name] = _parse_scalar(r, data, name)

    def at(key: str) -> tuple[Any, int]:
        return data[key], data.key_lines[key]

    policies = (
        parse_retry_policies(r, *at("retry_policies"))
        if "retry_policies" in data
        else dict(BUILTIN_RETRY_POLICIES)
    )
    overrides["retry_policies"] = policies
    if "default_retry_policy" in data:
        r.policy_ref(data, "default_retry_policy", "", policies)
    queues = parse_queues(r, *at("queues"), policies) if "queues" in data else DEFAULT_QUEUES
    queue_names = [q.name for q in queues]
    if "queues" in data:
        overrides["queues"] = queues
    overrides["class_queues"] = parse_class_queues(r, data, queue_names)
    if "content_types" in data:
        overrides["content_classes"] = parse_content_types(r, *at("content_types"))
    if "rules" in data:
        overrides["rules"] = parse_rules(r, *at("rules"), queue_names, policies)
    if "fallback_chains" in data:
        overrides["fallback_chains"] = parse_fallback_chains(r, *at("fallback_chains"), queue_names)
    if "aging" in data:
        overrides["aging"] = parse_aging(r, *at("aging"))
    if "placement" in data:
        overrides["placement"] = parse_placement(r, *at("placement"))
    if "rate_limits" in data:
        overrides["rate_limits"] = parse_rate_limits(r, *at("rate_limits"))
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
        if isinstance(_SCALARS[name].default, bool):
            # --insecure / --no-insecure, --reflection / --no-reflection
            parser.add_argument(
                "--" + name.replace("_", "-"), dest=name, action=argparse.BooleanOptionalAction,
                default=None, help=f"env SWITCHYARD_{name.upper()} (true/false)",
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
    A flag given as '' counts (`--metrics-listen ''` turns metrics off); an empty environment
    variable does not (it reads as unset). Structured settings (queues, rules, policies ...) come
    from the file only.
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
        if args.get(name) is not None and (args[name] != "" or isinstance(_SCALARS[name].default, str)):
            values[name] = _coerce(name, args[name])
    settings = Settings(**values)
    for name in ("redis_url", "state_redis_url_for_workers"):
        url = getattr(settings, name)
        try:
            if url:
                check_url(url)
        except RedisUrlError as exc:
            raise ConfigError(f"setting {name}: {exc}") from None
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ConfigError("settings tls_cert_file and tls_key_file go together: give both "
                          "(--tls-cert FILE --tls-key FILE) to turn TLS on, or neither")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        raise ConfigError("setting tls_client_ca_file (mTLS) needs TLS: give --tls-cert and --tls-key too")
    if settings.submit_wait_timeout_seconds > SUBMIT_WAIT_MAX_SECONDS:
        raise ConfigError(f"setting submit_wait_timeout_seconds={settings.submit_wait_timeout_seconds:g}: "
                          f"must be at most {SUBMIT_WAIT_MAX_SECONDS:g}")
    if settings.event_loop not in EVENT_LOOPS:
        raise ConfigError(f"setting event_loop={settings.event_loop!r}: must be one of {', '.join(EVENT_LOOPS)}")
    if settings.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("setting event_loop='uvloop': uvloop is not installed here "
                          "(pip install uvloop, or use event_loop auto or asyncio)")
    if settings.default_retry_policy not in settings.retry_policies:
        raise ConfigError(
            f"setting default_retry_policy={settings.default_retry_policy!r}: "
            + unknown_policy(settings.default_retry_policy, settings.retry_policies)
        )
    return settings
