"""Proof that secrets never reach a log: record every log line a test module writes, then look
for the secrets it used.

`SecretWatch` attaches a handler to the root logger at DEBUG (and lowers the `switchyard`
loggers to DEBUG, so lines that are normally filtered out are written and searched too) for the
whole module, keeping each formatted line with its exception text. Log files of processes the
module started (scheduler subprocesses) are added with `add_file`. `leaks()` lists every line
that contains one of the registered secrets; a module asserts it is empty at its end.
"""

from __future__ import annotations

import logging
from pathlib import Path

SUITE_SECRETS: set[str] = set()
"""Every secret any test registered (`register`); tests/conftest.py searches every log line the
whole suite wrote for them when the session ends."""


def register(value: str) -> str:
    """Register `value` as a secret for the suite-wide search; returns it."""
    SUITE_SECRETS.add(value)
    return value


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that does not format is still searched by its raw parts
            self.lines.append(f"{record.msg!r} {record.args!r}")


class SecretWatch:
    """Every log line of a module, and the secrets none of them may contain."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self._files: list[Path] = []
        self._recorder = _Recorder()
        self._levels: dict[str, int] = {}

    def start(self) -> SecretWatch:
        logging.getLogger().addHandler(self._recorder)
        for name in ("switchyard", "grpc"):
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.DEBUG)
        return self

    def stop(self) -> None:
        logging.getLogger().removeHandler(self._recorder)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)

    def secret(self, value: str) -> str:
        """Register `value` as a secret (returned, so a test can write `token = watch.secret(...)`)."""
        self.secrets.add(value)
        return register(value)

    def add_file(self, path: Path) -> None:
        """Search this log file too (read when `leaks` runs)."""
        self._files.append(Path(path))

    def lines(self) -> list[str]:
        """Every line written so far: recorded log records and the added files."""
        lines = list(self._recorder.lines)
        for path in self._files:
            if path.exists():
                lines.extend(path.read_text(errors="replace").splitlines())
        return lines

    def leaks(self) -> list[str]:
        """The lines that contain a registered secret."""
        return [line for line in self.lines() if any(secret in line for secret in self.secrets)]
