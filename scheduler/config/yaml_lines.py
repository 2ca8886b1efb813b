"""YAML that remembers line numbers, and a typed reader whose every error names file, line and key.

`read_yaml` parses with a SafeLoader whose mappings and sequences are `LineMap` / `LineSeq`:
plain dicts and lists that also carry the line of each key and item, and that reject duplicate
keys (PyYAML silently keeps the last one). `FileReader` turns those into typed values, raising
`ConfigError("config file F line N: path.to.key: problem")`; the section parsers build on it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from scheduler.config.errors import ConfigError
from scheduler.core.retry import RetryPolicy


class LineMap(dict[Any, Any]):
    """A YAML mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class LineSeq(list[Any]):
    """A YAML sequence that remembers its own line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _MarkedError(Exception):
    """A problem found while reading the YAML, before key paths are known."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers and reject duplicate keys."""


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    result = LineMap()
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


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LineSeq:
    result = LineSeq(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def join_path(path: str, key: Any) -> str:
    """The key path of `key` inside `path` ("" is the top level)."""
    return f"{path}.{key}" if path else str(key)


def kind(value: Any) -> str:
    """How a wrong value is shown in an error: its kind for containers, else its repr."""
    if isinstance(value, LineMap):
        return "a mapping"
    if isinstance(value, LineSeq):
        return "a list"
    if value is None:
        return "empty"
    return repr(value)


def unknown_queue(name: str, known: Sequence[str]) -> str:
    """The message for a reference to a queue that `queues` does not define."""
    return f"queue {name!r} is not defined in queues ({', '.join(known)})"


def unknown_policy(name: str, known: Mapping[str, RetryPolicy]) -> str:
    """The message for a reference to a retry policy that `retry_policies` does not define."""
    return f"retry policy {name!r} is not defined in retry_policies ({', '.join(known)})"


class FileReader:
    """Validates the parsed file; every error names the file, the line and the key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, line: int, path: str, message: str) -> ConfigError:
        """A ConfigError pointing at `line` of the file and the key `path` ("" for none)."""
        where = f"config file {self.file} line {line}"
        return ConfigError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    # structure

    def mapping(self, value: Any, line: int, path: str, what: str = "a mapping") -> LineMap:
        """`value` itself, which must be a mapping (`what` describes the expected one)."""
        if not isinstance(value, LineMap):
            raise self.error(line, path, f"must be {what}, got {kind(value)}")
        return value

    def sequence(self, value: Any, line: int, path: str, what: str = "a list") -> LineSeq:
        """`value` itself, which must be a list (`what` describes the expected one)."""
        if not isinstance(value, LineSeq):
            raise self.error(line, path, f"must be {what}, got {kind(value)}")
        return value

    def keys(
        self, m: LineMap, path: str, allowed: Sequence[str], required: Sequence[str] = ()
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

    # typed values; each reads m[key] at m.key_lines[key] and returns the default when absent

    def integer(
        self, m: LineMap, key: str, path: str, default: int, low: int = 0, high: int | None = None
    ) -> int:
        """An integer in [low, high] (high None: no upper bound)."""
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
                m.key_lines[key], join_path(path, key), f"{kind(value)} must be an integer {bounds}"
            )
        return value

    def number(
        self,
        m: LineMap,
        key: Any,
        path: str,
        default: float,
        *,
        positive: bool = False,
        high: float | None = None,
    ) -> float:
        """A finite number >= 0 (> 0 when `positive`), at most `high` when given."""
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
                m.key_lines[key], join_path(path, key), f"{kind(value)} must be a number {bounds}"
            )
        return float(value)

    def boolean(self, m: LineMap, key: str, path: str, default: bool) -> bool:
        """A YAML true or false (not a string or number)."""
        if key not in m:
            return default
        value = m[key]
        if not isinstance(value, bool):
            raise self.error(
                m.key_lines[key], join_path(path, key), f"{kind(value)} must be true or false"
            )
        return value

    def text(self, m: LineMap, key: str, path: str, default: str, *, empty_ok: bool = True) -> str:
        """A string, non-empty unless `empty_ok`."""
        if key not in m:
            return default
        value = m[key]
        if not isinstance(value, str) or (not empty_ok and not value):
            need = "a non-empty string" if not empty_ok else "a string"
            raise self.error(
                m.key_lines[key], join_path(path, key), f"{kind(value)} must be {need}"
            )
        return value

    def choice(self, m: LineMap, key: str, path: str, options: Sequence[str]) -> str | None:
        """One of `options`, or None when the key is absent."""
        if key not in m:
            return None
        value = m[key]
        if value not in options:
            raise self.error(
                m.key_lines[key],
                join_path(path, key),
                f"{kind(value)} must be one of {', '.join(options)}",
            )
        return str(value)

    def queue_ref(self, m: LineMap, key: str, path: str, known: Sequence[str]) -> str:
        """The name of a queue among `known` (required: the caller checks the key is present)."""
        name = self.text(m, key, path, "", empty_ok=False)
        if name not in known:
            raise self.error(m.key_lines[key], join_path(path, key), unknown_queue(name, known))
        return name

    def policy_ref(self, m: LineMap, key: str, path: str, known: Mapping[str, RetryPolicy]) -> str:
        """The name of a retry policy among `known` (required: the caller checks it is present)."""
        name = self.text(m, key, path, "", empty_ok=False)
        if name not in known:
            raise self.error(m.key_lines[key], join_path(path, key), unknown_policy(name, known))
        return name


def read_yaml(path: str) -> tuple[FileReader, Any]:
    """Read and parse the file at `path`; return its reader and the parsed top level.

    The top level is None for an empty file, else whatever YAML gave (the caller checks it is a
    mapping). Unreadable files and YAML syntax errors raise ConfigError with the line.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    reader = FileReader(path)
    try:
        return reader, yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except _MarkedError as exc:
        raise reader.error(exc.line, "", exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise reader.error(line, "", f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
