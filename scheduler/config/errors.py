"""The one error configuration loading raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """The configuration is invalid; the message names the bad setting (and file line, if any)."""
