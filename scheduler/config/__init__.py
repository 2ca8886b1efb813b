"""Loading the scheduler's configuration: flags, environment and the YAML file, validated once.

The public face is `load_settings` (which builds a `scheduler.settings.Settings`),
`build_parser` (the command-line flags) and `ConfigError`. Every error in the file names the
file, the line and the key path; docs/configuration.md describes the file.

Modules: `load` (flags, environment, precedence, the file's top level), `yaml_lines` (YAML with
line numbers and the typed reader), and one per group of sections: `queues`, `retry`, `rules`
(class queues, content types, classification rules) and `placement` (fallback chains, aging,
placement, rate limits).
"""

from scheduler.config.errors import ConfigError
from scheduler.config.load import build_parser, load_settings

__all__ = ["ConfigError", "build_parser", "load_settings"]
